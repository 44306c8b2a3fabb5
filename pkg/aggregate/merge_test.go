package aggregate

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/recommender/recommender/pkg/flows"
)

// readAll reads every event of the bundled recordings, unfolded.
func readAll(t *testing.T, paths ...string) []*flows.Event {
	t.Helper()
	src, err := flows.NewFileSource(flows.FileConfig{Paths: paths, Strict: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var out []*flows.Event
	for {
		ev, err := src.Recv(context.Background())
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
}

func aggregateOf(t *testing.T, cfg Config, evs []*flows.Event) *Snapshot {
	t.Helper()
	a, err := NewAggregator(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		a.Add(ev)
	}
	return a.Snapshot()
}

// comparable drops what Merge does not carry (DNS ages) and empty maps versus nil.
func comparable(s *Snapshot) *Snapshot {
	c := *s
	c.dnsLast = nil
	if len(c.DNS) == 0 {
		c.DNS = nil
	}
	if len(c.Edges) == 0 {
		c.Edges = nil
	}
	return &c
}

func sameSnapshot(t *testing.T, got, want *Snapshot) {
	t.Helper()
	g, w := comparable(got), comparable(want)
	if reflect.DeepEqual(g, w) {
		return
	}
	if g.Flows != w.Flows || len(g.Workloads) != len(w.Workloads) || g.EdgeCount() != w.EdgeCount() {
		t.Fatalf("merged: %d flows, %d workloads, %d edges; single store: %d, %d, %d", g.Flows, len(g.Workloads), g.EdgeCount(), w.Flows, len(w.Workloads), w.EdgeCount())
	}
	for k, es := range w.Edges {
		if !reflect.DeepEqual(g.Edges[k], es) {
			t.Fatalf("edges of %s:\nmerged %+v\nsingle %+v", k, g.Edges[k], es)
		}
	}
	if !reflect.DeepEqual(g.Workloads, w.Workloads) {
		t.Fatalf("workloads differ:\nmerged %+v\nsingle %+v", g.Workloads, w.Workloads)
	}
	t.Fatalf("merged snapshot differs from the single store's:\nmerged %+v\nsingle %+v", g, w)
}

// Ensure that merging the snapshots of stores that aggregated disjoint sets of nodes gives
// exactly the snapshot of one store that aggregated everything (issue 19: replicas split
// the nodes).
func TestMergeEqualsOneStore(t *testing.T) {
	paths, err := filepath.Glob("../../testdata/flows/*.jsonl")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no recordings: %v", err)
	}
	evs := readAll(t, paths...)
	want := aggregateOf(t, Config{}, evs)
	for _, parts := range []int{1, 2, 3, 5} {
		owner, err := flows.NewRendezvous("0", flows.StaticReplicas(parts))
		if err != nil {
			t.Fatal(err)
		}
		split := make([][]*flows.Event, parts)
		members := owner.Members()
		for _, ev := range evs {
			o := owner.Owner(ev.Node)
			for i, m := range members {
				if m == o {
					split[i] = append(split[i], ev)
				}
			}
		}
		var snaps []*Snapshot
		for _, part := range split {
			snaps = append(snaps, aggregateOf(t, Config{}, part))
		}
		sameSnapshot(t, Merge(snaps...), want)
	}
	sameSnapshot(t, Merge(want, nil), want)
}

// Ensure that a peer whose ports one store collapsed into a range is one range edge in the
// merge, absorbing the other store's per-port edges with their counts.
func TestMergeAbsorbsPortsIntoRange(t *testing.T) {
	web, db := workload("shop", "k8s:app=web"), workload("shop", "k8s:app=db")
	var a, b []*flows.Event
	for p := range 6 {
		a = append(a, flow(p, web, db, flows.ProtoTCP, uint16(5000+p)))
	}
	b = append(b, flow(10, web, db, flows.ProtoTCP, 6000), flow(11, web, db, flows.ProtoTCP, 4000))
	cfg := Config{MaxPorts: 4}
	sa, sb := aggregateOf(t, cfg, a), aggregateOf(t, cfg, b)
	m := Merge(sa, sb)
	es := m.Edges[WorkloadKey{Namespace: "shop", Labels: flows.NewLabels("k8s:app=web")}.String()]
	if len(es) != 1 || !es[0].Collapsed || es[0].Port != 4000 || es[0].EndPort != 6000 || es[0].Counts.Total() != 8 {
		t.Fatalf("merged egress edges of web = %+v, want one range 4000-6000 with 8 flows", es)
	}
}

// Ensure that every port stays an edge of its own in the merge. Ports were once keyed as a
// rune, and the ports 55296-57343 (UTF-16 surrogates, not runes) all became one edge.
func TestMergeKeepsEveryPort(t *testing.T) {
	web, db := workload("shop", "k8s:app=web"), workload("shop", "k8s:app=db")
	ports := []uint16{80, 55296, 55297, 57343, 57344, 65535}
	var a, b []*flows.Event
	for i, p := range ports {
		a = append(a, flow(i, web, db, flows.ProtoTCP, p))
		b = append(b, flow(10+i, web, db, flows.ProtoTCP, p))
	}
	m := Merge(aggregateOf(t, Config{}, a), aggregateOf(t, Config{}, b))
	es := m.Edges[WorkloadKey{Namespace: "shop", Labels: flows.NewLabels("k8s:app=web")}.String()]
	var got []uint16
	for _, e := range es {
		if e.Collapsed || e.Counts.Total() != 2 {
			t.Errorf("edge to port %d: collapsed %t, %d flows; want one port, 2 flows", e.Port, e.Collapsed, e.Counts.Total())
		}
		got = append(got, e.Port)
	}
	if !slices.Equal(got, ports) {
		t.Fatalf("merged egress ports of web = %v, want %v", got, ports)
	}
}

// Ensure HoldsEdgesOf tells a snapshot holding every edge of another (as a later state of
// one store holds an earlier one's) from one lacking an edge, a port or a peer.
func TestHoldsEdgesOf(t *testing.T) {
	web, db, cache := workload("shop", "k8s:app=web"), workload("shop", "k8s:app=db"), workload("shop", "k8s:app=cache")
	early := []*flows.Event{flow(0, web, db, flows.ProtoTCP, 5432), flow(1, web, cache, flows.ProtoTCP, 6379)}
	later := append(slices.Clone(early), flow(2, web, db, flows.ProtoTCP, 5433))
	var ranged []*flows.Event
	for p := range 6 {
		ranged = append(ranged, flow(10+p, web, db, flows.ProtoTCP, uint16(5430+p)))
	}
	get := func(sec int, path string) *flows.Event {
		return with(flow(sec, web, db, flows.ProtoTCP, 8080), func(e *flows.Event) {
			e.Type, e.L7 = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: "GET", Path: path}}
		})
	}
	dns := workload("kube-system", "k8s:k8s-app=kube-dns")
	cfg := Config{MaxPorts: 4}
	for _, c := range []struct {
		name      string
		have, old []*flows.Event
		want      bool
	}{
		{"HTTP requests held", []*flows.Event{get(1, "/a"), get(2, "/admin")}, []*flows.Event{get(3, "/a")}, true},
		{"an HTTP path not held", []*flows.Event{get(1, "/a")}, []*flows.Event{get(2, "/a"), get(3, "/admin")}, false},
		{"DNS names held", []*flows.Event{dnsRequest(1, web, dns, "a.example"), dnsRequest(2, web, dns, "b.example")}, []*flows.Event{dnsRequest(3, web, dns, "b.example")}, true},
		{"a DNS name not held", []*flows.Event{dnsRequest(1, web, dns, "a.example")}, []*flows.Event{dnsRequest(2, web, dns, "a.example"), dnsRequest(3, web, dns, "b.example")}, false},
		{"the same flows", early, early, true},
		{"a later state", later, early, true},
		{"an earlier state", early, later, false},
		{"another peer missing", early[:1], early, false},
		{"ports held by a range", ranged, early[:1], true},
		{"a range held by a wider range", append(slices.Clone(ranged), flow(20, web, db, flows.ProtoTCP, 6000)), ranged, true},
		{"a wider range not held by a range", ranged, append(slices.Clone(ranged), flow(20, web, db, flows.ProtoTCP, 6000)), false},
		{"a range not held by ports", later, ranged, false},
		{"a range not held by its lowest port", ranged[:2], ranged, false},
		{"nothing held of nothing", nil, nil, true},
		{"nothing held", nil, early, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			have, old := aggregateOf(t, cfg, c.have), aggregateOf(t, cfg, c.old)
			if got := have.HoldsEdgesOf(old); got != c.want {
				t.Errorf("HoldsEdgesOf = %t, want %t", got, c.want)
			}
		})
	}
}
