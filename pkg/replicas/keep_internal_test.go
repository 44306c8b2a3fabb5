package replicas

import (
	"encoding/json"
	"fmt"
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

func testSet(t *testing.T, id string, store *aggregate.Store) *Set {
	t.Helper()
	s, err := New(Config{Self: 0, URLs: []string{"http://127.0.0.1:1", "http://127.0.0.1:1", "http://127.0.0.1:1"}}, Local{Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{} },
		Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil }, Store: id, Kept: store}, nil, nil, nil)
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
