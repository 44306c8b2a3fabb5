package flowgen

import (
	"fmt"
	"math/rand/v2"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// Start times of the Online Boutique recordings: a learning day, a second day with only
// known traffic, and a third day with one new connection.
var (
	BoutiqueStart        = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	BoutiqueDay2Start    = time.Date(2026, 3, 3, 10, 0, 0, 0, time.UTC)
	BoutiqueNewConnStart = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
)

// boutique is Google's Online Boutique in namespace boutique on a three-node GKE-like
// cluster, with kube-dns, an operator in namespace ops, and the external services the shop
// talks to.
type boutique struct {
	g *gen
	c *Cluster
	w map[string]*Workload
	// calls is the service graph: client -> servers, as the shop's code calls them.
	calls map[string][]string
	// order lists the clients of calls in a fixed order (map iteration is random).
	order []string
	dns   *Workload
	// ext are the external peers by client, reached by FQDN after a DNS lookup.
	ext       map[string][]extPeer
	apiserver *Peer
	// policies present in the cluster.
	dnsVisibility, cartPolicy, redisPolicy, frontendPolicy, denyOps []*flowpb.Policy
	// frontendAudit: frontend's ingress policy is in audit mode and does not allow the
	// loadgenerator yet (day 1); fixed on later days.
	frontendAudit bool
}

type extPeer struct {
	name string // FQDN as queried, with trailing dot
	peer *Peer
	port uint16
}

// newBoutique builds the cluster from its own fixed random state, so all Boutique files
// describe the same pods, IPs and identities; seed drives the traffic, so records (UUIDs,
// ports) differ between files.
func newBoutique(seed uint64, start time.Time, emit Emit) *boutique {
	g := newGen(seed, start, emit)
	c := newCluster(rand.New(rand.NewPCG(2026, 1)), []string{
		"gke-shop-default-pool-5c2a7e1d-0fq2",
		"gke-shop-default-pool-5c2a7e1d-8hkz",
		"gke-shop-default-pool-5c2a7e1d-q7rs",
	}, "10.128.0")
	b := &boutique{g: g, c: c, w: map[string]*Workload{}}
	add := func(name, ns string, port uint16, replicas, first int, labels ...string) *Workload {
		w := &Workload{Name: name, Namespace: ns, Port: port, Labels: labels}
		if port != 0 {
			w.Service = &flowpb.Service{Name: name, Namespace: ns}
		}
		b.w[name] = c.addWorkload(w, replicas, first)
		return w
	}
	b.dns = c.addWorkload(&Workload{Name: "coredns", Namespace: "kube-system", Labels: []string{"k8s-app=kube-dns"},
		Port: 53, Service: &flowpb.Service{Name: "kube-dns", Namespace: "kube-system"}}, 2, 0)
	add("frontend", "boutique", 8080, 2, 0, "app=frontend", "app.kubernetes.io/version=v0.10.3")
	add("cartservice", "boutique", 7070, 1, 1, "app=cartservice")
	add("productcatalogservice", "boutique", 3550, 1, 2, "app=productcatalogservice")
	add("currencyservice", "boutique", 7000, 1, 0, "app=currencyservice")
	add("paymentservice", "boutique", 50051, 1, 1, "app=paymentservice")
	add("shippingservice", "boutique", 50051, 1, 2, "app=shippingservice")
	add("emailservice", "boutique", 8080, 1, 0, "app=emailservice") // Service port 5000 -> container 8080
	add("checkoutservice", "boutique", 5050, 1, 1, "app=checkoutservice")
	add("recommendationservice", "boutique", 8080, 1, 2, "app=recommendationservice")
	add("adservice", "boutique", 9555, 1, 0, "app=adservice")
	add("redis-cart", "boutique", 6379, 1, 1, "app=redis-cart")
	add("loadgenerator", "boutique", 0, 1, 2, "app=loadgenerator")
	add("boutique-operator", "ops", 0, 1, 0, "app.kubernetes.io/name=boutique-operator", "helm.sh/chart=boutique-operator-0.4.1")

	b.calls = map[string][]string{
		"loadgenerator":         {"frontend"},
		"frontend":              {"productcatalogservice", "currencyservice", "cartservice", "recommendationservice", "shippingservice", "checkoutservice", "adservice"},
		"checkoutservice":       {"productcatalogservice", "shippingservice", "paymentservice", "emailservice", "currencyservice", "cartservice"},
		"recommendationservice": {"productcatalogservice"},
		"cartservice":           {"redis-cart"},
	}
	b.order = []string{"loadgenerator", "frontend", "checkoutservice", "recommendationservice", "cartservice"}
	b.ext = map[string][]extPeer{
		"paymentservice":    {{"api.stripe.com.", world("54.187.216.72", "api.stripe.com"), 443}},
		"emailservice":      {{"smtp.sendgrid.net.", world("149.72.123.24", "smtp.sendgrid.net"), 587}},
		"frontend":          {{"metadata.google.internal.", world("169.254.169.254", "metadata.google.internal"), 80}},
		"boutique-operator": {{"api.github.com.", world("140.82.121.6", "api.github.com"), 443}},
	}
	b.apiserver = kubeAPIServer("172.16.0.2")

	b.dnsVisibility = []*flowpb.Policy{policy("CiliumClusterwideNetworkPolicy", "", "dns-visibility", 3)}
	b.cartPolicy = []*flowpb.Policy{policy("CiliumNetworkPolicy", "boutique", "cartservice", 5)}
	b.redisPolicy = []*flowpb.Policy{policy("CiliumNetworkPolicy", "boutique", "redis-cart", 5)}
	b.frontendPolicy = []*flowpb.Policy{policy("CiliumNetworkPolicy", "boutique", "frontend-ingress", 6)}
	b.denyOps = []*flowpb.Policy{policy("CiliumClusterwideNetworkPolicy", "", "deny-ops-to-boutique-data", 4)}
	b.frontendAudit = true
	return b
}

// serviceIP is the ClusterIP kube-dns answers for a workload's Service.
func (b *boutique) serviceIP(name string) string {
	n := 0
	for _, r := range name {
		n = (n*31 + int(r)) % 250
	}
	return fmt.Sprintf("10.96.%d.%d", 1+n%200, 10+n%240)
}

// ingressPolicy returns the policies allowing client -> server at the server, or nil when
// no policy selects the server.
func (b *boutique) ingressPolicy(client, server string) []*flowpb.Policy {
	switch server {
	case "cartservice":
		return b.cartPolicy
	case "redis-cart":
		return b.redisPolicy
	case "frontend":
		return b.frontendPolicy
	}
	return nil
}

// lookup resolves name from client through the DNS proxy (dns-visibility selects every
// pod in boutique and ops, with enableDefaultDeny false so it only adds visibility).
func (b *boutique) lookup(client *Peer, name string, ips ...string) {
	b.g.dns(client, b.dns.pick(b.g.rng), b.dns.Service, b.dnsVisibility, name, ips)
	b.g.advance(time.Millisecond, 3*time.Millisecond)
}

// call opens one connection from a client replica to a server replica. With resolve the
// client first looks the Service up.
func (b *boutique) call(client, server string, resolve bool) {
	cw, sw := b.w[client], b.w[server]
	cp, sp := cw.pick(b.g.rng), sw.pick(b.g.rng)
	if resolve {
		b.lookup(cp, server+"."+sw.Namespace+".svc.cluster.local.", b.serviceIP(server))
	}
	c := &conn{client: cp, server: sp, port: sw.Port, svc: sw.Service}
	pol := b.ingressPolicy(client, server)
	switch {
	case server == "frontend" && client == "loadgenerator" && b.frontendAudit:
		c.audit = true
	case pol != nil:
		c.ingress = pol
	default:
		c.bothEgress = true
	}
	var during func()
	if server == "frontend" && client == "loadgenerator" {
		// frontend's policy has an HTTP rule, so its proxy reports each request.
		during = func() {
			for range 1 + b.g.rng.IntN(3) {
				r := shopRequests[b.g.rng.IntN(len(shopRequests))]
				b.g.http(c, r[0], "http://frontend:80"+r[1], 200, flowpb.Verdict_FORWARDED)
				b.g.advance(10*time.Millisecond, 200*time.Millisecond)
			}
		}
	}
	b.g.tcp(c, during)
	b.g.advance(5*time.Millisecond, 50*time.Millisecond)
}

var shopRequests = [][2]string{
	{"GET", "/"},
	{"GET", "/product/OLJCESPC7Z"},
	{"GET", "/product/66VCHSJNUP"},
	{"POST", "/setCurrency"},
	{"POST", "/cart"},
	{"GET", "/cart"},
	{"POST", "/cart/checkout"},
}

// external reaches a client's external peers: lookup, then the connection.
func (b *boutique) external(client string, resolve bool) {
	cp := b.w[client].pick(b.g.rng)
	for _, e := range b.ext[client] {
		if resolve {
			b.lookup(cp, e.name, e.peer.IP)
		}
		b.g.tcp(&conn{client: cp, server: e.peer, port: e.port}, nil)
		b.g.advance(5*time.Millisecond, 50*time.Millisecond)
	}
}

// infra emits the traffic of the platform: kubelet probes, the load balancer's hops from
// other nodes, cilium-health, and the operator's API server watch.
func (b *boutique) infra() {
	g := b.g
	fe := b.w["frontend"]
	for _, p := range fe.Pods {
		// kubelet httpGet /_healthz; the host is always allowed to reach local endpoints.
		g.tcp(&conn{client: p.Node.host(), server: p, port: 8080}, nil)
		g.advance(time.Millisecond, 5*time.Millisecond)
	}
	redis := b.w["redis-cart"].Pods[0]
	g.tcp(&conn{client: redis.Node.host(), server: redis, port: 6379}, nil) // tcpSocket probe
	g.advance(time.Millisecond, 5*time.Millisecond)
	// A NodePort/LoadBalancer hop: the client is another node (SNAT), seen as remote-node.
	p := fe.pick(g.rng)
	other := b.c.Nodes[(p.Node.podNet+1)%len(b.c.Nodes)] // podNet is the node's index here
	g.tcp(&conn{client: other.host(), server: p, port: 8080, ingress: b.frontendPolicy}, nil)
	g.advance(time.Millisecond, 5*time.Millisecond)
	for i, n := range b.c.Nodes {
		peer := b.c.Nodes[(i+1)%len(b.c.Nodes)]
		g.ping(&conn{client: n.Health, server: peer.Health})
		g.advance(time.Millisecond, 2*time.Millisecond)
	}
	op := b.w["boutique-operator"].Pods[0]
	g.tcp(&conn{client: op, server: b.apiserver, port: 443}, nil)
	g.advance(time.Millisecond, 5*time.Millisecond)
}

// round is a browsing session, sometimes with a checkout, then a pause of half a minute or so.
func (b *boutique) round(checkout bool) {
	g := b.g
	b.call("loadgenerator", "frontend", false)
	fe := b.calls["frontend"]
	for range 1 + g.rng.IntN(3) {
		b.call("frontend", fe[g.rng.IntN(len(fe))], false)
	}
	if g.rng.IntN(3) == 0 {
		b.call("recommendationservice", "productcatalogservice", false)
	}
	b.call("cartservice", "redis-cart", false)
	if checkout {
		b.call("frontend", "checkoutservice", false)
		for _, s := range b.calls["checkoutservice"] {
			b.call("checkoutservice", s, false)
		}
		b.external("paymentservice", g.rng.IntN(2) == 0)
		b.external("emailservice", g.rng.IntN(2) == 0)
	}
	g.advance(20*time.Second, 40*time.Second)
}

// Boutique emits the learning recording: every edge of the shop once with its DNS lookup
// (in-cluster names and external FQDNs), then rounds of browsing and checkouts, platform
// traffic, two policy drops (default deny and an explicit deny rule), AUDIT verdicts on the
// frontend, and Hubble ring-buffer overflows on one node.
func Boutique(emit Emit) error {
	b := newBoutique(1, BoutiqueStart, emit)
	g := b.g
	// Start-up: each client resolves and calls each of its servers once.
	for _, client := range b.order {
		for _, server := range b.calls[client] {
			b.call(client, server, true)
		}
	}
	for _, client := range []string{"frontend", "paymentservice", "emailservice", "boutique-operator"} {
		b.external(client, true)
	}
	b.infra()
	for i := range 10 {
		b.round(i%3 == 2)
		if i%3 == 0 {
			b.infra()
		}
		switch i {
		case 3:
			// Someone debugs from the operator's pod: an explicit deny rule stops it.
			op := b.w["boutique-operator"].Pods[0]
			g.tcpDenied(&conn{client: op, server: b.w["redis-cart"].Pods[0], port: 6379, svc: b.w["redis-cart"].Service}, 2, b.denyOps)
		case 5:
			// The loadgenerator tries the cart directly; cartservice's policy does not allow it.
			lg := b.w["loadgenerator"].Pods[0]
			g.tcpDenied(&conn{client: lg, server: b.w["cartservice"].Pods[0], port: 7070, svc: b.w["cartservice"].Service}, 3, nil)
		case 6, 7:
			g.lost(b.c.Nodes[1], uint64(800+g.rng.IntN(3000)), 2*time.Second)
		case 8:
			b.external("boutique-operator", true)
		}
	}
	return g.err
}

// BoutiqueDay2 emits a day of known traffic only, after Boutique: the frontend was rolled out
// (new pod-template-hash and version label, new pods and identities), its ingress policy now
// allows the loadgenerator, and there are no drops and no lost events. Every edge it holds is
// in Boutique.
func BoutiqueDay2(emit Emit) error {
	b := newBoutique(2, BoutiqueDay2Start, emit)
	b.day2()
	for i := range 7 {
		b.round(i%3 == 1)
		if i%3 == 0 {
			b.infra()
		}
	}
	b.external("frontend", true)
	b.external("boutique-operator", true)
	return b.g.err
}

// day2 applies the changes between day one and day two.
func (b *boutique) day2() {
	fe := b.w["frontend"]
	fe.Labels = []string{"app=frontend", "app.kubernetes.io/version=v0.10.4"}
	b.c.rollout(fe, 2, 1)
	b.frontendAudit = false
	b.frontendPolicy = []*flowpb.Policy{policy("CiliumNetworkPolicy", "boutique", "frontend-ingress", 9)}
}

// BoutiqueNewConn emits known traffic (as on day two) and exactly one new connection:
// recommendationservice opens one TCP connection to the kube-apiserver on 443, an edge no
// earlier recording has. The connection is observed on the client's node only (the API
// server is outside the cluster), so it is one event after normalization and folding.
func BoutiqueNewConn(emit Emit) error {
	b := newBoutique(3, BoutiqueNewConnStart, emit)
	b.day2()
	for i := range 4 {
		b.round(i == 1)
		if i%3 == 0 {
			b.infra()
		}
		if i == 2 {
			b.g.tcp(&conn{client: b.w["recommendationservice"].Pods[0], server: b.apiserver, port: 443}, nil)
			b.g.advance(time.Second, time.Second)
		}
	}
	return b.g.err
}
