package aggregate

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/flows"
)

// floodEvent is flow i of a Deployment that gets a new version label on every flow.
func floodEvent(i int) *flows.Event {
	src := workload("shop", "k8s:app=flood", fmt.Sprintf("k8s:version=%08x", i*2654435761))
	src.Workload = "Deployment/flood"
	return flow(i%3600, src, api, flows.ProtoTCP, 8080)
}

// Ensure that a label whose value changes on every flow of one Deployment is detected, dropped
// from the identity (reported in the snapshot, counted, kept across a restart), that the
// workloads stay few, and that a legitimate workload arriving after the flood is stored
// (issue 15.6, with a smaller flood than the benchmark's).
func TestLabelFlood(t *testing.T) {
	const n = 20_000
	reg := prometheus.NewPedanticRegistry()
	a, err := NewAggregator(Config{}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t, filepath.Join(t.TempDir(), "store.db"), Options{})
	for i := range n / 2 {
		a.Add(floodEvent(i))
	}
	checkTables(t, a)
	if err := s.Commit(a.TakeBatch(), nil); err != nil {
		t.Fatal(err)
	}
	// The variants seen before detection were merged: the flood is one workload with all its
	// flows and one edge each way, in memory and in the store.
	if w, e := a.Len(); w != 2 || e != 2 {
		t.Errorf("%d workloads, %d edges after the flood; want 2 and 2 (flood and api, one edge each way)", w, e)
	}
	if got := gather(t, reg, "recommender_aggregate_churning_labels_total", "", ""); got != 1 {
		t.Errorf("churning labels = %v, want 1", got)
	}
	stored, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(a.Snapshot(), stored, snapshotOpts); d != "" {
		t.Errorf("store differs from the aggregator after the merge (-memory +store):\n%s", d)
	}

	// A restarted ingest keeps the verdict: no new variants.
	b := newAgg(t, Config{})
	if _, err := s.Load(b); err != nil {
		t.Fatal(err)
	}
	before, _ := b.Len()
	for i := n / 2; i < n; i++ {
		b.Add(floodEvent(i))
	}
	newcomer := workload("shop", "k8s:app=newcomer")
	newcomer.Workload = "Deployment/newcomer"
	b.Add(flow(3601, newcomer, api, flows.ProtoTCP, 9090))
	snap := b.Snapshot()
	if got := len(snap.Workloads); got != before+1 {
		t.Errorf("workloads after the restart = %d, want %d (only the newcomer added)", got, before+1)
	}
	want := ChurningLabel{Namespace: "shop", Owner: "Deployment/flood", Key: "k8s:version"}
	if len(snap.Churning) != 1 || snap.Churning[0] != want {
		t.Errorf("churning = %v, want [%v]", snap.Churning, want)
	}
	w, edges, ok := snap.Workload("shop/k8s:app=flood")
	if !ok || w.Flows != n || len(edges) != 1 || edges[0].Counts.Forwarded != n {
		t.Errorf("stripped workload = %+v, %v, edges %v; want it to hold all %d flows", w, ok, edges, n)
	}
	if _, _, ok := snap.Workload("shop/k8s:app=newcomer"); !ok {
		t.Error("the workload arriving after the flood was not stored")
	}
	if snap.Overflow != 0 {
		t.Errorf("overflow = %d, want 0", snap.Overflow)
	}
}

// Ensure that distinct workloads are not mistaken for churn: bare pods of one namespace that
// differ only in their app label, and Deployments that each have a few versions.
func TestLabelNoFalseChurn(t *testing.T) {
	a := newAgg(t, Config{})
	for i := range 50 {
		p := workload("bare", fmt.Sprintf("k8s:app=a%d", i), "k8s:io.kubernetes.pod.namespace=bare",
			"k8s:io.cilium.k8s.policy.serviceaccount=default")
		a.Add(flow(i, p, api, flows.ProtoTCP, 80))
		for v := range 3 {
			d := workload("apps", fmt.Sprintf("k8s:app=d%d", i), fmt.Sprintf("k8s:version=v%d", v))
			d.Workload = fmt.Sprintf("Deployment/d%d", i)
			a.Add(flow(i, d, api, flows.ProtoTCP, 80))
		}
	}
	snap := a.Snapshot()
	if len(snap.Churning) != 0 || len(snap.Workloads) != 50+150+1 {
		t.Errorf("churning %v, %d workloads; want none and %d", snap.Churning, len(snap.Workloads), 50+150+1)
	}
}

// Ensure that one namespace flooding identities no churn rule can fold (a new label key on
// every flow) cannot take the workload budget of the others, and that one workload with
// endless peers cannot take the edge budget of the others.
func TestFairCaps(t *testing.T) {
	a := newAgg(t, Config{MaxWorkloads: 1000, MaxEdges: 10_000})
	for i := range 2000 {
		a.Add(flow(i, workload("flood", fmt.Sprintf("k8s:k%d=x", i)), api, flows.ProtoTCP, 80))
	}
	a.Add(flow(1, workload("other", "k8s:app=late"), api, flows.ProtoTCP, 80))
	snap := a.Snapshot()
	if _, _, ok := snap.Workload("other/k8s:app=late"); !ok {
		t.Error("a workload of another namespace was refused after the flood")
	}
	perNS := a.cfg.MaxWorkloadsPerNamespace
	if n := countNS(snap, "flood"); n != perNS {
		t.Errorf("flood namespace holds %d workloads, want its share %d", n, perNS)
	}

	b := newAgg(t, Config{MaxWorkloads: 1000, MaxEdges: 10_000})
	for i := range 5000 {
		b.Add(flow(i, web, workload("peers", fmt.Sprintf("k8s:app=p%d", i)), flows.ProtoTCP, 80))
	}
	b.Add(flow(1, api, dns, flows.ProtoUDP, 53))
	snap = b.Snapshot()
	if got, want := len(snap.Edges["shop/k8s:app=web"]), b.cfg.MaxEdgesPerWorkload; got != want {
		t.Errorf("web has %d edges, want its share %d", got, want)
	}
	if len(snap.Edges["shop/k8s:app=api"]) != 1 {
		t.Error("another workload's edge was refused after one workload took its share")
	}
}

func countNS(s *Snapshot, ns string) int {
	n := 0
	for _, w := range s.Workloads {
		if w.Key.Namespace == ns {
			n++
		}
	}
	return n
}

// Ensure that merging the variants of a churning label merges their edges too: per-port edges
// that together exceed MaxPorts collapse into one range, edges of other workloads to the
// variants move to the merged identity, and store and memory agree.
func TestLabelFloodMergesEdges(t *testing.T) {
	a := newAgg(t, Config{MaxPorts: 4})
	s := openStore(t, "", Options{})
	for i := range 9 { // the ninth value is one too many
		v := workload("shop", "k8s:app=flood", fmt.Sprintf("k8s:version=v%d", i))
		v.Workload = "Deployment/flood"
		a.Add(flow(i, v, api, flows.ProtoTCP, uint16(8000+i)))
		a.Add(flow(i, web, v, flows.ProtoTCP, 80))
	}
	got := render(a.Snapshot())
	want := []string{
		"workloads=3 flows=18 overflow=0",
		"shop/k8s:app=api ingress workload:shop/k8s:app=flood 8000-8008/TCP fwd=9",
		"shop/k8s:app=flood ingress workload:shop/k8s:app=web 80/TCP fwd=9",
		"shop/k8s:app=flood egress workload:shop/k8s:app=api 8000-8008/TCP fwd=9",
		"shop/k8s:app=web egress workload:shop/k8s:app=flood 80/TCP fwd=9",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("edges after the merge (-want +got):\n%s", d)
	}
	checkTables(t, a)
	if err := s.Commit(a.TakeBatch(), nil); err != nil {
		t.Fatal(err)
	}
	stored, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(a.Snapshot(), stored, snapshotOpts); d != "" {
		t.Errorf("store differs from the aggregator (-memory +store):\n%s", d)
	}
}

// Ensure that a label found churning while the destination of a flow is handled is also
// stripped from its source: pods of one owner talking to each other must not recreate the
// variant just folded.
func TestSelfChurnFolded(t *testing.T) {
	a := newAgg(t, Config{MaxLabelValues: 2})
	pod := func(v int) flows.Peer {
		p := workload("ns", "k8s:app=web", fmt.Sprintf("k8s:version=v%d", v))
		p.Workload = "Deployment/web"
		return p
	}
	for v := 1; v <= 4; v++ {
		a.Add(flow(v, pod(1), pod(v+1), flows.ProtoTCP, 80))
	}
	checkTables(t, a)
	for _, w := range a.Snapshot().Workloads {
		if strings.Contains(w.Key.String(), "version") {
			t.Errorf("variant workload %s survives the fold", w.Key)
		}
	}
}
