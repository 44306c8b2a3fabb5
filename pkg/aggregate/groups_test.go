package aggregate

import (
	"math/rand/v2"
	"testing"

	"github.com/recommender/recommender/pkg/flows"
)

// TestGroupTable drives the group table and a Go map with the same random inserts, updates and
// deletes (few distinct keys, so that probe runs collide, wrap around and shift back on
// delete, and the table grows and shrinks) and compares them after every step.
func TestGroupTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tab := newGroupTable()
	want := map[groupID]edgeIdx{}
	key := func() groupID {
		return groupID{wl: rng.Uint32N(30), peer: rng.Uint32N(30), dir: flows.Direction(rng.UintN(2)), proto: flows.Protocol(rng.UintN(2))}
	}
	most, shrunk := 0, false
	for step := range 200_000 {
		if n := len(tab.slots); n < most {
			shrunk = true
		} else {
			most = n
		}
		k := key()
		// Phases of mostly inserts then mostly deletes, so that the table grows and shrinks.
		inserts := uint(7) // of 10 steps
		if step/20_000%2 == 1 {
			inserts = 1
		}
		if rng.UintN(10) < inserts {
			v := edgeIdx(rng.Uint32N(1000) + 1)
			tab.set(k, v)
			want[k] = v
		} else {
			tab.delete(k)
			delete(want, k)
		}
		if tab.len() != len(want) {
			t.Fatalf("step %d: len = %d, want %d", step, tab.len(), len(want))
		}
		if got := tab.get(k); got != want[k] {
			t.Fatalf("step %d: get(%+v) = %d, want %d", step, k, got, want[k])
		}
		if step%997 == 0 {
			n := 0
			tab.all(func(k groupID, v edgeIdx) {
				n++
				if want[k] != v {
					t.Fatalf("step %d: all yields %+v = %d, want %d", step, k, v, want[k])
				}
			})
			for k, v := range want {
				if got := tab.get(k); got != v {
					t.Fatalf("step %d: get(%+v) = %d, want %d", step, k, got, v)
				}
			}
			if n != len(want) {
				t.Fatalf("step %d: all yields %d groups, want %d", step, n, len(want))
			}
		}
	}
	tab.reserve(100_000)
	if n := len(tab.slots); n*3 < 100_000*4 || n > 2*100_000*4/3 {
		t.Errorf("reserve(100000): %d slots", n)
	}
	for k, v := range want {
		if got := tab.get(k); got != v {
			t.Fatalf("after reserve: get(%+v) = %d, want %d", k, got, v)
		}
	}
	if most <= minGroupSlots || !shrunk {
		t.Errorf("table grew to %d slots (shrunk: %v): the test does not reach resizing both ways", most, shrunk)
	}
}
