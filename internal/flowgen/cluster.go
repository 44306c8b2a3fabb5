package flowgen

import (
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
)

// ClusterStart is the default time of the first synthetic record.
var ClusterStart = time.Date(2026, 3, 5, 0, 0, 0, 0, time.UTC)

// ClusterConfig sizes a synthetic cluster (issue 10). Shares are fractions of the
// connections the generator opens; what is left after them is service-to-service traffic.
type ClusterConfig struct {
	// Seed selects the cluster and its traffic; the same config gives the same records.
	Seed  uint64
	Start time.Time
	Nodes int
	// Namespaces, each with Workloads workloads of Replicas pods.
	Namespaces int
	Workloads  int
	Replicas   int
	// Rollouts is how many times every workload is rolled out during the run: each rollout
	// brings a new pod-template-hash, new pods, IPs and identities under the same stable labels.
	Rollouts int
	// FanOut is how many servers each workload calls (mostly in its own namespace).
	FanOut int
	// Flows is the exact number of records emitted.
	Flows int
	// DNSShare of in-cluster calls start with a lookup of the Service name through the DNS proxy.
	DNSShare float64
	// ExternalShare of connections go to an external FQDN, after a lookup.
	ExternalShare float64
	// DropShare of connections go to a server the client does not usually call and are
	// dropped by policy.
	DropShare float64
	// NoiseShare of connections are kubelet probes and cilium-health pings.
	NoiseShare float64
}

// DefaultClusterConfig is a mid-sized cluster: 500 pods, 100k records.
func DefaultClusterConfig() ClusterConfig {
	return ClusterConfig{
		Seed: 10, Start: ClusterStart, Nodes: 10, Namespaces: 10, Workloads: 25, Replicas: 2,
		Rollouts: 2, FanOut: 3, Flows: 100_000,
		DNSShare: 0.1, ExternalShare: 0.05, DropShare: 0.02, NoiseShare: 0.1,
	}
}

// Validate checks the sizes and shares.
func (c ClusterConfig) Validate() error {
	var errs []error
	for _, x := range []struct {
		name string
		v    int
	}{{"nodes", c.Nodes}, {"namespaces", c.Namespaces}, {"workloads", c.Workloads}, {"replicas", c.Replicas}, {"flows", c.Flows}} {
		if x.v < 1 {
			errs = append(errs, fmt.Errorf("%s must be at least 1, got %d", x.name, x.v))
		}
	}
	if c.Rollouts < 0 || c.FanOut < 0 {
		errs = append(errs, fmt.Errorf("rollouts and fan-out must not be negative, got %d and %d", c.Rollouts, c.FanOut))
	}
	if c.Namespaces*c.Workloads > 1 && c.FanOut < 1 {
		errs = append(errs, errors.New("fan-out must be at least 1"))
	}
	sum := 0.0
	for _, s := range []float64{c.DNSShare, c.ExternalShare, c.DropShare, c.NoiseShare} {
		if s < 0 || s > 1 {
			errs = append(errs, fmt.Errorf("shares must be within [0,1], got %v", s))
		}
		sum += s
	}
	if sum-c.DNSShare > 1 {
		errs = append(errs, fmt.Errorf("external, drop and noise shares add up to %v, more than 1", sum-c.DNSShare))
	}
	return errors.Join(errs...)
}

var workloadWords = []string{"api", "web", "orders", "payments", "users", "search", "inventory", "auth",
	"cart", "ledger", "notify", "reports", "catalog", "billing", "gateway", "worker"}

var servicePorts = []uint16{8080, 8443, 9090, 5432, 6379, 3000, 50051, 7070}

type synthWorkload struct {
	w       *Workload
	calls   []*synthWorkload
	ext     []extPeer
	ingress []*flowpb.Policy // nil: no policy selects it
}

// GenerateCluster emits cfg.Flows records of a synthetic cluster to emit.
func GenerateCluster(cfg ClusterConfig, emit Emit) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("cluster config: %w", err)
	}
	if cfg.Start.IsZero() {
		cfg.Start = ClusterStart
	}
	g := newGen(cfg.Seed, cfg.Start, emit)
	g.limit = cfg.Flows
	nodes := make([]string, cfg.Nodes)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("node-%03d", i)
	}
	c := newCluster(rand.New(rand.NewPCG(cfg.Seed, 2)), nodes, "10.0.0")
	dns := c.addWorkload(&Workload{Name: "coredns", Namespace: "kube-system", Labels: []string{"k8s-app=kube-dns"},
		Port: 53, Service: &flowpb.Service{Name: "kube-dns", Namespace: "kube-system"}}, 2, 0)

	var all []*synthWorkload
	byNS := make([][]*synthWorkload, cfg.Namespaces)
	for ns := range cfg.Namespaces {
		nsName := fmt.Sprintf("team-%03d", ns)
		for i := range cfg.Workloads {
			name := fmt.Sprintf("%s-%d", workloadWords[i%len(workloadWords)], i/len(workloadWords))
			tier := "backend"
			if i == 0 {
				tier = "frontend"
			}
			w := c.addWorkload(&Workload{
				Name: name, Namespace: nsName, Port: servicePorts[c.rng.IntN(len(servicePorts))],
				Labels:  []string{"app=" + name, "app.kubernetes.io/part-of=" + nsName, "tier=" + tier},
				Service: &flowpb.Service{Name: name, Namespace: nsName},
			}, cfg.Replicas, c.rng.IntN(cfg.Nodes))
			sw := &synthWorkload{w: w}
			if c.rng.IntN(2) == 0 {
				sw.ingress = []*flowpb.Policy{policy("CiliumNetworkPolicy", nsName, name+"-ingress", uint64(1+c.rng.IntN(20)))}
			}
			if c.rng.IntN(4) == 0 {
				ip := fmt.Sprintf("203.0.113.%d", 1+c.rng.IntN(254))
				host := fmt.Sprintf("api.partner-%d.example.com", c.rng.IntN(50))
				sw.ext = []extPeer{{host + ".", world(ip, host), 443}}
			}
			all = append(all, sw)
			byNS[ns] = append(byNS[ns], sw)
		}
	}
	for i, sw := range all {
		ns := byNS[i/cfg.Workloads]
		for range cfg.FanOut {
			peers := ns
			if c.rng.IntN(5) == 0 || len(ns) == 1 {
				peers = all
			}
			if s := peers[c.rng.IntN(len(peers))]; s != sw {
				sw.calls = append(sw.calls, s)
			}
		}
	}

	rolloutEvery := 0
	if cfg.Rollouts > 0 {
		rolloutEvery = cfg.Flows / (cfg.Rollouts + 1)
	}
	nextRollout := rolloutEvery
	for g.err == nil {
		if rolloutEvery > 0 && g.count >= nextRollout {
			for _, sw := range all {
				c.rollout(sw.w, cfg.Replicas, c.rng.IntN(cfg.Nodes))
			}
			nextRollout += rolloutEvery
		}
		sw := all[g.rng.IntN(len(all))]
		client := sw.w.pick(g.rng)
		r := g.rng.Float64()
		switch {
		case r < cfg.NoiseShare:
			if g.rng.IntN(2) == 0 {
				g.tcp(&conn{client: client.Node.host(), server: client, port: sw.w.Port}, nil)
			} else {
				i := g.rng.IntN(len(c.Nodes))
				g.ping(&conn{client: c.Nodes[i].Health, server: c.Nodes[(i+1)%len(c.Nodes)].Health})
			}
		case r < cfg.NoiseShare+cfg.ExternalShare && len(sw.ext) > 0:
			e := sw.ext[0]
			g.dns(client, dns.pick(g.rng), dns.Service, nil, e.name, []string{e.peer.IP})
			g.tcp(&conn{client: client, server: e.peer, port: e.port}, nil)
		case r < cfg.NoiseShare+cfg.ExternalShare+cfg.DropShare:
			s := all[g.rng.IntN(len(all))]
			if s == sw {
				continue
			}
			g.tcpDenied(&conn{client: client, server: s.w.pick(g.rng), port: s.w.Port, svc: s.w.Service}, 1+g.rng.IntN(3), nil)
		case len(sw.calls) > 0:
			s := sw.calls[g.rng.IntN(len(sw.calls))]
			if g.rng.Float64() < cfg.DNSShare {
				g.dns(client, dns.pick(g.rng), dns.Service, nil, s.w.Name+"."+s.w.Namespace+".svc.cluster.local.", []string{"10.96.0.1"})
			}
			cn := &conn{client: client, server: s.w.pick(g.rng), port: s.w.Port, svc: s.w.Service, ingress: s.ingress}
			cn.bothEgress = s.ingress == nil
			g.tcp(cn, nil)
		}
		g.advance(time.Millisecond, 10*time.Millisecond)
	}
	if errors.Is(g.err, errLimit) {
		return nil
	}
	return g.err
}

// ClusterRecords returns GenerateCluster's records as an iterator, for callers that pull
// (a replay relay's stream loop). The config is validated first.
func ClusterRecords(cfg ClusterConfig) (iter.Seq[*observerpb.GetFlowsResponse], error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
	}
	errStop := errors.New("stop")
	return func(yield func(*observerpb.GetFlowsResponse) bool) {
		// emit only fails when the consumer stops; the config was validated above.
		_ = GenerateCluster(cfg, func(r *observerpb.GetFlowsResponse) error {
			if !yield(r) {
				return errStop
			}
			return nil
		})
	}, nil
}
