package synth

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// t0 is the start of every hand-built observation window.
var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// snapBuilder builds Snapshots the way the aggregator does: both sides of a workload edge,
// workload records with counts and windows.
type snapBuilder struct {
	snap *aggregate.Snapshot
	wls  map[string]*aggregate.Workload
}

func newSnap() *snapBuilder {
	return &snapBuilder{snap: &aggregate.Snapshot{Edges: map[string][]aggregate.Edge{}, DNS: map[string][]string{}}, wls: map[string]*aggregate.Workload{}}
}

// wl declares a workload "ns/Kind/name" with labels "k=v" (k8s source added).
func wl(ns string, labels ...string) aggregate.WorkloadKey {
	ls := make([]string, len(labels))
	for i, l := range labels {
		ls[i] = "k8s:" + l
	}
	return aggregate.WorkloadKey{Namespace: ns, Labels: flows.NewLabels(ls...)}
}

func (b *snapBuilder) workload(k aggregate.WorkloadKey, owner string) *snapBuilder {
	w := b.touch(k)
	if owner != "" {
		w.Names = []string{owner}
	}
	return b
}

func (b *snapBuilder) touch(k aggregate.WorkloadKey) *aggregate.Workload {
	w, ok := b.wls[k.String()]
	if !ok {
		w = &aggregate.Workload{Key: k, FirstSeen: t0, LastSeen: t0.Add(time.Hour), Nodes: []string{"node-1"}}
		b.wls[k.String()] = w
	}
	return w
}

func peerOf(k aggregate.WorkloadKey) aggregate.Peer {
	return aggregate.Peer{Kind: aggregate.PeerWorkload, Namespace: k.Namespace, Labels: k.Labels}
}

type edgeOpt func(*aggregate.Edge)

func fwd(n uint64) edgeOpt { return func(e *aggregate.Edge) { e.Counts.Forwarded = n } }
func policyDrops(n uint64) edgeOpt {
	return func(e *aggregate.Edge) { e.Counts.Dropped += n; e.Counts.PolicyDrops += n }
}
func audit(n uint64) edgeOpt { return func(e *aggregate.Edge) { e.Counts.Audit = n } }
func dnsNames(ns ...string) edgeOpt {
	return func(e *aggregate.Edge) { e.DNSNames = slices.Sorted(slices.Values(ns)) }
}
func httpReq(method, path string) edgeOpt {
	return func(e *aggregate.Edge) {
		e.HTTP = append(e.HTTP, aggregate.HTTPSample{Method: method, Path: path, Count: 1})
	}
}
func portRange(end uint16) edgeOpt {
	return func(e *aggregate.Edge) { e.Collapsed = true; e.EndPort = end }
}

func (b *snapBuilder) add(e aggregate.Edge) {
	k := e.Workload.String()
	w := b.touch(e.Workload)
	w.Flows += e.Counts.Total()
	b.snap.Edges[k] = append(b.snap.Edges[k], e)
	b.snap.Flows += e.Counts.Total()
}

func newEdge(w aggregate.WorkloadKey, dir flows.Direction, peer aggregate.Peer, proto flows.Protocol, port uint16, opts []edgeOpt) aggregate.Edge {
	e := aggregate.Edge{EdgeKey: aggregate.EdgeKey{Workload: w, Direction: dir, Peer: peer, Proto: proto, Port: port},
		EndPort: port, FirstSeen: t0, LastSeen: t0.Add(time.Hour)}
	for _, o := range opts {
		o(&e)
	}
	return e
}

// conn records client -> server traffic as the aggregator does: an egress edge on the client
// and, when the server is a workload, an ingress edge on it. HTTP stays on the server side,
// DNS names on the client side.
func (b *snapBuilder) conn(client aggregate.WorkloadKey, server aggregate.WorkloadKey, proto flows.Protocol, port uint16, opts ...edgeOpt) *snapBuilder {
	eg := newEdge(client, flows.DirectionEgress, peerOf(server), proto, port, opts)
	in := newEdge(server, flows.DirectionIngress, peerOf(client), proto, port, opts)
	eg.HTTP = nil
	in.DNSNames = nil
	b.add(eg)
	b.add(in)
	return b
}

// out records egress from a workload to a non-workload peer.
func (b *snapBuilder) out(client aggregate.WorkloadKey, peer aggregate.Peer, proto flows.Protocol, port uint16, opts ...edgeOpt) *snapBuilder {
	b.add(newEdge(client, flows.DirectionEgress, peer, proto, port, opts))
	return b
}

// in records ingress to a workload from a non-workload peer.
func (b *snapBuilder) in(server aggregate.WorkloadKey, peer aggregate.Peer, proto flows.Protocol, port uint16, opts ...edgeOpt) *snapBuilder {
	b.add(newEdge(server, flows.DirectionIngress, peer, proto, port, opts))
	return b
}

func (b *snapBuilder) dns(ip string, names ...string) *snapBuilder {
	b.snap.DNS[ip] = names
	return b
}

func (b *snapBuilder) build() *aggregate.Snapshot {
	s := b.snap
	s.Workloads = nil
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range b.wls {
			if !yield(k) {
				return
			}
		}
	}) {
		s.Workloads = append(s.Workloads, *b.wls[k])
	}
	for k := range s.Edges {
		slices.SortFunc(s.Edges[k], func(a, c aggregate.Edge) int { return strings.Compare(edgeID(a.EdgeKey), edgeID(c.EdgeKey)) })
	}
	s.From, s.To = t0, t0.Add(time.Hour)
	return s
}

func entity(name string) aggregate.Peer {
	return aggregate.Peer{Kind: aggregate.PeerEntity, Entity: name}
}
func fqdn(name string) aggregate.Peer { return aggregate.Peer{Kind: aggregate.PeerFQDN, FQDN: name} }
func cidr(c string) aggregate.Peer    { return aggregate.Peer{Kind: aggregate.PeerCIDR, CIDR: c} }

// Workloads shared by the tests: a small shop.
var (
	frontend = wl("shop", "app=frontend", "app.kubernetes.io/version=1.2.3")
	cart     = wl("shop", "app=cart", "tier=backend")
	redis    = wl("shop", "app=redis", "version=7")
	coredns  = wl("kube-system", "k8s-app=kube-dns")
)

// shop is a snapshot exercising most constructs: workload peers, DNS, FQDN, CIDR, entities,
// ICMP, a collapsed port range, HTTP, a policy drop.
func shop() *aggregate.Snapshot {
	return newSnap().
		workload(frontend, "Deployment/frontend").
		workload(cart, "Deployment/cart").
		workload(redis, "StatefulSet/redis").
		workload(coredns, "Deployment/coredns").
		conn(frontend, cart, flows.ProtoTCP, 7070, fwd(120), httpReq("GET", "/cart/123"), httpReq("GET", "/cart/456"),
			httpReq("POST", "/cart/3fa85f64-5717-4562-b3fc-2c963f66afa6/items")).
		conn(frontend, cart, flows.ProtoTCP, 22, policyDrops(3)).
		conn(frontend, cart, flows.ProtoICMPv4, 8, fwd(2)).
		conn(cart, redis, flows.ProtoTCP, 6379, fwd(300)).
		conn(cart, redis, flows.ProtoTCP, 30000, fwd(40), portRange(30100)).
		conn(frontend, coredns, flows.ProtoUDP, 53, fwd(50), dnsNames("api.stripe.com", "cart.shop.svc.cluster.local",
			"redis.shop.svc.cluster.local", "frontend.shop.svc.cluster.local")).
		out(frontend, fqdn("api.stripe.com"), flows.ProtoTCP, 443, fwd(10)).
		out(frontend, cidr("203.0.113.7/32"), flows.ProtoTCP, 443, fwd(4)).
		out(frontend, entity("kube-apiserver"), flows.ProtoTCP, 6443, fwd(5)).
		in(frontend, entity("host"), flows.ProtoTCP, 8080, fwd(60)).
		in(frontend, entity("world"), flows.ProtoTCP, 8080, fwd(9)).
		in(redis, entity("remote-node"), flows.ProtoTCP, 6379, audit(2)).
		dns("198.51.100.10", "api.stripe.com").
		build()
}

// Istio's bookinfo: three versions of reviews run side by side and differ only in their
// version label; v1 never calls ratings.
var (
	productpage = wl("bookinfo", "app=productpage", "version=v1")
	reviewsV1   = wl("bookinfo", "app=reviews", "version=v1")
	reviewsV2   = wl("bookinfo", "app=reviews", "version=v2")
	reviewsV3   = wl("bookinfo", "app=reviews", "version=v3")
	ratings     = wl("bookinfo", "app=ratings", "version=v1")
	zipkin      = wl("observability", "app=zipkin")
)

// bookinfo is the canary case: co-existing versions, identical peers, HTTP on one port.
func bookinfo() *aggregate.Snapshot {
	b := newSnap().
		workload(productpage, "Deployment/productpage-v1").
		workload(reviewsV1, "Deployment/reviews-v1").
		workload(reviewsV2, "Deployment/reviews-v2").
		workload(reviewsV3, "Deployment/reviews-v3").
		workload(ratings, "Deployment/ratings-v1").
		workload(zipkin, "Deployment/zipkin")
	for _, r := range []aggregate.WorkloadKey{reviewsV1, reviewsV2, reviewsV3} {
		b.conn(productpage, r, flows.ProtoTCP, 9080, fwd(40), httpReq("GET", "/reviews/0"), httpReq("GET", "/reviews/17"))
		// Every version talks (here to a tracing collector), so its egress is not closed for lack of traffic.
		b.conn(r, zipkin, flows.ProtoTCP, 9411, fwd(5))
	}
	for _, r := range []aggregate.WorkloadKey{reviewsV2, reviewsV3} {
		b.conn(r, ratings, flows.ProtoTCP, 9080, fwd(20), httpReq("GET", "/ratings/0"))
	}
	return b.build()
}

// proposalOf returns the proposal for w, failing t when there is none.
func proposalOf(t *testing.T, res *Result, w aggregate.WorkloadKey) *Proposal {
	t.Helper()
	for _, p := range res.Proposals {
		if p.Workload.String() == w.String() {
			return p
		}
	}
	t.Fatalf("no policy for %s; skipped: %+v", w, res.Skipped)
	return nil
}

// dnsRulesOf returns the matchName or matchPattern of every DNS rule of p, in rule order.
func dnsRulesOf(p *Proposal) []string {
	var out []string
	for _, eg := range p.Policy.Spec.Egress {
		for _, pr := range eg.ToPorts {
			if pr.Rules != nil {
				for _, d := range pr.Rules.DNS {
					out = append(out, d.MatchName+d.MatchPattern)
				}
			}
		}
	}
	return out
}
