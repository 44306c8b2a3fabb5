package synth

import (
	"testing"

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
