package aggregate

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// floodSource is the label flood of issue 15.6: every other flow comes from one Deployment
// with a new version label each time; the rest is ordinary traffic over 100 x 50 workloads.
// After n flows one new, legitimate workload sends one flow.
type floodSource struct {
	n, i int
	bg   *synthetic
}

func (s *floodSource) Recv(ctx context.Context) (*flows.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch {
	case s.i < s.n && s.i%2 == 0:
		s.i++
		ev := floodEvent(s.i)
		ev.Time = at(s.i / 1000)
		return ev, nil
	case s.i < s.n:
		s.i++
		ev := s.bg.event(s.i)
		ev.Time = at(s.i / 1000)
		return ev, nil
	case s.i == s.n:
		s.i++
		late := workload("shop", "k8s:app=late")
		late.Workload = "Deployment/late"
		return flow(s.n/1000+1, late, api, flows.ProtoTCP, 8443), nil
	}
	return nil, io.EOF
}

// BenchmarkLabelFlood ingests the flood into a fresh store with the default caps and reads
// the result back as a sync does (Store.Snapshot). It reports peak RSS, store size, the
// ingest and snapshot times, and the workloads stored; it fails if the late workload was not
// stored or the churning label not found. 1M flows with BENCH_FULL=1, 200k otherwise:
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
		if err := in.Run(b.Context(), &floodSource{n: n, bg: newSynthetic(100, 50, n)}); err != nil {
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
		size = st.Size()
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
