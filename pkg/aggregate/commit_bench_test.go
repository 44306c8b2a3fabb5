package aggregate

import (
	"path/filepath"
	"testing"
)

// BenchmarkCommitEdges measures Store.Commit alone over the batches of the 1M-edge case of
// BenchmarkScaleEdges (1M flows over 1M edges, a batch every 60,000 flows, about what the
// ingester hands over): the journal appends and the folds, with their page writes and fsyncs.
// The batches are built before the timer starts, so the aggregator's cost is left out.
func BenchmarkCommitEdges(b *testing.B) {
	const flowsPerBatch = 60_000
	gen := newSynthetic(1000, 500, 1_000_000)
	a := newAgg(b, Config{MaxEdges: 1_000_000})
	var batches []*Batch
	entries := 0
	for i := range gen.n {
		a.Add(gen.event(i))
		if (i+1)%flowsPerBatch == 0 || i+1 == gen.n {
			bt := a.TakeBatch()
			bt.encode()
			entries += bt.edges.len()
			batches = append(batches, bt)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		s, err := Open(filepath.Join(b.TempDir(), "store.db"), Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for _, bt := range batches {
			if err := s.Commit(bt, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*entries), "ns/entry")
}

// BenchmarkFoldQuiet measures the fold of a quiet stream's journal, 31 batches of 50 flows
// spread over the store, into a tree of 250k edges: a fold writes the whole tree anew,
// whatever the journal holds (issue 19.2).
func BenchmarkFoldQuiet(b *testing.B) {
	const clients, servers = 500, 250
	gen := newSynthetic(clients, servers, 0)
	s := openStore(b, "", Options{NoSync: true})
	a := newAgg(b, Config{MaxEdges: 2 * clients * servers})
	for i := range clients * servers {
		a.Add(gen.event(i))
	}
	if err := s.Commit(a.TakeBatch(), nil); err != nil {
		b.Fatal(err)
	}
	fold(b, s)
	next := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for range foldBatches - 1 {
			for range 50 {
				a.Add(gen.event(next * 7919 % (clients * servers)))
				next++
			}
			if err := s.Commit(a.TakeBatch(), nil); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if err := s.update(foldJournal); err != nil {
			b.Fatal(err)
		}
	}
}
