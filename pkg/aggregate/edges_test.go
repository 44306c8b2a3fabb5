package aggregate

import (
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
