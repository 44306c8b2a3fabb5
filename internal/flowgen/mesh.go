package flowgen

import (
	"fmt"
	"os"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// MeshStart is the time of the first record of Mesh.
var MeshStart = time.Date(2026, 3, 2, 11, 0, 0, 0, time.UTC)

// Mesh clusters, as cluster.name and the prefix Hubble Relay gives their node names.
const (
	MeshEast = "east"
	MeshWest = "west"
)

// Mesh emits a two-cluster ClusterMesh (issue 16) as one Hubble Relay of the mesh reports it:
// nodes of both clusters ("east/node-1", "west/node-1"), identity labels carrying
// k8s:io.cilium.k8s.policy.cluster, and endpoints of the other cluster with their labels.
//
//	east: shop/frontend (app=frontend, 80), shop/cart (app=cart, 8080), kube-system/coredns
//	west: shop/cart (app=cart, 8080: the same labels as east's, a global service),
//	      shop/redis (app=redis, 6379), ops/prober (app=prober), kube-system/coredns
//
// Connections: east frontend -> east cart and -> west cart (failover); east cart -> west
// redis; west cart -> west redis; west prober -> east frontend; every pod resolves names with
// its own cluster's CoreDNS; cilium-health between the nodes of each cluster. A daemon for
// east must propose policies for east's workloads only, with west's peers selected by their
// cluster.
func Mesh(emit Emit) error {
	g := newGen(2026, MeshStart, emit)
	east := newCluster(g.rng, []string{MeshEast + "/node-1", MeshEast + "/node-2"}, "172.20.0")
	east.name, east.idBase = MeshEast, 1<<16
	west := newCluster(g.rng, []string{MeshWest + "/node-1", MeshWest + "/node-2"}, "172.21.0")
	west.name, west.idBase = MeshWest, 2<<16
	for _, n := range west.Nodes {
		n.podNet += 100 // pod CIDRs must not overlap in a mesh
		n.Health.IP = fmt.Sprintf("10.244.%d.250", n.podNet)
	}

	dnsSvc := &flowpb.Service{Name: "kube-dns", Namespace: "kube-system"}
	eastDNS := east.addWorkload(&Workload{Name: "coredns", Namespace: "kube-system", Labels: []string{"k8s-app=kube-dns"}, Port: 53, Service: dnsSvc}, 1, 0)
	westDNS := west.addWorkload(&Workload{Name: "coredns", Namespace: "kube-system", Labels: []string{"k8s-app=kube-dns"}, Port: 53, Service: dnsSvc}, 1, 0)
	cartSvc := &flowpb.Service{Name: "cart", Namespace: "shop"}
	frontend := east.addWorkload(&Workload{Name: "frontend", Namespace: "shop", Labels: []string{"app=frontend"}, Port: 80,
		Service: &flowpb.Service{Name: "frontend", Namespace: "shop"}}, 2, 0)
	eastCart := east.addWorkload(&Workload{Name: "cart", Namespace: "shop", Labels: []string{"app=cart"}, Port: 8080, Service: cartSvc}, 1, 1)
	westCart := west.addWorkload(&Workload{Name: "cart", Namespace: "shop", Labels: []string{"app=cart"}, Port: 8080, Service: cartSvc}, 1, 0)
	redis := west.addWorkload(&Workload{Name: "redis", Namespace: "shop", Labels: []string{"app=redis"}, Port: 6379,
		Service: &flowpb.Service{Name: "redis", Namespace: "shop"}}, 1, 1)
	prober := west.addWorkload(&Workload{Name: "prober", Namespace: "ops", Labels: []string{"app=prober"}}, 1, 1)

	lookup := func(client *Peer, dns *Workload) {
		g.udp(&conn{client: client, server: dns.pick(g.rng), port: 53, svc: dns.Service})
		g.advance(time.Millisecond, 2*time.Millisecond)
	}
	call := func(client *Peer, server *Workload, dns *Workload) {
		lookup(client, dns)
		g.tcp(&conn{client: client, server: server.pick(g.rng), port: server.Port, svc: server.Service}, nil)
		g.advance(time.Second, 2*time.Second)
	}
	for range 5 {
		for _, f := range frontend.Pods {
			call(f, eastCart, eastDNS)
			call(f, westCart, eastDNS)
		}
		call(eastCart.Pods[0], redis, eastDNS)
		call(westCart.Pods[0], redis, westDNS)
		call(prober.Pods[0], frontend, westDNS)
		for _, c := range []*Cluster{east, west} {
			a, b := c.Nodes[0], c.Nodes[1]
			g.ping(&conn{client: a.Health, server: b.Health})
			g.advance(time.Millisecond, time.Millisecond)
		}
		g.advance(20*time.Second, 10*time.Second)
	}
	return g.err
}

// WriteMesh writes Mesh to a file at path as `hubble observe -o jsonpb` against the mesh's
// relay would.
func WriteMesh(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := Mesh(JSONL(f)); err != nil {
		f.Close()
		return fmt.Errorf("write mesh recording %s: %w", path, err)
	}
	return f.Close()
}
