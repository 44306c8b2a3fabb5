package flowgen

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/recommender/recommender/pkg/flows"
)

// Ensure the mesh recording normalizes into the cross-cluster edges Mesh promises, each
// workload carrying its own cluster, and nothing else.
func TestMeshNormalizes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.jsonl")
	if err := os.WriteFile(path, generate(t, Mesh), 0o644); err != nil {
		t.Fatal(err)
	}
	evs, sum := readEvents(t, path, true)
	for r := range sum.SkippedBy {
		if r != flows.SkipReply && r != flows.SkipDuplicate { // both ends of a cross-node connection report it
			t.Errorf("skipped records for %q, want replies only: %+v", r, sum)
		}
	}
	short := func(ns, app, cluster string) string {
		return ns + "/k8s:app=" + app + ",k8s:io.cilium.k8s.policy.cluster=" + cluster + ",k8s:io.cilium.k8s.policy.serviceaccount=" + app
	}
	got := map[string]bool{}
	for _, ev := range evs {
		if ev.Proto.IsICMP() || ev.Port == 53 {
			continue
		}
		got[edgeKey(ev)] = true
	}
	want := []string{
		short("shop", "frontend", MeshEast) + " -> " + short("shop", "cart", MeshEast) + " 8080/TCP",
		short("shop", "frontend", MeshEast) + " -> " + short("shop", "cart", MeshWest) + " 8080/TCP",
		short("shop", "cart", MeshEast) + " -> " + short("shop", "redis", MeshWest) + " 6379/TCP",
		short("shop", "cart", MeshWest) + " -> " + short("shop", "redis", MeshWest) + " 6379/TCP",
		short("ops", "prober", MeshWest) + " -> " + short("shop", "frontend", MeshEast) + " 80/TCP",
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("missing edge %s", w)
		}
		delete(got, w)
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		t.Errorf("unexpected edge %s", k)
	}
}
