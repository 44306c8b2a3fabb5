package main

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// results holds what the raw benchmark output reports.
type results struct {
	// values maps a benchmark (without the -GOMAXPROCS suffix) and a unit to its values, one
	// per run.
	values map[string]map[string][]float64
	// skips maps a skipped benchmark to its skip message.
	skips map[string]string
	// env holds the goos, goarch and cpu lines, first seen first.
	env []string
}

func newResults() *results {
	return &results{values: map[string]map[string][]float64{}, skips: map[string]string{}}
}

var (
	procsSuffix = regexp.MustCompile(`-\d+$`)
	// testLocation is the "file_test.go:123: " prefix of a logged message.
	testLocation = regexp.MustCompile(`^\S+\.go:\d+: `)
)

// parse reads `go test -bench` output: result lines, skip notices and the environment lines.
func (r *results) parse(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(nil, 1<<20)
	skipped := ""
	for sc.Scan() {
		line := sc.Text()
		if skipped != "" && strings.HasPrefix(line, " ") {
			if r.skips[skipped] == "" {
				r.skips[skipped] = testLocation.ReplaceAllString(strings.TrimSpace(line), "")
			}
			continue
		}
		skipped = ""
		switch {
		case strings.HasPrefix(line, "--- SKIP: "):
			skipped = strings.Fields(strings.TrimPrefix(line, "--- SKIP: "))[0]
			r.skips[skipped] = ""
		case strings.HasPrefix(line, "goos: "), strings.HasPrefix(line, "goarch: "), strings.HasPrefix(line, "cpu: "):
			if !slices.Contains(r.env, line) {
				r.env = append(r.env, line)
			}
		case strings.HasPrefix(line, "Benchmark"):
			if err := r.parseResult(line); err != nil {
				return err
			}
		}
	}
	return sc.Err()
}

// parseResult reads "BenchmarkX/y-2  N  v1 unit1  v2 unit2 ...". A benchmark's name alone on
// a line (its result follows its logs) carries nothing and is skipped.
func (r *results) parseResult(line string) error {
	f := strings.Fields(line)
	if len(f) < 4 {
		return nil
	}
	if _, err := strconv.Atoi(f[1]); err != nil {
		return nil
	}
	name := procsSuffix.ReplaceAllString(f[0], "")
	if r.values[name] == nil {
		r.values[name] = map[string][]float64{}
	}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return fmt.Errorf("%s: value %q: %w", name, f[i], err)
		}
		r.values[name][f[i+1]] = append(r.values[name][f[i+1]], v)
	}
	return nil
}

// get returns the median of a benchmark's values in unit.
func (r *results) get(name, unit string) (float64, bool) {
	vs := slices.Clone(r.values[name][unit])
	if len(vs) == 0 {
		return 0, false
	}
	slices.Sort(vs)
	if n := len(vs); n%2 == 0 {
		return (vs[n/2-1] + vs[n/2]) / 2, true
	}
	return vs[len(vs)/2], true
}

// sized returns the N of the benchmarks named prefix+N or prefix+N/sub, ordered by N.
func (r *results) sized(prefix string) []int {
	var ns []int
	for name := range r.values {
		if s, ok := strings.CutPrefix(name, prefix); ok {
			s, _, _ = strings.Cut(s, "/")
			if n, err := strconv.Atoi(s); err == nil {
				ns = append(ns, n)
			}
		}
	}
	slices.Sort(ns)
	return slices.Compact(ns)
}

// missing says why a benchmark has no figure.
func (r *results) missing(name string) string {
	if msg, ok := r.skips[name]; ok {
		return "skipped: " + msg
	}
	return "not measured (not in the raw output)"
}

type row struct{ area, what, result, compare string }

// check marks a figure against its target.
func check(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

// count prints 1000 as 1k and 10000000 as 10M.
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// rate prints a per-second figure with a k or M suffix.
func rate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// ingestTarget is the throughput the ingest and run paths must reach, as a multiple of the
// reference consumer that receives and fully decodes the same stream (issue 19).
const ingestTarget = 1.5

func ingestRows(r *results) []row {
	const bench = "BenchmarkDaemonIngest/"
	ref, haveRef := r.get(bench+"reference", "flows/s")
	hub, haveHub := r.get(bench+"hubble", "flows/s")
	var rows []row
	for _, c := range []struct{ sub, what string }{
		{"reference", "reference: receive + decode (replay.Drain)"},
		{"ingest", "ingest: relay source -> aggregate -> store"},
		{"daemon", "daemon: run (store + audit tap + syncs)"},
		{"hubble", "hubble observe --all -o jsonpb > /dev/null"},
	} {
		v, ok := r.get(bench+c.sub, "flows/s")
		if !ok {
			rows = append(rows, row{"ingest", c.what, r.missing(bench + c.sub), ""})
			continue
		}
		var cmp []string
		if haveRef && c.sub != "reference" {
			s := fmt.Sprintf("%.2fx reference", v/ref)
			if c.sub == "daemon" || c.sub == "ingest" {
				// Issue 19: the relay source decodes only what it reads.
				s += fmt.Sprintf(" (target >= %.1fx: %s)", ingestTarget, check(v >= ingestTarget*ref))
			}
			cmp = append(cmp, s)
		}
		if d, ok := r.get(bench+c.sub, "decode-%"); ok {
			s := fmt.Sprintf("decode %.0f%% of CPU", d)
			if dr, ok := r.get(bench+c.sub, "decode-recv-%"); ok {
				s += fmt.Sprintf(", %.0f%% of its receive loop", dr)
			}
			cmp = append(cmp, s)
		}
		if c.sub == "daemon" {
			if haveHub {
				cmp = append(cmp, fmt.Sprintf("%.2fx hubble (target > 1x: %s)", v/hub, check(v > hub)))
			} else {
				cmp = append(cmp, "hubble not measured")
			}
		}
		rows = append(rows, row{"ingest", c.what, rate(v) + " flows/s", strings.Join(cmp, "; ")})
	}
	return rows
}

// flowRate is a benchmark's flows/s; raw outputs from before issue 19.2 call it events/s.
func (r *results) flowRate(name string) float64 {
	if v, ok := r.get(name, "flows/s"); ok {
		return v
	}
	v, _ := r.get(name, "events/s")
	return v
}

// edgesTarget is how much slower ingest may be over the most edges than over the fewest
// (issue 19.2: within 1.5x from 1k to 1M edges).
const edgesTarget = 1.5

func memoryRows(r *results) []row {
	var rows []row
	const flowsBench = "BenchmarkScaleFlows/events="
	ns := r.sized(flowsBench)
	for i, n := range ns {
		name := flowsBench + strconv.Itoa(n)
		heap, _ := r.get(name, "heap-MiB")
		rss, _ := r.get(name, "rss-MiB")
		peak, _ := r.get(name, "peak-rss-MiB")
		db, _ := r.get(name, "db-MiB")
		ev := r.flowRate(name)
		res := fmt.Sprintf("heap %.1f MiB, RSS %.1f MiB (peak %.1f), DB %.1f MiB; %s flows/s", heap, rss, peak, db, rate(ev))
		var compare string
		if i > 0 {
			first := flowsBench + strconv.Itoa(ns[0])
			h0, _ := r.get(first, "heap-MiB")
			r0, _ := r.get(first, "rss-MiB")
			d0, _ := r.get(first, "db-MiB")
			compare = fmt.Sprintf("heap %.2fx, RSS %.2fx, DB %.2fx of %s flows (target: flat)", heap/h0, rss/r0, db/d0, count(ns[0]))
		}
		rows = append(rows, row{"memory", count(n) + " flows over 10k edges", res, compare})
	}
	if len(ns) == 0 {
		rows = append(rows, row{"memory", "flows over the same edges", r.missing(flowsBench + "1000000"), ""})
	}

	const edgesBench = "BenchmarkScaleEdges/edges="
	es := r.sized(edgesBench)
	for i, e := range es {
		name := edgesBench + strconv.Itoa(e)
		heap, _ := r.get(name, "heap-B/edge")
		db, _ := r.get(name, "db-B/edge")
		rss, _ := r.get(name, "rss-MiB")
		ev := r.flowRate(name)
		res := fmt.Sprintf("heap %.0f B/edge, DB %.0f B/edge, RSS %.1f MiB; %s flows/s", heap, db, rss, rate(ev))
		var compare string
		if i > 0 {
			first := edgesBench + strconv.Itoa(es[0])
			h0, _ := r.get(first, "heap-B/edge")
			d0, _ := r.get(first, "db-B/edge")
			compare = fmt.Sprintf("per edge: heap %.2fx, DB %.2fx of %s edges (target: linear, ~1x)", heap/h0, db/d0, count(es[0]))
		}
		rows = append(rows, row{"memory", count(e) + " edges (1M flows)", res, compare})
	}
	if len(es) == 0 {
		rows = append(rows, row{"memory", "edges", r.missing(edgesBench + "1000"), ""})
	}
	return append(rows, edgesRateRow(r, edgesBench, es))
}

// edgesRateRow compares the ingest rates over the fewest and the most edges: the fastest of all
// sizes over the slowest must stay within edgesTarget. It needs the 1k and the 1M case.
func edgesRateRow(r *results, bench string, es []int) row {
	const what = "ingest rate from 1k to 1M edges"
	if !slices.Contains(es, 1000) || !slices.Contains(es, 1_000_000) {
		missing := 1000
		if slices.Contains(es, 1000) {
			missing = 1_000_000
		}
		return row{"memory", what, r.missing(bench + strconv.Itoa(missing)), ""}
	}
	at := func(e int) float64 { return r.flowRate(bench + strconv.Itoa(e)) }
	fast, slow := es[0], es[0]
	for _, e := range es {
		if at(e) > at(fast) {
			fast = e
		}
		if at(e) < at(slow) {
			slow = e
		}
	}
	vf, vs := at(fast), at(slow)
	if vs <= 0 {
		return row{"memory", what, "no flows/s measured", ""}
	}
	ratio := vf / vs
	return row{"memory", what, fmt.Sprintf("%.2fx slowest to fastest", ratio),
		fmt.Sprintf("%s flows/s at %s edges, %s at %s (target <= %.1fx: %s)",
			rate(vf), count(fast), rate(vs), count(slow), edgesTarget, check(ratio <= edgesTarget))}
}

func synthesisRows(r *results) []row {
	const bench = "BenchmarkSynthesize/workloads="
	var rows []row
	for _, w := range r.sized(bench) {
		name := bench + strconv.Itoa(w)
		s, _ := r.get(name, "s/op")
		p, _ := r.get(name, "policies")
		e, _ := r.get(name, "edges")
		rows = append(rows, row{"synthesis", count(w) + " workloads", fmt.Sprintf("%.2f s", s), fmt.Sprintf("%.0f policies from %.0f edges", p, e)})
	}
	if len(rows) == 0 {
		rows = append(rows, row{"synthesis", "workloads", r.missing(bench + "1000"), ""})
	}
	return rows
}

func evaluationRows(r *results) []row {
	const bench = "BenchmarkEvaluate/policies="
	var rows []row
	for _, p := range r.sized(bench) {
		v, _ := r.get(bench+strconv.Itoa(p), "flows/s")
		rows = append(rows, row{"evaluation", count(p) + " policies loaded", rate(v) + " flows/s", ""})
	}
	if len(rows) == 0 {
		rows = append(rows, row{"evaluation", "policies loaded", r.missing(bench + "1000"), ""})
	}
	return rows
}

func latencyRows(r *results) []row {
	const name = "BenchmarkDaemonLatency/would-deny"
	p50, ok50 := r.get(name, "p50-ms")
	p99, ok99 := r.get(name, "p99-ms")
	what := "would-be-denied flow: relay -> metric"
	if !ok50 || !ok99 {
		return []row{{"latency", what, r.missing(name), ""}}
	}
	return []row{{"latency", what, fmt.Sprintf("p50 %.3f ms, p99 %.3f ms", p50, p99), ""}}
}

// render prints the table.
func render(w io.Writer, r *results) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AREA\tCASE\tRESULT\tCOMPARED")
	var rows []row
	for _, f := range []func(*results) []row{ingestRows, nodeRows, summaryRows, memoryRows, synthesisRows, evaluationRows, latencyRows} {
		rows = append(rows, f(r)...)
	}
	for _, rw := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", rw.area, rw.what, rw.result, rw.compare)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The padding of an empty last column would end lines in spaces.
	for line := range strings.Lines(buf.String()) {
		if _, err := io.WriteString(w, strings.TrimRight(line, " \n")+"\n"); err != nil {
			return err
		}
	}
	runs := 0
	for _, units := range r.values {
		for _, vs := range units {
			runs = max(runs, len(vs))
		}
	}
	if runs == 0 {
		return nil
	}
	env := slices.SortedFunc(slices.Values(r.env), func(a, b string) int { return cmp.Compare(a, b) })
	_, err := fmt.Fprintf(w, "\n%s; each figure is the median of its benchmark's runs (at most %d)\n", strings.Join(env, ", "), runs)
	return err
}
