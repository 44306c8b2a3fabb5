package synth

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// randomSnapshot builds a snapshot of a few namespaces and workloads talking to each other,
// to entities, names and addresses, with a mix of verdicts, ranges, ICMP and HTTP.
func randomSnapshot(r *rand.Rand) *aggregate.Snapshot {
	b := newSnap()
	var wls []aggregate.WorkloadKey
	seen := map[string]bool{}
	for range 2 + r.IntN(7) {
		ns := []string{"a", "b", "c"}[r.IntN(3)]
		labels := []string{fmt.Sprintf("app=w%d", r.IntN(4))}
		if r.IntN(2) == 0 {
			labels = append(labels, []string{"tier=x", "tier=y", "role=canary"}[r.IntN(3)])
		}
		k := wl(ns, labels...)
		if seen[k.String()] {
			continue
		}
		seen[k.String()] = true
		if r.IntN(3) == 0 {
			k = wl(ns, append(labels, "version=v"+fmt.Sprint(r.IntN(3)))...)
		}
		wls = append(wls, k)
		b.workload(k, "")
	}
	protos := []flows.Protocol{flows.ProtoTCP, flows.ProtoTCP, flows.ProtoUDP, flows.ProtoICMPv4}
	for range 3 + r.IntN(12) {
		c, s := wls[r.IntN(len(wls))], wls[r.IntN(len(wls))]
		proto := protos[r.IntN(len(protos))]
		port := uint16(1 + r.IntN(9000))
		if proto == flows.ProtoICMPv4 {
			port = 8
		}
		var opts []edgeOpt
		switch r.IntN(6) {
		case 0:
			opts = append(opts, policyDrops(uint64(1+r.IntN(5))))
		case 1:
			opts = append(opts, audit(uint64(1+r.IntN(5))))
		default:
			opts = append(opts, fwd(uint64(1+r.IntN(50))))
		}
		if proto == flows.ProtoTCP && r.IntN(4) == 0 {
			opts = append(opts, portRange(port+uint16(r.IntN(200))))
		}
		if proto == flows.ProtoTCP && r.IntN(3) == 0 {
			opts = append(opts, httpReq("GET", fmt.Sprintf("/items/%d", r.IntN(1000))), httpReq("POST", "/orders"))
		}
		b.conn(c, s, proto, port, opts...)
	}
	for range r.IntN(5) {
		w := wls[r.IntN(len(wls))]
		port := uint16(1 + r.IntN(9000))
		switch r.IntN(4) {
		case 0:
			b.out(w, fqdn(fmt.Sprintf("svc%d.example.com", r.IntN(3))), flows.ProtoTCP, port, fwd(3))
		case 1:
			b.out(w, cidr(fmt.Sprintf("198.51.100.%d/32", r.IntN(250))), flows.ProtoTCP, port, fwd(3))
		case 2:
			b.in(w, entity([]string{"host", "remote-node", "health"}[r.IntN(3)]), flows.ProtoTCP, port, fwd(3))
		case 3:
			b.out(w, entity("kube-apiserver"), flows.ProtoTCP, 6443, fwd(3))
		}
	}
	return b.build()
}

func endOf(w aggregate.WorkloadKey) end { return end{ns: w.Namespace, labels: w.Labels} }

func peerEnd(p aggregate.Peer) end {
	switch p.Kind {
	case aggregate.PeerWorkload:
		return end{ns: p.Namespace, labels: p.Labels}
	case aggregate.PeerEntity:
		return end{entity: p.Entity}
	case aggregate.PeerFQDN:
		return end{name: p.FQDN}
	case aggregate.PeerCIDR:
		return end{ip: addrOf(p.CIDR)}
	}
	return end{}
}

// checkProperties asserts the three properties of a generated set over a snapshot:
// observed allowed traffic passes, other ports between observed workloads do not, and an
// unobserved workload gets nowhere.
func checkProperties(t *testing.T, snap *aggregate.Snapshot, cfg Config) {
	t.Helper()
	res := synthesize(t, snap, cfg)
	ps := policies(res)
	hasPolicy := map[string]bool{}
	for _, p := range res.Proposals {
		hasPolicy[p.Workload.String()] = true
	}
	type pair struct{ c, s string }
	observed := map[pair][][2]int{} // workload pair -> observed port ranges
	// allowedPair: some traffic between the pair was allowed, so both ends have rules in the
	// direction concerned (a direction with nothing allowed stays unrestricted by design).
	allowedPair := map[pair]bool{}
	for _, k := range slices.Sorted(maps.Keys(snap.Edges)) {
		for _, e := range snap.Edges[k] {
			lo, hi := int(e.Port), int(e.Port)
			if e.Collapsed {
				hi = int(e.EndPort)
			}
			if e.Peer.Kind == aggregate.PeerWorkload {
				c, s := e.Workload.String(), aggregate.WorkloadKey{Namespace: e.Peer.Namespace, Labels: e.Peer.Labels}.String()
				if e.Direction == flows.DirectionIngress {
					c, s = s, c
				}
				observed[pair{c, s}] = append(observed[pair{c, s}], [2]int{lo, hi})
				if e.Counts.Forwarded+e.Counts.Audit > 0 && e.Counts.PolicyDrops == 0 {
					allowedPair[pair{c, s}] = true
				}
			}
			if e.Counts.Forwarded+e.Counts.Audit == 0 || e.Counts.PolicyDrops > 0 {
				continue // policy-dropped edges are left to review by design (doc.go)
			}
			f := testFlow{proto: e.Proto, port: e.Port}
			if e.Direction == flows.DirectionEgress {
				f.src, f.dst = endOf(e.Workload), peerEnd(e.Peer)
			} else {
				f.src, f.dst = peerEnd(e.Peer), endOf(e.Workload)
			}
			for _, port := range []int{lo, hi} {
				f.port = uint16(port)
				if !allowed(ps, f) {
					t.Errorf("observed %s %s %s %d/%s is denied", e.Workload, e.Direction, e.Peer.Key(), port, e.Proto)
				}
			}
			if cfg.L7HTTP && e.Direction == flows.DirectionIngress {
				for _, h := range e.HTTP {
					hf := f
					hf.port, hf.method, hf.url = e.Port, h.Method, h.Path+"?page=2"
					if !allowed(ps, hf) {
						t.Errorf("observed %s from %s %s %s is denied", e.Workload, e.Peer.Key(), h.Method, h.Path)
					}
				}
			}
		}
	}
	for p, ranges := range observed {
		if !allowedPair[p] || (!hasPolicy[p.c] && !hasPolicy[p.s]) {
			continue
		}
		port := 0
		for _, cand := range []int{1, 9999, 40000, 65535} {
			if !slices.ContainsFunc(ranges, func(r [2]int) bool { return cand >= r[0] && cand <= r[1] }) {
				port = cand
				break
			}
		}
		cw, _, _ := snap.Workload(p.c)
		sw, _, _ := snap.Workload(p.s)
		f := testFlow{src: endOf(cw.Key), dst: endOf(sw.Key), proto: flows.ProtoTCP, port: uint16(port)}
		if allowed(ps, f) {
			t.Errorf("%s -> %s on never observed %d/TCP is allowed", p.c, p.s, port)
		}
	}
	for _, prop := range res.Proposals {
		if len(prop.Policy.Spec.Ingress) == 0 {
			continue
		}
		intruder := end{ns: prop.Workload.Namespace, labels: flows.NewLabels("k8s:app=intruder")}
		for _, e := range snap.Edges[prop.Workload.String()] {
			if e.Direction != flows.DirectionIngress {
				continue
			}
			if f := (testFlow{src: intruder, dst: endOf(prop.Workload), proto: e.Proto, port: e.Port}); allowed(ps, f) {
				t.Errorf("unobserved workload reaches %s on %d/%s", prop.Name, e.Port, e.Proto)
			}
		}
	}
}

// Ensure the generated set allows what was seen and nothing else between observed
// workloads, over hand-built and random snapshots.
func TestProperties(t *testing.T) {
	l7 := DefaultConfig()
	l7.L7HTTP = true
	t.Run("shop", func(t *testing.T) { checkProperties(t, shop(), DefaultConfig()) })
	t.Run("shop-l7", func(t *testing.T) { checkProperties(t, shop(), l7) })
	for seed := range uint64(200) {
		t.Run(fmt.Sprintf("random-%d", seed), func(t *testing.T) {
			snap := randomSnapshot(rand.New(rand.NewPCG(seed, 7)))
			cfg := DefaultConfig()
			cfg.L7HTTP = seed%2 == 0
			checkProperties(t, snap, cfg)
		})
	}
}

// Ensure every generated policy over random input passes validation (Synthesize refuses
// invalid ones, so a refusal here is a synthesis bug).
func TestRandomNeverRefused(t *testing.T) {
	for seed := range uint64(200) {
		res := synthesize(t, randomSnapshot(rand.New(rand.NewPCG(seed, 11))), DefaultConfig())
		for _, s := range res.Skipped {
			if s.Reason == SkipRefused {
				t.Errorf("seed %d: %s refused: %s", seed, s.Display, s.Detail)
			}
		}
	}
}
