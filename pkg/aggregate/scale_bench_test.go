package aggregate

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The scaling curves of issue 10. Run each case in its own process (bench.sh does) so that
// the peak RSS belongs to that case alone:
//
//	go test ./pkg/aggregate -run '^$' -bench 'BenchmarkScaleEdges/edges=100000$' -benchtime 1x

// scaleBatch overrides IngesterConfig.BatchSize in the scale benchmarks, to measure what a
// larger --batch-size buys over many edges; make bench leaves it at the default.
var scaleBatch = flag.Int("scale.batch-size", 0, "BatchSize of the scale benchmarks (0: DefaultBatchSize)")

// footprint is the memory of the process after an ingest, with the store still open.
type footprint struct {
	heap    uint64 // live heap after a GC
	rss     uint64 // resident set after returning free memory to the OS (heap, runtime, mapped store pages)
	peakRSS uint64 // the process's high-water mark
}

// cpuTime is the CPU time (user and system) the process used so far: over a shared machine's
// varying load it moves less than the wall time does.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func measure(b *testing.B) footprint {
	b.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f := footprint{heap: ms.HeapAlloc}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return f // not Linux: heap only
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseUint(string(fields[1]), 10, 64)
		if err != nil {
			continue
		}
		switch string(fields[0]) {
		case "VmRSS:":
			f.rss = kb << 10
		case "VmHWM:":
			f.peakRSS = kb << 10
		}
	}
	return f
}

// ingestScale ingests n synthetic events over clients*servers connections (2*clients*servers
// edges) into a fresh store with the daemon's default batching, and reports throughput, CPU
// per flow, the footprint with the store open, and the disk space of the store file
// (diskUsage). perEdge adds the heap growth and disk space per edge. The edge caps are raised
// to hold every edge: the 1M-edge case is above the default MaxEdges.
func ingestScale(b *testing.B, clients, servers, n int, perEdge bool) {
	var before, after footprint
	var size int64
	var edges int
	var commits uint64
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		before = measure(b)
		path := filepath.Join(b.TempDir(), "store.db")
		s, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		a := newAgg(b, Config{MaxEdges: max(2*clients*servers, DefaultConfig().MaxEdges)})
		in, err := NewIngester(s, a, IngesterConfig{BatchSize: *scaleBatch}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := cpuTime()
		if err := in.Run(b.Context(), newSynthetic(clients, servers, n)); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - start
		b.StopTimer()
		after = measure(b)
		_, edges = a.Len()
		commits = in.Stats().Commits
		runtime.KeepAlive(a)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		size = diskUsage(st)
		b.StartTimer()
	}
	if want := 2 * clients * servers; edges != want {
		b.Fatalf("edges = %d, want %d", edges, want)
	}
	const mib = 1 << 20
	// Every synthetic event is a flow.
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	b.ReportMetric(float64(edges), "edges")
	b.ReportMetric(float64(commits), "commits")
	// CPU per flow of the timed part, all goroutines (the source, aggregation, commits, GC).
	b.ReportMetric(float64(cpu.Nanoseconds())/(float64(n)*float64(b.N)), "cpu-ns/flow")
	b.ReportMetric(float64(after.heap)/mib, "heap-MiB")
	b.ReportMetric(float64(after.rss)/mib, "rss-MiB")
	b.ReportMetric(float64(after.peakRSS)/mib, "peak-rss-MiB")
	b.ReportMetric(float64(size)/mib, "db-MiB")
	if perEdge {
		grown := int64(after.heap) - int64(before.heap)
		b.ReportMetric(float64(grown)/float64(edges), "heap-B/edge")
		b.ReportMetric(float64(size)/float64(edges), "db-B/edge")
	}
}

// diskUsage is the disk space a file takes: its allocated blocks where the system says (bbolt
// grows the file ahead of its data, and the tail it never wrote takes none), else its size.
func diskUsage(st os.FileInfo) int64 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return sys.Blocks * 512
	}
	return st.Size()
}

// full reports whether the long cases were asked for (BENCH_FULL=1, as `make bench` passes it).
func full() bool { return os.Getenv("BENCH_FULL") != "" }

// BenchmarkScaleFlows ingests 1M and 10M events (3M without BENCH_FULL) over the same 10k
// edges: heap, RSS and store size must stay flat while the flow count grows.
func BenchmarkScaleFlows(b *testing.B) {
	sizes := []int{1_000_000, 3_000_000}
	if full() {
		sizes = []int{1_000_000, 10_000_000}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) { ingestScale(b, 100, 50, n, false) })
	}
}

// BenchmarkScaleEdges ingests 1M flows over 1k, 10k, 100k and 1M edges: heap and store size
// must grow linearly with the edges, and the ingest rate must not fall off a cliff as they grow
// (issue 19.2: within 1.5x from 1k to 1M edges). flows/s, heap-B/edge and db-B/edge are
// reported. At 1M edges every pair of the synthetic stream is seen twice, so half of the flows
// create their two edges.
func BenchmarkScaleEdges(b *testing.B) {
	for _, c := range []struct{ clients, servers int }{{25, 20}, {100, 50}, {250, 200}, {1000, 500}} {
		b.Run(fmt.Sprintf("edges=%d", 2*c.clients*c.servers), func(b *testing.B) {
			ingestScale(b, c.clients, c.servers, 1_000_000, true)
		})
	}
}
