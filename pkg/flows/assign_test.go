package flows_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/recommender/recommender/pkg/flows"
)

func assignments(t *testing.T, members []string, nodes []string) map[string]string {
	t.Helper()
	owner := map[string]string{}
	for _, m := range members {
		r, err := flows.NewRendezvous(m, members)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if r.Owns(n) {
				if o, ok := owner[n]; ok {
					t.Fatalf("node %s owned by %s and %s", n, o, m)
				}
				owner[n] = m
			}
		}
	}
	for _, n := range nodes {
		if _, ok := owner[n]; !ok {
			t.Fatalf("node %s owned by no replica of %v", n, members)
		}
	}
	return owner
}

// Ensure that every node is read by exactly one replica, that the load spreads, and that a
// replica leaving moves only the nodes it held.
func TestRendezvous(t *testing.T) {
	var nodes []string
	for i := range 400 {
		nodes = append(nodes, fmt.Sprintf("gke-prod-pool-%d", i))
	}
	four := flows.StaticReplicas(4)
	before := assignments(t, four, nodes)
	load := map[string]int{}
	for _, m := range before {
		load[m]++
	}
	for _, m := range four {
		// 100 expected; a bad hash puts most nodes on one replica.
		if load[m] < 60 || load[m] > 140 {
			t.Errorf("replica %s reads %d of 400 nodes, want about 100 (%v)", m, load[m], load)
		}
	}
	after := assignments(t, []string{"0", "1", "3"}, nodes)
	for _, n := range nodes {
		if before[n] != "2" && after[n] != before[n] {
			t.Errorf("node %s moved from %s to %s though replica 2 left", n, before[n], after[n])
		}
	}
	if _, err := flows.NewRendezvous("5", four); err == nil {
		t.Error("NewRendezvous accepted a replica outside the set")
	}
}

func TestOrdinal(t *testing.T) {
	for _, tc := range []struct {
		pod  string
		want int
		err  bool
	}{
		{"recommender-0", 0, false},
		{"my-recommender-12", 12, false},
		{"recommender", 0, true},
		{"recommender-abc12", 0, true},
	} {
		got, err := flows.Ordinal(tc.pod)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("Ordinal(%q) = %d, %v; want %d, error %v", tc.pod, got, err, tc.want, tc.err)
		}
		if err != nil && !errors.Is(err, flows.ErrNoOrdinal) {
			t.Errorf("Ordinal(%q) error %v is not ErrNoOrdinal", tc.pod, err)
		}
	}
}

// Ensure a Rendezvous without this replica in its set reads no node.
func TestRendezvousWithoutSelfReadsNothing(t *testing.T) {
	r, err := flows.NewRendezvous("1", flows.StaticReplicas(3))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetMembers([]string{"0", "2"}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if n := fmt.Sprintf("node-%d", i); r.Owns(n) {
			t.Errorf("Owns(%s) = true outside the set", n)
		}
	}
}
