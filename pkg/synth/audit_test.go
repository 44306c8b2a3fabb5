package synth

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/aggregate"
	policyaudit "github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
)

// This file evaluates generated policies with the project's own evaluator (pkg/audit), which
// follows Cilium's semantics, rather than with the minimal one in eval_test.go.

// auditSet compiles the proposals of a result into an audit policy set.
func auditSet(t *testing.T, res *Result) *policyaudit.PolicySet {
	t.Helper()
	set := policyaudit.NewPolicySet(policyaudit.Config{ClusterName: "default", AllowLocalhost: policyaudit.AllowLocalhostAlways})
	for _, p := range res.Proposals {
		if err := set.AddCCNP(p.Policy); err != nil {
			t.Fatalf("AddCCNP(%s): %v", p.Name, err)
		}
	}
	if w := set.Warnings(); len(w) > 0 {
		t.Fatalf("evaluator warnings: %v", w)
	}
	return set
}

func wlPeer(k aggregate.WorkloadKey) flows.Peer {
	return flows.Peer{Kind: flows.PeerWorkload, Namespace: k.Namespace, Labels: k.Labels}
}

func entPeer(name string) flows.Peer { return flows.Peer{Kind: flows.PeerEntity, Entity: name} }

func worldPeer(ip string, names ...string) flows.Peer {
	return flows.Peer{Kind: flows.PeerWorld, Entity: "world", IP: ip, Names: names}
}

// auditCase is one connection and whether the policies must let it through.
type auditCase struct {
	name     string
	src, dst flows.Peer
	proto    flows.Protocol
	port     uint16
	method   string // HTTP request seen by the proxy, optional
	path     string
	allow    bool
}

func (c auditCase) event() *flows.Event {
	ev := &flows.Event{Kind: flows.KindFlow, Src: c.src, Dst: c.dst, Proto: c.proto, Port: c.port}
	if c.method != "" {
		ev.L7 = &flows.L7{HTTP: &flows.HTTP{Method: c.method, Path: c.path}}
	}
	return ev
}

func runAuditCases(t *testing.T, set *policyaudit.PolicySet, cases []auditCase) {
	t.Helper()
	for _, c := range cases {
		v, err := set.Evaluate(c.event())
		if err != nil {
			t.Fatalf("%s: Evaluate: %v", c.name, err)
		}
		if allowed := !v.Denied(); allowed != c.allow {
			t.Errorf("%s: allowed = %t, want %t (egress %s, ingress %s)", c.name, allowed, c.allow, v.Egress, v.Ingress)
		}
	}
}

// Ensure a direction without observed traffic is closed (default deny, nothing allowed) and
// that pkg/audit evaluates the empty rule as Cilium does; --quiet-directions=open keeps the
// old behaviour.
func TestQuietDirections(t *testing.T) {
	job := wl("shop", "app=report")
	snap := newSnap().
		workload(frontend, "Deployment/frontend").
		workload(cart, "Deployment/cart").
		workload(redis, "StatefulSet/redis").
		workload(job, "CronJob/report").
		conn(frontend, cart, flows.ProtoTCP, 7070, fwd(10)).
		conn(cart, redis, flows.ProtoTCP, 6379, fwd(10)).
		conn(job, cart, flows.ProtoTCP, 7070, fwd(3)).
		in(frontend, entity("world"), flows.ProtoTCP, 8080, fwd(9)).
		build()
	observed := []auditCase{
		{name: "frontend->cart", src: wlPeer(frontend), dst: wlPeer(cart), proto: flows.ProtoTCP, port: 7070, allow: true},
		{name: "cart->redis", src: wlPeer(cart), dst: wlPeer(redis), proto: flows.ProtoTCP, port: 6379, allow: true},
		{name: "report->cart", src: wlPeer(job), dst: wlPeer(cart), proto: flows.ProtoTCP, port: 7070, allow: true},
		{name: "world->frontend", src: worldPeer("198.51.100.1"), dst: wlPeer(frontend), proto: flows.ProtoTCP, port: 8080, allow: true},
		// allow-localhost: the node reaches its pods whatever the policy says.
		{name: "host->report", src: entPeer("host"), dst: wlPeer(job), proto: flows.ProtoTCP, port: 8080, allow: true},
	}
	quiet := []auditCase{
		{name: "redis->kube-apiserver", src: wlPeer(redis), dst: entPeer("kube-apiserver"), proto: flows.ProtoTCP, port: 443},
		{name: "redis->world", src: wlPeer(redis), dst: worldPeer("203.0.113.9"), proto: flows.ProtoTCP, port: 443},
		{name: "world->report", src: worldPeer("198.51.100.1"), dst: wlPeer(job), proto: flows.ProtoTCP, port: 8080},
		{name: "remote-node->report", src: entPeer("remote-node"), dst: wlPeer(job), proto: flows.ProtoTCP, port: 8080},
	}

	t.Run("deny", func(t *testing.T) {
		res := synthesize(t, snap, DefaultConfig())
		closed := map[string][]flows.Direction{}
		for _, p := range res.Proposals {
			closed[p.Name] = p.Closed
			if len(p.Unrestricted) > 0 {
				t.Errorf("%s: Unrestricted = %v, want none with deny", p.Name, p.Unrestricted)
			}
		}
		want := map[string][]flows.Direction{
			"shop-cart":     nil,
			"shop-frontend": nil,
			"shop-redis":    {flows.DirectionEgress},
			"shop-report":   {flows.DirectionIngress},
		}
		for name, w := range want {
			if got := closed[name]; !equalDirs(got, w) {
				t.Errorf("%s: Closed = %v, want %v", name, got, w)
			}
		}
		runAuditCases(t, auditSet(t, res), append(observed, quiet...))
	})
	t.Run("open", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.QuietDirections = QuietOpen
		res := synthesize(t, snap, cfg)
		for _, p := range res.Proposals {
			if len(p.Closed) > 0 {
				t.Errorf("%s: Closed = %v, want none with open", p.Name, p.Closed)
			}
		}
		open := make([]auditCase, len(quiet))
		for i, c := range quiet {
			c.allow = true
			open[i] = c
		}
		runAuditCases(t, auditSet(t, res), append(observed, open...))
	})
}

func equalDirs(a, b []flows.Direction) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Ensure co-existing versions get selectors that tell them apart (reviews-v1 may not call
// ratings because v2 may), peers stay selected by the general selector, and a rollout to a
// new version fails open: its pods are selected by no policy and their peers allow them.
func TestCoexistingVersions(t *testing.T) {
	res := synthesize(t, bookinfo(), DefaultConfig())
	reviewsV4 := wl("bookinfo", "app=reviews", "version=v4")
	runAuditCases(t, auditSet(t, res), []auditCase{
		{name: "productpage->reviews-v1", src: wlPeer(productpage), dst: wlPeer(reviewsV1), proto: flows.ProtoTCP, port: 9080, allow: true},
		{name: "productpage->reviews-v3", src: wlPeer(productpage), dst: wlPeer(reviewsV3), proto: flows.ProtoTCP, port: 9080, allow: true},
		{name: "reviews-v2->ratings", src: wlPeer(reviewsV2), dst: wlPeer(ratings), proto: flows.ProtoTCP, port: 9080, allow: true},
		{name: "reviews-v1->ratings", src: wlPeer(reviewsV1), dst: wlPeer(ratings), proto: flows.ProtoTCP, port: 9080},
		// The rollout: v4 replaces v3 after the proposal.
		{name: "productpage->reviews-v4", src: wlPeer(productpage), dst: wlPeer(reviewsV4), proto: flows.ProtoTCP, port: 9080, allow: true},
		{name: "reviews-v4->ratings", src: wlPeer(reviewsV4), dst: wlPeer(ratings), proto: flows.ProtoTCP, port: 9080, allow: true},
		{name: "reviews-v4->kube-apiserver (unselected: fail open)", src: wlPeer(reviewsV4), dst: entPeer("kube-apiserver"), proto: flows.ProtoTCP, port: 443, allow: true},
	})
	for _, p := range res.Proposals {
		if p.Workload.Labels.String() == reviewsV1.Labels.String() {
			if got := p.Policy.Spec.EndpointSelector.MatchLabels["k8s:version"]; got != "v1" {
				t.Errorf("reviews-v1 selector %v: want k8s:version=v1 kept", p.Policy.Spec.EndpointSelector.MatchLabels)
			}
		}
		for _, eg := range p.Policy.Spec.Egress {
			for _, sel := range eg.ToEndpoints {
				if _, ok := sel.MatchLabels["k8s:version"]; ok {
					t.Errorf("%s: peer selector %v keeps the version label", p.Name, sel.MatchLabels)
				}
			}
		}
	}
}

// Ensure versions seen one after the other (a rollout that changed the label while
// observing) share one selector, so the current version stays covered and nothing of the old
// one is denied to it.
func TestRolloutVersionsShareSelector(t *testing.T) {
	b := newSnap().
		workload(productpage, "Deployment/productpage-v1").
		workload(reviewsV1, "Deployment/reviews-v1").
		workload(reviewsV2, "Deployment/reviews-v2").
		workload(ratings, "Deployment/ratings-v1").
		conn(productpage, reviewsV1, flows.ProtoTCP, 9080, fwd(10)).
		conn(productpage, reviewsV2, flows.ProtoTCP, 9080, fwd(10)).
		conn(reviewsV2, ratings, flows.ProtoTCP, 9080, fwd(10))
	b.wls[reviewsV1.String()].LastSeen = t0.Add(20 * time.Minute)
	b.wls[reviewsV2.String()].FirstSeen = t0.Add(30 * time.Minute)
	res := synthesize(t, b.build(), DefaultConfig())
	sels := map[string]string{}
	for _, p := range res.Proposals {
		sels[p.Name] = fmt.Sprint(p.Policy.Spec.EndpointSelector.MatchLabels)
	}
	if sels["bookinfo-reviews-v1"] != sels["bookinfo-reviews-v2"] {
		t.Errorf("selectors of versions seen one after the other differ: %s vs %s", sels["bookinfo-reviews-v1"], sels["bookinfo-reviews-v2"])
	}
	runAuditCases(t, auditSet(t, res), []auditCase{
		{name: "reviews-v2->ratings", src: wlPeer(reviewsV2), dst: wlPeer(ratings), proto: flows.ProtoTCP, port: 9080, allow: true},
		{name: "productpage->reviews-v2", src: wlPeer(productpage), dst: wlPeer(reviewsV2), proto: flows.ProtoTCP, port: 9080, allow: true},
	})
}

// Ensure a client that was seen resolving over UDP only may fall back to TCP, as its
// resolver's ingress allows (with and without visible lookups).
func TestDNSFallbackToTCP(t *testing.T) {
	lookups := wl("shop", "app=lookups")
	snap := newSnap().
		workload(frontend, "Deployment/frontend").
		workload(lookups, "Deployment/lookups").
		workload(coredns, "Deployment/coredns").
		conn(frontend, coredns, flows.ProtoUDP, 53, fwd(5)).
		conn(lookups, coredns, flows.ProtoUDP, 53, fwd(5), dnsNames("cart.shop.svc.cluster.local")).
		build()
	res := synthesize(t, snap, DefaultConfig())
	var cases []auditCase
	for _, c := range []aggregate.WorkloadKey{frontend, lookups} {
		for _, proto := range []flows.Protocol{flows.ProtoUDP, flows.ProtoTCP} {
			cases = append(cases, auditCase{name: c.Labels.String() + " 53/" + proto.String(), src: wlPeer(c), dst: wlPeer(coredns), proto: proto, port: 53, allow: true})
		}
	}
	cases = append(cases, auditCase{name: "frontend 5353/UDP", src: wlPeer(frontend), dst: wlPeer(coredns), proto: flows.ProtoUDP, port: 5353})
	runAuditCases(t, auditSet(t, res), cases)
}

// Ensure rules that name the same peers are merged: a client of three co-existing versions
// has one rule towards the Service's selector, not three copies.
func TestIdenticalRulesMerged(t *testing.T) {
	res := synthesize(t, bookinfo(), DefaultConfig())
	for _, p := range res.Proposals {
		for i, a := range p.Policy.Spec.Egress {
			for _, b := range p.Policy.Spec.Egress[i+1:] {
				if fmt.Sprint(a.ToEndpoints, a.ToEntities, a.ToFQDNs, a.ToCIDRSet, len(a.ICMPs) > 0) == fmt.Sprint(b.ToEndpoints, b.ToEntities, b.ToFQDNs, b.ToCIDRSet, len(b.ICMPs) > 0) {
					t.Errorf("%s: two egress rules for the same peers: %v", p.Name, a.ToEndpoints)
				}
			}
		}
		for i, a := range p.Policy.Spec.Ingress {
			for _, b := range p.Policy.Spec.Ingress[i+1:] {
				if fmt.Sprint(a.FromEndpoints, a.FromEntities, a.FromCIDRSet, len(a.ICMPs) > 0) == fmt.Sprint(b.FromEndpoints, b.FromEntities, b.FromCIDRSet, len(b.ICMPs) > 0) {
					t.Errorf("%s: two ingress rules for the same peers: %v", p.Name, a.FromEndpoints)
				}
			}
		}
		if p.Name == "bookinfo-productpage-v1" && len(p.Policy.Spec.Egress) != 1 {
			t.Errorf("%s: %d egress rules, want 1 towards app=reviews", p.Name, len(p.Policy.Spec.Egress))
		}
	}
}

// Ensure an L7 rule is not undone by an L4-only rule for the same peer and port in another
// proposed policy selecting the same pods (versions seen one after the other share a
// selector): both carry the HTTP rules, or, when one side's samples were truncated, neither
// does and both are flagged.
func TestL7NotUndoneByL4Elsewhere(t *testing.T) {
	l7 := DefaultConfig()
	l7.L7HTTP = true
	build := func(truncated bool) *aggregate.Snapshot {
		b := newSnap().
			workload(productpage, "Deployment/productpage-v1").
			workload(reviewsV1, "Deployment/reviews-v1").
			workload(reviewsV2, "Deployment/reviews-v2").
			conn(productpage, reviewsV1, flows.ProtoTCP, 9080, fwd(10), httpReq("GET", "/reviews/1"))
		v2 := []edgeOpt{fwd(10)}
		if truncated {
			v2 = append(v2, httpReq("GET", "/reviews/2"), func(e *aggregate.Edge) { e.Truncated = true })
		}
		b.conn(productpage, reviewsV2, flows.ProtoTCP, 9080, v2...)
		b.wls[reviewsV1.String()].LastSeen = t0.Add(20 * time.Minute)
		b.wls[reviewsV2.String()].FirstSeen = t0.Add(30 * time.Minute)
		return b.build()
	}
	pp := wlPeer(productpage)
	t.Run("union", func(t *testing.T) {
		res := synthesize(t, build(false), l7)
		for _, p := range res.Proposals {
			if p.Name == "bookinfo-productpage-v1" {
				continue
			}
			if r := p.Policy.Spec.Ingress[0].ToPorts[0].Rules; r == nil || len(r.HTTP) != 1 {
				t.Errorf("%s: HTTP rules %v, want 1", p.Name, r)
			}
		}
		runAuditCases(t, auditSet(t, res), []auditCase{
			{name: "GET /reviews/9 to v2", src: pp, dst: wlPeer(reviewsV2), proto: flows.ProtoTCP, port: 9080, method: "GET", path: "/reviews/9", allow: true},
			{name: "GET /admin to v2", src: pp, dst: wlPeer(reviewsV2), proto: flows.ProtoTCP, port: 9080, method: "GET", path: "/admin"},
			{name: "DELETE /reviews/1 to v1", src: pp, dst: wlPeer(reviewsV1), proto: flows.ProtoTCP, port: 9080, method: "DELETE", path: "/reviews/1"},
		})
	})
	t.Run("truncated", func(t *testing.T) {
		res := synthesize(t, build(true), l7)
		for _, p := range res.Proposals {
			if p.Name == "bookinfo-productpage-v1" {
				continue
			}
			if r := p.Policy.Spec.Ingress[0].ToPorts[0].Rules; r != nil {
				t.Errorf("%s: HTTP rules %v, want L4 only", p.Name, r)
			}
		}
		if n := countFindings(res, FindingHTTPUndone); n != 1 {
			t.Errorf("%d %s findings, want 1 (reviews-v1; v2 is flagged as truncated)", n, FindingHTTPUndone)
		}
	})
}

func countFindings(res *Result, kind FindingKind) int {
	n := 0
	for _, p := range res.Proposals {
		for _, f := range p.Review {
			if f.Kind == kind {
				n++
			}
		}
	}
	return n
}

// Ensure HTTP rules are not undone inside one policy either: two clients that render to one
// selector (co-existing versions), one seen with HTTP and one without, share the HTTP rules.
func TestL7NotUndoneWithinPolicy(t *testing.T) {
	l7 := DefaultConfig()
	l7.L7HTTP = true
	snap := newSnap().
		workload(reviewsV2, "Deployment/reviews-v2").
		workload(reviewsV3, "Deployment/reviews-v3").
		workload(ratings, "Deployment/ratings-v1").
		conn(reviewsV2, ratings, flows.ProtoTCP, 9080, fwd(10), httpReq("GET", "/ratings/1")).
		conn(reviewsV3, ratings, flows.ProtoTCP, 9080, fwd(10)).
		build()
	res := synthesize(t, snap, l7)
	runAuditCases(t, auditSet(t, res), []auditCase{
		{name: "v3 GET /ratings/7", src: wlPeer(reviewsV3), dst: wlPeer(ratings), proto: flows.ProtoTCP, port: 9080, method: "GET", path: "/ratings/7", allow: true},
		{name: "v3 DELETE /ratings/7", src: wlPeer(reviewsV3), dst: wlPeer(ratings), proto: flows.ProtoTCP, port: 9080, method: "DELETE", path: "/ratings/7"},
		{name: "v2 GET /admin", src: wlPeer(reviewsV2), dst: wlPeer(ratings), proto: flows.ProtoTCP, port: 9080, method: "GET", path: "/admin"},
	})
}

// Ensure an edge seen only through the proxy (forwarded HTTP requests, no L3/L4 record, as in
// captures of sidecar-injected pods) is allowed, so closing quiet directions does not deny it.
func TestProxyOnlyEvidenceAllows(t *testing.T) {
	proxyOnly := func(e *aggregate.Edge) { e.Counts.L7 = 1 }
	snap := newSnap().
		workload(productpage, "Deployment/productpage-v1").
		workload(reviewsV2, "Deployment/reviews-v2").
		workload(ratings, "Deployment/ratings-v1").
		conn(productpage, reviewsV2, flows.ProtoTCP, 9080, fwd(10)).
		conn(reviewsV2, ratings, flows.ProtoTCP, 9080, proxyOnly, httpReq("GET", "/ratings/0")).
		conn(productpage, ratings, flows.ProtoTCP, 9080, fwd(3)).
		build()
	res := synthesize(t, snap, DefaultConfig())
	if len(res.Proposals) != 3 {
		t.Fatalf("%d proposals, want 3 (skipped: %v)", len(res.Proposals), res.Skipped)
	}
	runAuditCases(t, auditSet(t, res), []auditCase{
		{name: "reviews-v2->ratings", src: wlPeer(reviewsV2), dst: wlPeer(ratings), proto: flows.ProtoTCP, port: 9080, allow: true},
		{name: "reviews-v2->ratings 22", src: wlPeer(reviewsV2), dst: wlPeer(ratings), proto: flows.ProtoTCP, port: 22},
	})
}

// Ensure policies learned from real captures (GKE and kind bookinfo with proxies) deny none of
// the flows they were learned from, with quiet directions closed and HTTP rules on. Each
// capture is learned on its own: they come from different clusters (kind-kind, GKE's default),
// and one daemon proposes for one cluster.
func TestRealCapturesSelfConsistent(t *testing.T) {
	for _, n := range []string{"hubble-otel-basic-sample-400-tcp-flows.jsonl", "hubble-otel-basic-sample-400-udp-flows.jsonl", "hubble-otel-basic-sample-348-http-flows.jsonl"} {
		p := realCapture(t, n)
		t.Run(n, func(t *testing.T) {
			l7 := DefaultConfig()
			l7.L7HTTP = true
			res := synthesize(t, recordingSnapshot(t, p), l7)
			set := auditSet(t, res)
			src, err := flows.NewFileSource(flows.FileConfig{Paths: []string{p}}, nil, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			evaluated := 0
			for {
				ev, err := src.Recv(t.Context())
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if ev.Kind != flows.KindFlow {
					continue
				}
				evaluated++
				if v, err := set.Evaluate(ev); err != nil || v.Denied() {
					t.Errorf("%s -> %s %s: denied (egress %s, ingress %s, err %v)", ev.Src.String(), ev.Dst.String(), ev.PortString(), v.Egress, v.Ingress, err)
				}
			}
			if evaluated == 0 || len(res.Proposals) == 0 {
				t.Errorf("%d flows evaluated against %d policies, want some of both", evaluated, len(res.Proposals))
			}
		})
	}
}

// Ensure the semantic diff (recommender diff, pull request bodies) says a quiet direction is
// closed, never "any peer on any port", and reports the change from open to closed.
func TestDiffClosedDirection(t *testing.T) {
	open := DefaultConfig()
	open.QuietDirections = QuietOpen
	old := policies(synthesize(t, shop(), open))
	cur := policies(synthesize(t, shop(), DefaultConfig()))
	var got []string
	for _, d := range Diff(old, cur) {
		if len(d.Removed) > 0 {
			t.Errorf("%s: removed %v, want nothing removed by closing", d.Name, d.Removed)
		}
		for _, c := range d.Added {
			got = append(got, d.Name+": "+c.String())
		}
	}
	want := []string{
		"kube-system-coredns: egress closed (default deny, nothing allowed)",
		"shop-redis: egress closed (default deny, nothing allowed)",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Diff(open, deny) added %q, want %q", got, want)
	}
}
