package flood

import (
	"errors"
	"io"
	"testing"
)

// Ensure the flood is what its benchmarks describe: n flows, half of them from the flooded
// Deployment with a version value never repeated, then the late workload's one flow and io.EOF.
func TestLabelFlood(t *testing.T) {
	const n = 10_000
	src := NewLabelFlood(n)
	versions := map[string]bool{}
	var flood, bench, late int
	for {
		ev, err := src.Recv(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Src.Workload {
		case "Deployment/flood":
			flood++
			v, _ := ev.Src.Labels.Get("version")
			versions[v] = true
		case "Deployment/late":
			late++
			if flood+bench != n {
				t.Errorf("late workload after %d flows, want %d", flood+bench, n)
			}
		default:
			bench++
		}
	}
	if flood != n/2 || bench != n/2 || late != 1 || len(versions) != n/2 {
		t.Errorf("flood %d (%d versions), bench %d, late %d; want %d, %d, %d, 1", flood, len(versions), bench, late, n/2, n/2, n/2)
	}
	if _, err := src.Recv(t.Context()); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after the end = %v, want io.EOF", err)
	}
}
