package synth

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/recommender/recommender/internal/flowgen/flood"
	"github.com/recommender/recommender/pkg/aggregate"
)

// peakRSS is the process's resident high-water mark (VmHWM), 0 where /proc is missing.
func peakRSS(b *testing.B) uint64 {
	b.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if f := bytes.Fields(sc.Bytes()); len(f) >= 2 && string(f[0]) == "VmHWM:" {
			kb, err := strconv.ParseUint(string(f[1]), 10, 64)
			if err != nil {
				b.Fatalf("VmHWM %q: %v", f[1], err)
			}
			return kb << 10
		}
	}
	return 0
}

// BenchmarkLabelFloodSync is a daemon's sync after the label flood of issue 15.6
// (flood.LabelFlood, the flood pkg/aggregate BenchmarkLabelFlood ingests): ingest into a
// fresh store with the default caps, read it back (Store.Snapshot), then synthesize every
// policy (SynthesizeContext, default config). It reports the three times, peak RSS, store
// size, workloads and policies; it fails unless the late workload and the flooded one get a
// policy. 1M flows with BENCH_FULL=1, 200k otherwise; run it in its own process so the peak
// RSS is its own:
//
//	BENCH_FULL=1 go test ./pkg/synth -run '^$' -bench BenchmarkLabelFloodSync -benchtime 1x
func BenchmarkLabelFloodSync(b *testing.B) {
	n := 200_000
	if os.Getenv("BENCH_FULL") != "" {
		n = 1_000_000
	}
	var size int64
	var ingest, load, synth time.Duration
	var snap *aggregate.Snapshot
	var res *Result
	for b.Loop() {
		b.StopTimer()
		path := filepath.Join(b.TempDir(), "store.db")
		s, err := aggregate.Open(path, aggregate.Options{})
		if err != nil {
			b.Fatal(err)
		}
		agg, err := aggregate.NewAggregator(aggregate.Config{}, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		in, err := aggregate.NewIngester(s, agg, aggregate.IngesterConfig{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if err := in.Run(b.Context(), flood.NewLabelFlood(n)); err != nil {
			b.Fatal(err)
		}
		ingest = time.Since(start)
		start = time.Now()
		if snap, err = s.Snapshot(); err != nil {
			b.Fatal(err)
		}
		load = time.Since(start)
		start = time.Now()
		if res, err = SynthesizeContext(b.Context(), snap, DefaultConfig()); err != nil {
			b.Fatal(err)
		}
		synth = time.Since(start)
		b.StopTimer()
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		size = st.Size()
		b.StartTimer()
	}
	proposed := map[string]bool{}
	for _, p := range res.Proposals {
		proposed[p.Workload.String()] = true
	}
	for _, w := range []string{"shop/k8s:app=late", "shop/k8s:app=flood"} {
		if !proposed[w] {
			b.Errorf("no policy for %s (%d proposals, %d skipped)", w, len(res.Proposals), len(res.Skipped))
		}
	}
	const mib = 1 << 20
	b.ReportMetric(float64(peakRSS(b))/mib, "peak-rss-MiB")
	b.ReportMetric(float64(size)/mib, "db-MiB")
	b.ReportMetric(ingest.Seconds(), "ingest-s")
	b.ReportMetric(load.Seconds(), "snapshot-s")
	b.ReportMetric(synth.Seconds(), "synth-s")
	b.ReportMetric(float64(len(snap.Workloads)), "workloads")
	b.ReportMetric(float64(len(res.Proposals)), "policies")
}
