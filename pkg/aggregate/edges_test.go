package aggregate

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/recommender/recommender/pkg/flows"
)

// TestMateChecked sets the egress edge's mate hint (edgeRec.mate) to edges it must not be
// taken for: another client's ingress edge, another port's, another server's, edges of the
// other direction, and the right edge
// after it was removed. The next flow must still be counted in the server's ingress edge from
// this client on this port, and only there.
func TestMateChecked(t *testing.T) {
	other := workload("shop", "k8s:app=other")
	find := func(a *Aggregator, dir flows.Direction, wl, peer flows.Peer, port uint16) edgeIdx {
		for _, i := range a.liveEdges() {
			r := a.edges.at(i)
			if r.dir == dir && r.port == port && a.wlByID[r.wl].key == a.keys.workload(&wl).wkey &&
				a.peers[r.peer].key == a.keys.workload(&peer).peerKey {
				return i
			}
		}
		t.Fatalf("no %v edge of %s to %s port %d", dir, wl.Labels, peer.Labels, port)
		return 0
	}
	for _, tt := range []struct {
		name string
		mate func(a *Aggregator) edgeIdx
	}{
		{"other client", func(a *Aggregator) edgeIdx { return find(a, flows.DirectionIngress, api, other, 80) }},
		{"other port", func(a *Aggregator) edgeIdx { return find(a, flows.DirectionIngress, api, web, 443) }},
		{"egress edge", func(a *Aggregator) edgeIdx { return find(a, flows.DirectionEgress, web, api, 443) }},
		{"other server", func(a *Aggregator) edgeIdx { return find(a, flows.DirectionIngress, other, web, 80) }},
		{"reverse direction", func(a *Aggregator) edgeIdx { return find(a, flows.DirectionEgress, api, web, 80) }},
		{"removed edge", func(a *Aggregator) edgeIdx {
			// The very edge the hint named, removed: the flow makes a new one.
			i := find(a, flows.DirectionIngress, api, web, 80)
			a.dropEdge(i)
			return i
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newAgg(t, Config{})
			for _, ev := range []*flows.Event{
				flow(0, web, api, flows.ProtoTCP, 80),
				flow(1, other, api, flows.ProtoTCP, 80),
				flow(2, web, api, flows.ProtoTCP, 443),
				flow(2, web, other, flows.ProtoTCP, 80),
				flow(2, api, web, flows.ProtoTCP, 80),
			} {
				a.Add(ev)
			}
			egress, ingress := find(a, flows.DirectionEgress, web, api, 80), find(a, flows.DirectionIngress, api, web, 80)
			if got := a.edges.at(egress).mate; got != ingress {
				t.Fatalf("mate of the egress edge = %d, want the ingress edge %d", got, ingress)
			}
			wrong := tt.mate(a)
			wrongCount := a.edges.at(wrong).counts
			a.edges.at(egress).mate = wrong
			a.Add(flow(3, web, api, flows.ProtoTCP, 80))
			want := uint64(2)
			if a.edges.at(wrong).deleted {
				want = 1
			}
			ingress = find(a, flows.DirectionIngress, api, web, 80)
			if got := a.edges.at(ingress).counts.Forwarded; got != want {
				t.Errorf("ingress edge from web port 80 counts %d flows, want %d", got, want)
			}
			if got := a.edges.at(wrong).counts; got != wrongCount {
				t.Errorf("the wrong mate's counts went from %+v to %+v", wrongCount, got)
			}
			if got := a.edges.at(egress).mate; got != ingress {
				t.Errorf("mate after the flow = %d, want the ingress edge %d", got, ingress)
			}
			checkTables(t, a)
		})
	}
}

// TestBatchOrder checks that TakeBatch hands the store its edges in key order (the store then
// skips sorting them): workload keys that are prefixes of others, every kind of peer, both
// directions, several protocols, ports and collapsed groups, in batches above and below the
// size where the radix passes take over. Each entry is also byte for byte the key and value of
// the aggregator's edge (edgeKey, appendEdge), DNS names and HTTP samples included: encode
// builds them from parts.
func TestBatchOrder(t *testing.T) {
	for _, n := range []int{3, 40, 2000} {
		a := newAgg(t, Config{MaxPorts: 3})
		for i := range n {
			// Client keys that are prefixes of each other; 35 client-server pairs, each seeing
			// more ports than MaxPorts over the larger batches.
			c := workload("ns", "k8s:app=c"+strings.Repeat("x", i%7))
			s := workload(fmt.Sprintf("ns%d", i%5), "k8s:app=s")
			port := uint16(1 + (i/35)%5)
			proto := []flows.Protocol{flows.ProtoTCP, flows.ProtoUDP, flows.ProtoICMPv4}[i%3]
			a.Add(flow(i, c, s, proto, port))
			a.Add(flow(i, c, world(fmt.Sprintf("203.0.113.%d", i%200), ""), flows.ProtoTCP, 443))
			a.Add(flow(i, c, entity([]string{"host", "kube-apiserver", "world"}[i%3]), flows.ProtoTCP, port))
			a.Add(flow(i, s, world("198.51.100.1", fmt.Sprintf("api%d.example.com", i%13)), flows.ProtoTCP, 443))
			if i%9 == 0 {
				dnsServer := workload("kube-system", "k8s:k8s-app=kube-dns")
				a.Add(dnsResponse(i, c, dnsServer, fmt.Sprintf("db%d.example.com", i%4), "192.0.2.7"))
				a.Add(with(flow(i, c, s, flows.ProtoTCP, 8080), func(e *flows.Event) {
					e.Type, e.L7 = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: "GET", Path: fmt.Sprintf("/v%d/items", i%3)}}
				}))
			}
		}
		snap := a.Snapshot()
		want := encodedEdgesOf(snap.Edges)
		extras := 0
		for _, edges := range snap.Edges {
			for _, e := range edges {
				if len(e.DNSNames) > 0 || len(e.HTTP) > 0 {
					extras++
				}
			}
		}
		if extras == 0 {
			t.Fatalf("n=%d: no edge with DNS names or HTTP samples", n)
		}
		b := a.TakeBatch()
		b.encode()
		x := &b.edges
		if !x.ordered {
			t.Fatalf("n=%d: batch not ordered", n)
		}
		if x.len() != a.nEdges {
			t.Fatalf("n=%d: batch holds %d edges, the aggregator %d", n, x.len(), a.nEdges)
		}
		collapsed := 0
		for i := range x.len() {
			if k := x.key(i); k[len(k)-3] == 1 {
				collapsed++
			}
			if v, ok := want[string(x.key(i))]; !ok || !bytes.Equal(x.value(i), v) {
				t.Fatalf("n=%d: entry %q = %x, want %x (known %v)", n, x.key(i), x.value(i), v, ok)
			}
			if i > 0 && bytes.Compare(x.key(i-1), x.key(i)) >= 0 {
				t.Fatalf("n=%d: key %d %q not below key %d %q", n, i-1, x.key(i-1), i, x.key(i))
			}
		}
		if n == 2000 && collapsed == 0 {
			t.Fatalf("n=%d: no collapsed edge in the batch", n)
		}
	}
}

// TestRestoreRepairs loads stored states a consistent store never holds: edges whose workload
// has no record, and a group holding its collapsed edge and per-port edges at once (in both
// orders). The restored Aggregator holds one edge per group, counts every later flow there,
// and its next batch writes the repair: the rebuilt workload, the merged edge, the per-port
// edges deleted.
func TestRestoreRepairs(t *testing.T) {
	src := newAgg(t, Config{MaxPorts: 2})
	for i, port := range []uint16{80, 81, 82} { // the third port collapses web -> api
		src.Add(flow(i, web, api, flows.ProtoTCP, port))
	}
	stored := src.Snapshot()
	webKey := web.Namespace + "/" + web.Labels.String()
	es := stored.Edges[webKey]
	if len(es) != 1 || !es[0].Collapsed {
		t.Fatalf("web's edges = %+v, want one collapsed edge", es)
	}
	stray := es[0]
	stray.Collapsed, stray.Port, stray.EndPort, stray.Counts = false, 9000, 9000, Counts{Forwarded: 5}
	for _, tt := range []struct {
		name  string
		edges []Edge
	}{
		{"per-port edge after the collapsed one", []Edge{es[0], stray}},
		{"per-port edge before the collapsed one", []Edge{stray, es[0]}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			snap := *stored
			snap.Edges = map[string][]Edge{webKey: tt.edges, api.Namespace + "/" + api.Labels.String(): stored.Edges[api.Namespace+"/"+api.Labels.String()]}
			// web's workload record is missing: only api's is kept.
			snap.Workloads = slices.DeleteFunc(slices.Clone(stored.Workloads), func(w Workload) bool { return w.Key.String() == webKey })
			a := newAgg(t, Config{MaxPorts: 2})
			a.restore(&snap)
			checkTables(t, a)
			a.Add(flow(10, web, api, flows.ProtoTCP, 9000))
			checkTables(t, a)
			got := a.Snapshot().Edges[webKey]
			if len(got) != 1 || !got[0].Collapsed || got[0].Port != 80 || got[0].EndPort != 9000 || got[0].Counts.Forwarded != 3+5+1 {
				t.Fatalf("web's edges after restore and a flow = %+v, want one collapsed edge 80-9000 with 9 flows", got)
			}
			b := a.TakeBatch()
			b.encode()
			if len(b.DeletedEdges) != 1 || b.DeletedEdges[0].Port != 9000 || b.DeletedEdges[0].Collapsed {
				t.Errorf("deleted edges = %+v, want the per-port edge 9000", b.DeletedEdges)
			}
			if !slices.ContainsFunc(b.Workloads, func(w Workload) bool { return w.Key.String() == webKey }) {
				t.Errorf("batch workloads = %+v, want web's rebuilt record", b.Workloads)
			}
		})
	}
}

// Ensure that a batch taken with a committed batch's buffers holds none of its edges.
func TestBatchAfterRecycleEmpty(t *testing.T) {
	a := newAgg(t, Config{})
	a.Add(flow(0, web, api, flows.ProtoTCP, 80))
	b := a.TakeBatch()
	b.encode()
	if b.edges.len() != 2 {
		t.Fatalf("first batch holds %d edges, want 2", b.edges.len())
	}
	a.recycle(b)
	next := a.TakeBatch()
	if !next.Empty() || next.edges.len() != 0 {
		t.Errorf("batch after recycle: Empty() = %v, %d edges; want empty", next.Empty(), next.edges.len())
	}
	next.encode()
	if next.edges.len() != 0 {
		t.Errorf("encoded batch after recycle holds %d edges, want 0", next.edges.len())
	}
}

// Ensure that a batch encoded into a committed batch's buffers holds its own edges, exactly
// as appendEdge encodes them, and nothing of the larger batch before it.
func TestBatchAfterRecycleEncodesItsOwn(t *testing.T) {
	a := newAgg(t, Config{})
	for i := range 50 {
		a.Add(flow(i, web, api, flows.ProtoTCP, uint16(8000+i)))
	}
	first := a.TakeBatch()
	first.encode()
	if cap(first.edges.recs) == 0 {
		t.Fatal("an encoded batch hands no record buffer on to the next one")
	}
	recs, keys := first.edges.recs[:1], first.edges.keys[:1]
	a.recycle(first)
	db := workload("shop", "k8s:app=db")
	a.Add(flow(60, api, db, flows.ProtoTCP, 5432))
	b := a.TakeBatch()
	b.encode()
	x := &b.edges
	if cap(x.recs) == 0 || &x.recs[:1][0] != &recs[0] || &x.keys[0] != &keys[0] {
		t.Errorf("second batch did not reuse the first one's buffers")
	}
	want := map[string][]byte{}
	snap := a.Snapshot()
	for _, e := range append(snap.Edges[api.Namespace+"/"+api.Labels.String()], snap.Edges[db.Namespace+"/"+db.Labels.String()]...) {
		if e.Port == 5432 {
			want[string(edgeKey(&e.EdgeKey))] = appendEdge(nil, &e)
		}
	}
	if x.len() != 2 || len(want) != 2 {
		t.Fatalf("second batch holds %d edges, want the 2 of its flow (%d found in the snapshot)", x.len(), len(want))
	}
	for i := range x.len() {
		if v, ok := want[string(x.key(i))]; !ok || !bytes.Equal(x.value(i), v) {
			t.Errorf("edge %d: key %q value %x, want %x", i, x.key(i), x.value(i), v)
		}
	}
}
