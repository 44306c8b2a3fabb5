package aggregate

import (
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// Ensure that a snapshot expired at a cutoff is what the aggregator it came from holds after
// expiring at the same cutoff: the same edges, workloads and DNS answers are left.
func TestSnapshotExpiredMatchesAggregator(t *testing.T) {
	paths, err := filepath.Glob("../../testdata/flows/*.jsonl")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no recordings: %v", err)
	}
	random := func() []*flows.Event {
		r := rand.New(rand.NewPCG(19, 2))
		var evs []*flows.Event
		for i := range 3000 {
			evs = append(evs, churnyFlow(r, i))
		}
		return evs
	}
	cases := []struct {
		name string
		cfg  Config
		evs  func() []*flows.Event // new events for each aggregator: Add takes them over
	}{
		{"recordings", Config{}, func() []*flows.Event { return readAll(t, paths...) }},
		{"random", Config{MaxPorts: 4, MaxDNSNames: 2, MaxHTTPSamples: 2}, random},
	}
	for _, c := range cases {
		build := func() *Aggregator {
			a := newAgg(t, c.cfg)
			for _, ev := range c.evs() {
				a.Add(ev)
			}
			return a
		}
		full := build().Snapshot()
		span := full.To.Sub(full.From)
		for _, f := range []float64{-0.1, 0, 0.3, 0.5, 0.9, 1.1} {
			cutoff := full.From.Add(time.Duration(f * float64(span)))
			a := build()
			n := a.Expire(cutoff)
			want := a.Snapshot()
			got := full.Expired(cutoff)
			if !reflect.DeepEqual(normalized(got), normalized(want)) {
				t.Logf("%s at %.1f of its span:", c.name, f)
				sameSnapshot(t, got, want)
				t.Fatalf("%s at %.1f of its span: DNS differs: got %v (ages %v), want %v (ages %v)", c.name, f, got.DNS, got.dnsLast, want.DNS, want.dnsLast)
			}
			// Expired again at a later cutoff: what the earlier one left without edges goes too.
			if f > 0 {
				mid := full.From.Add(time.Duration(f / 2 * float64(span)))
				if twice := full.Expired(mid).Expired(cutoff); !reflect.DeepEqual(normalized(twice), normalized(want)) {
					t.Logf("%s at %.1f of its span, after %.2f:", c.name, f, f/2)
					sameSnapshot(t, twice, want)
				}
			}
			if (got == full) != (n == 0 && reflect.DeepEqual(normalized(want), normalized(full))) {
				t.Errorf("%s at %.1f of its span: %d edges expired, but Expired returned the snapshot itself: %v", c.name, f, n, got == full)
			}
			if f > 0 && f < 1 && (n == 0 || got.EdgeCount() == 0) {
				t.Errorf("%s at %.1f of its span: %d edges expired, %d left: the cutoff tests nothing", c.name, f, n, got.EdgeCount())
			}
		}
		if full.EdgeCount() == 0 {
			t.Fatalf("%s: no edge", c.name)
		}
	}

	// A workload that outlived its edges (expired by an earlier cutoff, the flows that kept
	// it seen dropped by a cap) goes once it is not seen since either.
	seen := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	alone := &Snapshot{Workloads: []Workload{{Key: WorkloadKey{Namespace: "shop"}, LastSeen: seen}}, Edges: map[string][]Edge{}}
	if got := alone.Expired(seen); len(got.Workloads) != 1 {
		t.Errorf("a workload without edges seen at the cutoff was expired")
	}
	if got := alone.Expired(seen.Add(time.Second)); len(got.Workloads) != 0 {
		t.Errorf("a workload without edges not seen since the cutoff was kept")
	}
}
