package replicas

import (
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/aggregate"
)

// Ensure the choice of which copy of another replica's summary to take: a newer store wins
// over reach, a store known replaced is never taken back, and a retired copy is taken only
// once its replica is known to serve another store.
func TestChooseCopies(t *testing.T) {
	const s0, s1, s2, s3 = "2026-11-01T00:00:00Z", "2026-12-01T00:00:00.5Z", "2026-12-02T00:00:00Z", "2026-12-02T12:00:00Z"
	const own = "2026-10-01T00:00:00Z" // this replica's store in the stand-in cases
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	held := func(store string, sec int, flows uint64, standsIn bool) *pulled {
		return &pulled{snap: &aggregate.Snapshot{To: t0.Add(time.Duration(sec) * time.Second), Flows: flows}, store: store, kept: standsIn}
	}
	// retiredOf is a retired summary merging the stores covers, the last one retired last.
	retiredOf := func(sec int, flows uint64, covers ...string) *pulled {
		p := held(covers[len(covers)-1], sec, flows, true)
		p.covers = covers
		return p
	}
	copyOf := func(store string, sec int, flows uint64) Copy {
		return Copy{Replica: 2, To: t0.Add(time.Duration(sec) * time.Second), Flows: flows, Store: store}
	}
	for _, c := range []struct {
		name    string
		cache   *pulled // what this replica (index 0) holds of replica 2
		retired *pulled
		c       Copy
		want    bool
	}{
		{"nothing held", nil, nil, copyOf(s1, 5, 10), true},
		{"answered by the replica", held(s1, 1, 1, false), nil, copyOf(s1, 5, 10), false},
		{"same store, reaching further", held(s1, 1, 1, true), nil, copyOf(s1, 5, 10), true},
		{"same store, reaching less", held(s1, 9, 99, true), nil, copyOf(s1, 5, 10), false},
		{"same store, same time, more flows", held(s1, 5, 9, true), nil, copyOf(s1, 5, 10), true},
		{"newer store reaching less", held(s1, 9, 99, true), nil, copyOf(s2, 1, 1), true},
		{"older store reaching further", held(s2, 1, 1, true), nil, copyOf(s1, 9, 99), false},
		{"a store retired already, nothing held", nil, held(s1, 1, 1, true), copyOf(s1, 9, 99), false},
		{"an older store than the retired one", nil, held(s1, 1, 1, true), copyOf(s0, 9, 99), false},
		{"a newer store than the retired one", nil, held(s1, 1, 1, true), copyOf(s2, 1, 1), true},
		{"no identities, reaching further", held("", 1, 1, true), nil, copyOf("", 5, 10), true},
		{"a store the retired one merges", nil, retiredOf(1, 1, s0, s1), copyOf(s0, 9, 99), false},
		{"this replica's own store", nil, nil, copyOf(own, 9, 99), false},
	} {
		t.Run("stand-in: "+c.name, func(t *testing.T) {
			s := &Set{cfg: Config{Self: 0, URLs: make([]string, 3)}, local: Local{Store: own}, cache: map[int]*pulled{}, retired: map[int]*pulled{}, failing: map[int]bool{}}
			if c.cache != nil {
				s.cache[2] = c.cache
			}
			if c.retired != nil {
				s.retired[2] = c.retired
			}
			if got := s.wantsCopy(c.c, nil); got != c.want {
				t.Errorf("wantsCopy = %t, want %t", got, c.want)
			}
		})
	}

	// A store that came back (A = s1, B = s2, then A): this replica retired A (to 1 s) and
	// holds B; the holder of the copy of A lists a retired copy (left) of replica 2.
	left := func(sec int, covers ...string) *Copy {
		return &Copy{Replica: 2, To: t0.Add(time.Duration(sec) * time.Second), Flows: 1, Store: covers[len(covers)-1], Retired: true, Covers: covers}
	}
	for _, c := range []struct {
		name  string
		cache *pulled
		left  *Copy
		want  bool
	}{
		{"B left after A", held(s2, 9, 99, true), left(5, s2), true},
		{"the holder lists no retired copy", held(s2, 9, 99, true), nil, false},
		{"the holder retired A as well", held(s2, 9, 99, true), left(5, s2, s1), false},
		{"B left before A did", held(s2, 9, 99, true), left(0, s2), false},
		{"the holder retired another store", held(s2, 9, 99, true), left(5, s3), false},
		{"B answered by the replica", held(s2, 9, 99, false), left(5, s2), false},
	} {
		t.Run("came back: "+c.name, func(t *testing.T) {
			s := &Set{cfg: Config{Self: 0, URLs: make([]string, 3)}, local: Local{Store: own}, cache: map[int]*pulled{2: c.cache},
				retired: map[int]*pulled{2: held(s1, 1, 1, true)}, failing: map[int]bool{}}
			if got := s.wantsCopy(copyOf(s1, 5, 10), c.left); got != c.want {
				t.Errorf("wantsCopy = %t, want %t", got, c.want)
			}
		})
	}

	retiredCopy := func(replica int, store string, sec int, flows uint64) Copy {
		return Copy{Replica: replica, To: t0.Add(time.Duration(sec) * time.Second), Flows: flows, Store: store, Retired: true}
	}
	retiredCopyOf := func(replica int, sec int, flows uint64, covers ...string) Copy {
		c := retiredCopy(replica, covers[len(covers)-1], sec, flows)
		c.Covers = covers
		return c
	}
	for _, c := range []struct {
		name    string
		local   string // this replica's (index 0) store
		cache   *pulled
		retired *pulled
		c       Copy
		want    bool
	}{
		{"the replica serves another store", s0, held(s2, 1, 1, false), nil, retiredCopy(2, s1, 5, 10), true},
		{"nothing held of the replica", s0, nil, nil, retiredCopy(2, s1, 5, 10), false},
		{"a retired one of other stores held, nothing of the replica", s0, nil, retiredOf(1, 1, s2), retiredCopy(2, s1, 5, 10), false},
		{"the replica's old store still held as its", s0, held(s1, 1, 1, false), nil, retiredCopy(2, s1, 5, 10), false},
		{"held without an identity", s0, held("", 1, 1, false), nil, retiredCopy(2, s1, 5, 10), false},
		{"a retired one reaching further held", s0, held(s2, 1, 1, false), held(s1, 9, 99, true), retiredCopy(2, s1, 5, 10), false},
		{"a retired one reaching less held", s0, held(s2, 1, 1, false), held(s1, 1, 1, true), retiredCopy(2, s1, 5, 10), true},
		{"of this replica's own old store", s2, nil, nil, retiredCopy(0, s1, 5, 10), true},
		{"of this very store", s1, nil, nil, retiredCopy(0, s1, 5, 10), false},
		{"without an identity", s0, nil, nil, retiredCopy(2, "", 5, 10), false},
		{"covering fewer stores than the one held, reaching further", s0, held(s2, 1, 1, false), retiredOf(1, 1, s0, s1), retiredCopy(2, s1, 9, 99), false},
		{"covering more stores than the one held, reaching less", s2, held(s2, 9, 9, false), retiredOf(9, 99, s0), retiredCopyOf(2, 1, 1, s0, s1), true},
		{"covering other stores than the one held: combined", s2, held(s2, 9, 9, false), retiredOf(1, 1, s0), retiredCopyOf(2, 9, 99, s1), true},
		{"overlapping the one held, neither covering the other", s0, held(s2, 9, 9, false), retiredOf(1, 1, s0, s1), retiredCopyOf(2, 9, 99, s1, s3), false},
		{"covering the store the replica serves now", s0, held(s1, 1, 1, false), nil, retiredCopyOf(2, 9, 99, s1, s2), false},
		{"covering this replica's own store", s1, held(s2, 1, 1, false), nil, retiredCopyOf(2, 9, 99, s1, s0), false},
	} {
		t.Run("retired: "+c.name, func(t *testing.T) {
			s := &Set{cfg: Config{Self: 0, URLs: make([]string, 3)}, local: Local{Store: c.local}, cache: map[int]*pulled{}, retired: map[int]*pulled{}, failing: map[int]bool{}}
			if c.cache != nil {
				s.cache[c.c.Replica] = c.cache
			}
			if c.retired != nil {
				s.retired[c.c.Replica] = c.retired
			}
			if got := s.wantsRetired(c.c); got != c.want {
				t.Errorf("wantsRetired = %t, want %t", got, c.want)
			}
		})
	}
}
