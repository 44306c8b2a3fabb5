package aggregate

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/recommender/recommender/internal/flowgen/flood"
)

// BenchmarkLabelFlood ingests the flood (flood.LabelFlood) into a fresh store with the
// default caps and reads the result back as a sync does (Store.Snapshot). It reports peak RSS,
// store size, the ingest and snapshot times, and the workloads stored; it fails if the late
// workload was not stored or the churning label not found. 1M flows with BENCH_FULL=1, 200k otherwise (the
// sync's time on the same flood: pkg/synth BenchmarkLabelFloodSync):
//
//	BENCH_FULL=1 go test ./pkg/aggregate -run '^$' -bench BenchmarkLabelFlood -benchtime 1x
func BenchmarkLabelFlood(b *testing.B) {
	n := 200_000
	if full() {
		n = 1_000_000
	}
	var fp footprint
	var size int64
	var ingest, load time.Duration
	var snap *Snapshot
	for b.Loop() {
		b.StopTimer()
		path := filepath.Join(b.TempDir(), "store.db")
		s, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		in, err := NewIngester(s, newAgg(b, Config{}), IngesterConfig{}, nil)
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
		snap, err = s.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		load = time.Since(start)
		b.StopTimer()
		fp = measure(b)
		runtime.KeepAlive(in)
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
	if _, _, ok := snap.Workload("shop/k8s:app=late"); !ok || len(snap.Churning) != 1 {
		b.Fatalf("late workload stored: %v; churning labels %v, want one", ok, snap.Churning)
	}
	const mib = 1 << 20
	b.ReportMetric(float64(fp.peakRSS)/mib, "peak-rss-MiB")
	b.ReportMetric(float64(size)/mib, "db-MiB")
	b.ReportMetric(ingest.Seconds(), "ingest-s")
	b.ReportMetric(load.Seconds(), "snapshot-s")
	b.ReportMetric(float64(len(snap.Workloads)), "workloads")
	b.ReportMetric(float64(snap.EdgeCount()), "edges")
	b.ReportMetric(float64(snap.Overflow), "overflow")
}

// BenchmarkOpenCheck opens a store of 200k edges read-only: the cost of the integrity check
// every command pays at start (checkIntegrity: walk of every record plus bbolt's tx.Check
// below fullCheckLimit). It reports the file size.
func BenchmarkOpenCheck(b *testing.B) {
	path := filepath.Join(b.TempDir(), "store.db")
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	in, err := NewIngester(s, newAgg(b, Config{}), IngesterConfig{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := in.Run(b.Context(), newSynthetic(500, 200, 400_000)); err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s, err := Open(path, Options{ReadOnly: true})
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
	b.ReportMetric(float64(st.Size())/(1<<20), "db-MiB")
}
