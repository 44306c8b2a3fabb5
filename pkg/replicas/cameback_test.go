package replicas

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// portsSnapshot is a summary of n flows from web to the entity world on each of ports.
func portsSnapshot(n uint64, ports ...uint16) *aggregate.Snapshot {
	w := aggregate.WorkloadKey{Namespace: "shop", Labels: flows.NewLabels("k8s:app=web")}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s := &aggregate.Snapshot{Flows: n, From: t0, To: t0.Add(time.Minute), Edges: map[string][]aggregate.Edge{},
		Workloads: []aggregate.Workload{{Key: w, FirstSeen: t0, LastSeen: t0.Add(time.Minute), Flows: n}}}
	for _, p := range ports {
		s.Edges[w.String()] = append(s.Edges[w.String()], aggregate.Edge{EdgeKey: aggregate.EdgeKey{Workload: w,
			Direction: flows.DirectionEgress, Peer: aggregate.Peer{Kind: aggregate.PeerEntity, Entity: "world"}, Proto: flows.ProtoTCP, Port: p},
			EndPort: p, Counts: aggregate.Counts{Forwarded: 1}, FirstSeen: t0, LastSeen: t0.Add(time.Minute)})
	}
	return s
}

// later is snap reaching d further: its newest flow d later.
func later(snap *aggregate.Snapshot, d time.Duration) *aggregate.Snapshot {
	snap.To = snap.To.Add(d)
	return snap
}

// heldPorts is every port of the edges s merges of other replicas.
func heldPorts(s *Set) []uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint16
	for _, p := range append(slices.Collect(mapValues(s.cache)), slices.Collect(mapValues(s.retired))...) {
		for _, es := range p.snap.Edges {
			for _, e := range es {
				if !slices.Contains(out, e.Port) {
					out = append(out, e.Port)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

func mapValues(m map[int]*pulled) func(func(*pulled) bool) {
	return func(yield func(*pulled) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// Ensure a replica coming back to a store it was retired from (A, B, then A) has A's older
// state dropped only when A holds every edge of it. A store restored from a backup taken
// before the loss lacks what A learned since: that state stays retired beside it, counted
// twice, so no edge is lost.
func TestStoreComingBackFromABackup(t *testing.T) {
	const a, b = "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"
	for _, c := range []struct {
		name       string
		back       *aggregate.Snapshot // what A serves when it comes back
		wantFlows  uint64
		wantCovers []string
	}{
		{"the same store, later", portsSnapshot(150, 80, 443, 8443, 9000), 150 + 10, []string{b}},
		{"restored from a backup", portsSnapshot(120, 80, 443), 100 + 10 + 120, []string{a, b}},
	} {
		t.Run(c.name, func(t *testing.T) {
			store := openTestStore(t)
			s := testSet(t, "2026-11-01T00:00:00Z", store)
			now := time.Now()
			for n, st := range []struct {
				store string
				snap  *aggregate.Snapshot
			}{{a, portsSnapshot(100, 80, 443, 8443)}, {b, portsSnapshot(10, 53)}, {a, c.back}} {
				p := &pulled{snap: st.snap, pos: flows.NewCursor(), store: st.store, pulledAt: now.Add(time.Duration(n) * time.Second)}
				s.take(2, p, summaryOf(t, 2, st.store), false)
			}
			if got := heldFlows(s); got != c.wantFlows {
				t.Errorf("merging %d flows of replica 2, want %d", got, c.wantFlows)
			}
			if got := s.retired[2].covers; !slices.Equal(got, c.wantCovers) {
				t.Errorf("retired covers %q, want %q", got, c.wantCovers)
			}
			if got, want := heldPorts(s), []uint16{53, 80, 443, 8443, 9000}; !slices.Equal(got, want) && !slices.Equal(got, want[:4]) {
				t.Errorf("merging ports %v of replica 2, want every port A and B saw", got)
			}
			if got := heldFlows(testSet(t, "2026-11-01T00:00:00Z", store)); got != c.wantFlows {
				t.Errorf("after a restart: merging %d flows of replica 2, want %d", got, c.wantFlows)
			}
		})
	}
}

// Ensure the first summary this process holds of a replica, from a store that replica was
// retired from (a restart with only the retired summary kept, and the replica back on that
// store), drops the retired one when it holds all of it, in the store too; one restored
// from a backup, or a retired summary merging another store, stays beside it.
func TestStoreBackBeforeFirstPull(t *testing.T) {
	const a, b = "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"
	for _, c := range []struct {
		name      string
		covers    []string
		back      *aggregate.Snapshot
		wantFlows uint64
		retired   bool
	}{
		{"a later state", []string{a}, portsSnapshot(150, 80, 443, 8443), 150, false},
		{"restored from a backup", []string{a}, portsSnapshot(120, 80), 100 + 120, true},
		{"merged with another store", []string{b, a}, portsSnapshot(150, 80, 443, 8443), 100 + 150, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			store := openTestStore(t)
			s := testSet(t, "2026-11-01T00:00:00Z", store)
			old := &pulled{snap: portsSnapshot(100, 80, 443), pos: flows.NewCursor(), store: a, covers: c.covers, pulledAt: time.Now().Add(-time.Hour), kept: true}
			vals := map[string][]byte{}
			if err := s.retiredValue(2, old, vals); err != nil {
				t.Fatal(err)
			}
			if err := store.Keep(vals); err != nil {
				t.Fatal(err)
			}
			s = testSet(t, "2026-11-01T00:00:00Z", store) // restarted: the retired summary alone is kept
			if s.retired[2] == nil || s.cache[2] != nil {
				t.Fatalf("at start: retired %v, cache %v; want the retired summary alone", s.retired[2] != nil, s.cache[2] != nil)
			}
			p := &pulled{snap: c.back, pos: flows.NewCursor(), store: a, pulledAt: time.Now()}
			s.take(2, p, summaryOf(t, 2, a), false)
			if got := heldFlows(s); got != c.wantFlows {
				t.Errorf("merging %d flows of replica 2, want %d", got, c.wantFlows)
			}
			kept, err := ReadKept(store, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := slices.ContainsFunc(kept, func(k KeptSummary) bool { return k.Retired }); got != c.retired {
				t.Errorf("retired summary in the store: %t, want %t", got, c.retired)
			}
			if got := heldFlows(testSet(t, "2026-11-01T00:00:00Z", store)); got != c.wantFlows {
				t.Errorf("after a restart: merging %d flows of replica 2, want %d", got, c.wantFlows)
			}
		})
	}
}

// Ensure a replica's summary kept beside a retired one that merges its store with another
// (as an earlier version could leave them) is merged with it, at start and read offline,
// and that the double count is logged: the two cannot be split.
func TestStoreWithinRetiredIsLogged(t *testing.T) {
	const x, y = "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"
	store := openTestStore(t)
	s := testSet(t, "2026-11-01T00:00:00Z", store)
	vals := map[string][]byte{}
	if err := s.retiredValue(2, &pulled{snap: portsSnapshot(8, 80), pos: flows.NewCursor(), store: y, covers: []string{x, y}}, vals); err != nil {
		t.Fatal(err)
	}
	if err := store.Keep(vals); err != nil {
		t.Fatal(err)
	}
	s.writeKept(2, &pulled{snap: portsSnapshot(5, 443), pos: flows.NewCursor(), store: x, pulledAt: time.Now()}, summaryOf(t, 2, x), true, true, map[string][]byte{})

	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	kept, err := ReadKept(store, log)
	if err != nil {
		t.Fatal(err)
	}
	if merged, used := MergeKept(&aggregate.Snapshot{}, "", kept, log); merged.Flows != 13 || len(used) != 2 {
		t.Errorf("MergeKept merged %d flows from %d summaries, want 13 from both", merged.Flows, len(used))
	}
	if n := strings.Count(logged.String(), "counted twice"); n != 1 {
		t.Errorf("MergeKept logged the double count %d times, want once:\n%s", n, logged.String())
	}
	logged.Reset()
	local := Local{Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{} },
		Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil }, Store: "2026-11-01T00:00:00Z", Kept: store}
	started, err := New(Config{Self: 0, URLs: []string{"http://127.0.0.1:1", "http://127.0.0.1:1", "http://127.0.0.1:1"}}, local, nil, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := heldFlows(started); got != 13 {
		t.Errorf("at start: merging %d flows of replica 2, want 13", got)
	}
	if n := strings.Count(logged.String(), "counted twice"); n != 1 {
		t.Errorf("loadKept logged the double count %d times, want once:\n%s", n, logged.String())
	}
}

// Ensure an empty stand-in beside a retired summary of the same replica is kept when the
// retention empties it: it is the copy that says which store the replica serves, and without
// it a replica starting afresh would never take the retired copy.
func TestEmptyStandInBesideRetiredStays(t *testing.T) {
	const a, b = "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	local := Local{Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{From: t0, To: t0.Add(30 * time.Minute)} },
		Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil }, Store: "2026-11-01T00:00:00Z"}
	s, err := New(Config{Self: 0, URLs: []string{"http://127.0.0.1:1", "http://127.0.0.1:1", "http://127.0.0.1:1"}, Wait: time.Millisecond, Retention: time.Hour}, local, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.cache[2] = &pulled{snap: &aggregate.Snapshot{}, pos: flows.NewCursor(), store: b, pulledAt: time.Now(), kept: true}
	s.retired[2] = &pulled{snap: portsSnapshot(100, 80, 443), pos: flows.NewCursor(), store: a, covers: []string{a}, kept: true}
	s.Snapshot(t.Context())
	var got []string
	for _, c := range s.copies() {
		got = append(got, fmt.Sprintf("%d %s retired=%t", c.Replica, c.Store, c.Retired))
	}
	if want := []string{"2 " + b + " retired=false", "2 " + a + " retired=true"}; !slices.Equal(got, want) {
		t.Errorf("copies listed %q, want %q", got, want)
	}
}

// Ensure a retired copy covering more stores than the retired summary held, but lacking
// edges of it (it holds an older state of a store they share), is merged with the one held
// rather than replacing it: no edge is lost, the shared store's flows are counted twice.
func TestRetiredCopyLackingEdgesCombines(t *testing.T) {
	const a, b, c = "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", "2026-12-03T00:00:00Z"
	s := retiredServedTo(t, &pulled{snap: portsSnapshot(20, 53, 80, 9999), pos: flows.NewCursor(), store: b, covers: []string{a, b}, kept: true})
	s.cache[2] = &pulled{snap: &aggregate.Snapshot{Flows: 1}, pos: flows.NewCursor(), store: c, pulledAt: time.Now()}
	s.retired[2] = &pulled{snap: portsSnapshot(100, 80, 443, 9999), pos: flows.NewCursor(), store: a, covers: []string{a}, kept: true}
	s.takeCopy(t.Context(), 1, 2, true, nil)
	if got, want := heldPorts(s), []uint16{53, 80, 443, 9999}; !slices.Equal(got, want) {
		t.Errorf("merging ports %v of replica 2, want %v", got, want)
	}
	if got := s.retired[2].covers; !slices.Equal(got, []string{a, b}) {
		t.Errorf("retired covers %q, want A and B", got)
	}
}

// Ensure a store that came back (A, B, then A) reaches a replica through copies: this
// replica saw A replaced by B and holds B's stand-in; replica 1 saw B replaced by A again,
// and replica 3, like this one, only A replaced by B. This one takes replica 1's copy of A
// (B is listed retired, A is not), not replica 3's further-reaching copy of B, and drops its
// retired older A, which the copy holds all of: it then merges what replica 1 merges.
func TestStoreComingBackReachesThroughCopies(t *testing.T) {
	const a, b = "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"
	urls := []string{"http://127.0.0.1:1", "", "http://127.0.0.1:1", ""}
	serve := func(self int, standIn, retired *pulled) {
		s, err := New(Config{Self: self, URLs: slices.Repeat([]string{"http://127.0.0.1:1"}, 4)}, Local{Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{} },
			Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil }, Store: fmt.Sprintf("2026-11-0%dT00:00:00Z", self+1)}, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.cache[2], s.retired[2] = standIn, retired
		srv := httptest.NewServer(s.Handler())
		t.Cleanup(srv.Close)
		urls[self] = srv.URL
	}
	now := time.Now()
	// A was first left at its newest flow, B an hour later; A came back reaching an hour on.
	serve(1, &pulled{snap: later(portsSnapshot(150, 80, 443, 8443), 2*time.Hour), pos: flows.NewCursor(), store: a, pulledAt: now, kept: true},
		&pulled{snap: later(portsSnapshot(10, 53), time.Hour), pos: flows.NewCursor(), store: b, covers: []string{b}, kept: true})
	serve(3, &pulled{snap: later(portsSnapshot(12, 53), time.Hour), pos: flows.NewCursor(), store: b, pulledAt: now, kept: true},
		&pulled{snap: portsSnapshot(90, 80), pos: flows.NewCursor(), store: a, covers: []string{a}, kept: true})

	local := Local{Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{} },
		Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil }, Store: "2026-11-01T00:00:00Z", Kept: openTestStore(t)}
	s, err := New(Config{Self: 0, URLs: urls, Wait: time.Millisecond}, local, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.cache[2] = &pulled{snap: later(portsSnapshot(10, 53), 59*time.Minute), pos: flows.NewCursor(), store: b, pulledAt: now.Add(-time.Minute), kept: true}
	s.retired[2] = &pulled{snap: portsSnapshot(100, 80, 443), pos: flows.NewCursor(), store: a, covers: []string{a}, kept: true}
	s.Snapshot(t.Context())
	if got := heldFlows(s); got != 150+10 {
		t.Errorf("merging %d flows of replica 2, want %d: A as it came back, B retired", got, 150+10)
	}
	if got, want := heldPorts(s), []uint16{53, 80, 443, 8443}; !slices.Equal(got, want) {
		t.Errorf("merging ports %v of replica 2, want %v", got, want)
	}
	if got := s.retired[2].covers; !slices.Equal(got, []string{b}) {
		t.Errorf("retired covers %q, want B alone", got)
	}
}
