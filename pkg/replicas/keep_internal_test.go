package replicas

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

func openTestStore(t *testing.T) *aggregate.Store {
	t.Helper()
	store, err := aggregate.Open(filepath.Join(t.TempDir(), "replica-0.db"), aggregate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// testSet is replica 0 of three on the store id, keeping summaries in store (none if nil).
func testSet(t *testing.T, id string, store *aggregate.Store) *Set {
	t.Helper()
	local := Local{Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{} },
		Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil }, Store: id}
	if store != nil {
		local.Kept = store
	}
	s, err := New(Config{Self: 0, URLs: []string{"http://127.0.0.1:1", "http://127.0.0.1:1", "http://127.0.0.1:1"}}, local, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Ensure a summary that retired another is kept over the retired store's summary even when
// that one was kept later (a copy of the old store taken meanwhile): otherwise the old
// store's summary stays under both keys, and a restart stands it in twice.
func TestRetiringKeepsTheNewSummary(t *testing.T) {
	const oldStore, newStore = "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"
	store := openTestStore(t)
	s := testSet(t, "2026-11-01T00:00:00Z", store)
	now := time.Now()
	// A copy of replica 2's old store, pulled from another replica after the new store's
	// summary below was pulled, is what this replica kept last.
	s.cache[2] = &pulled{snap: &aggregate.Snapshot{Flows: 5}, pos: flows.NewCursor(), store: oldStore, pulledAt: now, kept: true}
	s.keptAt[2] = now
	pos, err := flows.NewCursor().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	p := &pulled{snap: &aggregate.Snapshot{Flows: 7}, pos: flows.NewCursor(), store: newStore, pulledAt: now.Add(-time.Second)}
	s.take(2, p, &Summary{Replica: 2, Positions: pos, Store: newStore}, false)

	kept, err := ReadKept(store, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range kept {
		got = append(got, fmt.Sprintf("%d retired=%t store=%s flows=%d", k.Replica, k.Retired, k.Store, k.Snapshot.Flows))
	}
	want := []string{"2 retired=false store=" + newStore + " flows=7", "2 retired=true store=" + oldStore + " flows=5"}
	if !slices.Equal(got, want) {
		t.Errorf("kept %q, want %q", got, want)
	}
}

// Ensure a kept summary served from the very store that reads it (or a retired one merging
// it) is left out at start, for this replica's index or another's: its edges are the local
// ones, and merging it would count them twice.
func TestLoadKeptLeavesOutThisStore(t *testing.T) {
	const mine, other = "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"
	store := openTestStore(t)
	value := func(sum Summary) []byte {
		bin, err := (&aggregate.Snapshot{Flows: 3}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if sum.Positions, err = flows.NewCursor().MarshalBinary(); err != nil {
			t.Fatal(err)
		}
		sum.SnapshotBinary = bin
		b, err := json.Marshal(keptSummary{PulledAt: time.Now(), Summary: sum})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if err := store.Keep(map[string][]byte{
		keptKey(2):    value(Summary{Replica: 2, Store: mine}),
		retiredKey(1): value(Summary{Replica: 1, Store: other, Covers: []string{mine, other}}),
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		local string
		want  int
	}{{mine, 0}, {"2026-12-03T00:00:00Z", 2}} {
		if got := testSet(t, c.local, store).StandIns(); got != c.want {
			t.Errorf("on store %s: %d stand-ins, want %d", c.local, got, c.want)
		}
	}
}

// heldFlows is the flows of every other replica's summary s merges: stand-ins, pulled and
// retired ones.
func heldFlows(s *Set) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n uint64
	for _, p := range s.cache {
		n += p.snap.Flows
	}
	for _, p := range s.retired {
		n += p.snap.Flows
	}
	return n
}

// retiredServedTo serves, as replica 1, retired as its retired summary of replica 2, and
// returns replica 0 of that set, on a store of its own, to take it (takeCopy from 1).
func retiredServedTo(t *testing.T, retired *pulled) *Set {
	t.Helper()
	serving := testSet(t, "2026-11-02T00:00:00Z", nil)
	serving.retired[2] = retired
	srv := httptest.NewServer(serving.Handler())
	t.Cleanup(srv.Close)
	s, err := New(Config{Self: 0, URLs: []string{"http://127.0.0.1:1", srv.URL, "http://127.0.0.1:1"}}, Local{Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{} },
		Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil }, Store: "2026-11-01T00:00:00Z", Kept: openTestStore(t)}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func summaryOf(t *testing.T, replica int, store string) *Summary {
	t.Helper()
	pos, err := flows.NewCursor().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return &Summary{Replica: replica, Positions: pos, Store: store}
}

// Ensure a replica that comes back to a store it was retired from (A, then B, then A again:
// a volume attached by mistake and detached) has the store's older state dropped from what
// is retired, as the store it serves holds all of it: only B stays retired.
func TestStoreComingBackIsNotRetiredTwice(t *testing.T) {
	const a, b = "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"
	store := openTestStore(t)
	s := testSet(t, "2026-11-01T00:00:00Z", store)
	now := time.Now()
	for n, st := range []struct {
		store string
		flows uint64
	}{{a, 100}, {b, 10}, {a, 150}} {
		p := &pulled{snap: &aggregate.Snapshot{Flows: st.flows}, pos: flows.NewCursor(), store: st.store, pulledAt: now.Add(time.Duration(n) * time.Second)}
		s.take(2, p, summaryOf(t, 2, st.store), false)
	}
	if got, want := heldFlows(s), uint64(150+10); got != want {
		t.Errorf("merging %d flows of replica 2, want %d: A as served now, B retired", got, want)
	}
	if got := s.retired[2].covers; !slices.Equal(got, []string{b}) {
		t.Errorf("retired covers %q, want B alone", got)
	}
	if got, want := heldFlows(testSet(t, "2026-11-01T00:00:00Z", store)), uint64(150+10); got != want {
		t.Errorf("after a restart: merging %d flows of replica 2, want %d", got, want)
	}
}

// Ensure a store kept both as a replica's summary and as its retired one (as an earlier
// version could leave it) stands in once, at start and read offline: the copy reaching
// further, and the retired key is removed.
func TestSameStoreKeptTwiceStandsInOnce(t *testing.T) {
	const a = "2026-12-01T00:00:00Z"
	store := openTestStore(t)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	value := func(flows uint64, to time.Time) []byte {
		sum := summaryOf(t, 2, a)
		bin, err := (&aggregate.Snapshot{Flows: flows, From: t0, To: to}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		sum.SnapshotBinary = bin
		v, err := json.Marshal(keptSummary{PulledAt: to, Summary: *sum})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := store.Keep(map[string][]byte{keptKey(2): value(5, t0.Add(time.Minute)), retiredKey(2): value(3, t0)}); err != nil {
		t.Fatal(err)
	}
	kept, err := ReadKept(store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if merged, used := MergeKept(&aggregate.Snapshot{}, "", kept, nil); merged.Flows != 5 || len(used) != 1 {
		t.Errorf("MergeKept merged %d flows from %d summaries, want 5 from the kept one alone", merged.Flows, len(used))
	}
	s := testSet(t, "2026-11-01T00:00:00Z", store)
	if got := heldFlows(s); got != 5 {
		t.Errorf("merging %d flows of replica 2, want 5", got)
	}
	if kept, err = ReadKept(store, nil); err != nil || len(kept) != 1 || kept[0].Retired {
		t.Errorf("kept after start: %+v (%v), want the replica's summary alone", kept, err)
	}
}

// Ensure two retired summaries of one replica covering different stores (replica 2 went
// through stores A, B and C; this replica retired A, another B) are combined, not one
// refused: otherwise each replica lacks one store's edges for good.
func TestRetiredOfOtherStoresCombine(t *testing.T) {
	const a, b, c = "2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z", "2026-12-03T00:00:00Z"
	s := retiredServedTo(t, &pulled{snap: &aggregate.Snapshot{Flows: 10}, pos: flows.NewCursor(), store: b, covers: []string{b}, kept: true})
	s.cache[2] = &pulled{snap: &aggregate.Snapshot{Flows: 1}, pos: flows.NewCursor(), store: c, pulledAt: time.Now()}
	s.retired[2] = &pulled{snap: &aggregate.Snapshot{Flows: 100}, pos: flows.NewCursor(), store: a, covers: []string{a}, kept: true}
	s.takeCopy(t.Context(), 1, 2, true, nil)
	if got, want := heldFlows(s), uint64(1+100+10); got != want {
		t.Errorf("merging %d flows of replica 2, want %d: C served, A and B retired", got, want)
	}
	if got := s.retired[2].covers; !slices.Equal(got, []string{a, b}) {
		t.Errorf("retired covers %q, want A and B", got)
	}
	// Taking the same copy again changes nothing.
	s.takeCopy(t.Context(), 1, 2, true, nil)
	if got, want := heldFlows(s), uint64(1+100+10); got != want {
		t.Errorf("after a second take: merging %d flows, want %d", got, want)
	}
}
