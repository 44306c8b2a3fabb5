package flowgen

import (
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// StarwarsStart is the time of the first record of Starwars.
var StarwarsStart = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// Starwars emits Cilium's Star Wars demo (http-sw-app.yaml on a three-node kind cluster) in
// three phases, each in its own time span:
//
//  1. 09:00 no policy: tiefighter and xwing both land on the deathstar (POST
//     /v1/request-landing, port 80); with no policy on the deathstar Hubble reports both
//     ends as EGRESS.
//  2. 09:05 CiliumNetworkPolicy default/rule1 (L3/L4, org=empire to the deathstar on 80):
//     tiefighter allowed (policy-verdict with ingress_allowed_by), xwing dropped
//     (POLICY_DENIED, SYN retransmitted).
//  3. 09:10 rule1 with an HTTP rule: tiefighter's POST is forwarded by the proxy (L7 records),
//     its PUT /v1/exhaust-port is denied by the proxy (403); xwing is still dropped.
//
// Every phase also has kube-dns lookups (plain UDP, no DNS proxy in this demo) and
// cilium-health ICMP and TCP 4240 between nodes.
func Starwars(emit Emit) error {
	g := newGen(1977, StarwarsStart, emit)
	c := newCluster(g.rng, []string{"kind-control-plane", "kind-worker", "kind-worker2"}, "172.18.0")

	dns := c.addWorkload(&Workload{Name: "coredns", Namespace: "kube-system", Labels: []string{"k8s-app=kube-dns"},
		Port: 53, Service: &flowpb.Service{Name: "kube-dns", Namespace: "kube-system"}}, 2, 0)
	deathstar := c.addWorkload(&Workload{Name: "deathstar", Namespace: "default", ServiceAccount: "default",
		Labels: []string{"app.kubernetes.io/name=deathstar", "class=deathstar", "org=empire"},
		Port:   80, Service: &flowpb.Service{Name: "deathstar", Namespace: "default"}}, 2, 1)
	tiefighter := c.addWorkload(&Workload{Name: "tiefighter", Namespace: "default", Kind: "Pod", ServiceAccount: "default",
		Labels: []string{"app.kubernetes.io/name=tiefighter", "class=tiefighter", "org=empire"}}, 1, 1)
	xwing := c.addWorkload(&Workload{Name: "xwing", Namespace: "default", Kind: "Pod", ServiceAccount: "default",
		Labels: []string{"app.kubernetes.io/name=xwing", "class=xwing", "org=alliance"}}, 1, 2)

	const landing = "http://deathstar.default.svc.cluster.local/v1/request-landing"
	lookup := func(client *Workload) {
		g.udp(&conn{client: client.Pods[0], server: dns.pick(g.rng), port: 53, svc: dns.Service})
		g.advance(time.Millisecond, 2*time.Millisecond)
	}
	health := func() {
		for i, n := range c.Nodes {
			peer := c.Nodes[(i+1)%len(c.Nodes)]
			g.ping(&conn{client: n.Health, server: peer.Health})
			g.advance(time.Millisecond, time.Millisecond)
			g.tcp(&conn{client: n.Health, server: peer.Health, port: 4240}, nil)
			g.advance(time.Millisecond, time.Millisecond)
		}
	}
	rule1 := []*flowpb.Policy{policy("CiliumNetworkPolicy", "default", "rule1", 7)}
	rule1L7 := []*flowpb.Policy{policy("CiliumNetworkPolicy", "default", "rule1", 8)}

	// Phase 1: no policy.
	for range 6 {
		for _, ship := range []*Workload{tiefighter, xwing} {
			lookup(ship)
			g.tcp(&conn{client: ship.Pods[0], server: deathstar.pick(g.rng), port: 80, svc: deathstar.Service, bothEgress: true}, nil)
			g.advance(2*time.Second, 3*time.Second)
		}
		health()
		g.advance(15*time.Second, 20*time.Second)
	}

	// Phase 2: rule1 at L3/L4.
	g.now = StarwarsStart.Add(5 * time.Minute)
	for range 4 {
		lookup(tiefighter)
		g.tcp(&conn{client: tiefighter.Pods[0], server: deathstar.pick(g.rng), port: 80, svc: deathstar.Service, ingress: rule1}, nil)
		g.advance(2*time.Second, 3*time.Second)
		lookup(xwing)
		g.tcpDenied(&conn{client: xwing.Pods[0], server: deathstar.pick(g.rng), port: 80, svc: deathstar.Service}, 3, nil)
		g.advance(5*time.Second, 3*time.Second)
		health()
		g.advance(15*time.Second, 20*time.Second)
	}

	// Phase 3: rule1 with an HTTP rule.
	g.now = StarwarsStart.Add(10 * time.Minute)
	for i := range 4 {
		lookup(tiefighter)
		ct := &conn{client: tiefighter.Pods[0], server: deathstar.pick(g.rng), port: 80, svc: deathstar.Service, ingress: rule1L7}
		g.tcp(ct, func() { g.http(ct, "POST", landing, 200, flowpb.Verdict_FORWARDED) })
		g.advance(2*time.Second, 3*time.Second)
		if i%2 == 1 {
			lookup(tiefighter)
			cp := &conn{client: tiefighter.Pods[0], server: deathstar.pick(g.rng), port: 80, svc: deathstar.Service, ingress: rule1L7}
			g.tcp(cp, func() {
				g.http(cp, "PUT", "http://deathstar.default.svc.cluster.local/v1/exhaust-port", 403, flowpb.Verdict_DROPPED)
			})
			g.advance(2*time.Second, 3*time.Second)
		}
		lookup(xwing)
		g.tcpDenied(&conn{client: xwing.Pods[0], server: deathstar.pick(g.rng), port: 80, svc: deathstar.Service}, 2, nil)
		g.advance(5*time.Second, 3*time.Second)
		health()
		g.advance(15*time.Second, 20*time.Second)
	}
	return g.err
}
