package flowgen

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// A week of two applications, for measuring the accuracy of learned policies (issue 14):
// learn from the first days, score on the rest and on attacks. Each case is one a generator
// gets wrong when it is careless:
//
//   - canary versions: bookinfo's reviews v1, v2 and v3 run side by side and differ only in
//     their version label; all send traces to zipkin, v1 never calls ratings.
//   - quiet directions: ratings and postgres never dial out; the report CronJob is never
//     called; the gateway is reached only through the load balancer (remote-node).
//   - rollouts that change a label: on WeekCanaryDay a new Deployment reviews-v4 replaces
//     reviews-v3 (versions seen one after the other), and on WeekRolloutDay details goes from
//     version v1 to v2 in place (one Deployment, new pods).
//   - an HTTP API with IDs and query strings: orders serves /api/orders/<n>?expand=items,
//     /api/orders?page=<n>, /api/users/<uuid>/profile and /api/blobs/<sha256>; its clients
//     see every request through the proxy (an L7 visibility policy selects it), and orders
//     calls inventory over gRPC (/inventory.v1.Inventory/Reserve and Check).
//   - CronJobs: report runs every hour in fresh pods, looks orders up and fetches a page.
//
// Every pod resolves names through kube-dns (coredns forwards external names to an upstream
// resolver), and kubelet probes every server.
var (
	// WeekStart is the time of the first record of Week.
	WeekStart = time.Date(2026, 3, 9, 0, 0, 0, 0, time.UTC)
)

const (
	// WeekDays is how many days Week covers.
	WeekDays = 7
	// WeekCanaryDay is the day (from 0) reviews-v4 replaces reviews-v3.
	WeekCanaryDay = 3
	// WeekRolloutDay is the day (from 0) details is rolled out with a new version label.
	WeekRolloutDay = 5
	// weekSessions is how many user sessions reach each application per hour.
	weekSessions = 2
)

// week is the cluster of Week and WeekAttacks.
type week struct {
	g         *gen
	c         *Cluster
	w         map[string]*Workload
	dns       *Workload
	upstream  *Peer
	stripe    extPeer
	apiserver *Peer
	// ordersL7 is the visibility policy that sends orders' and inventory's ingress through
	// the proxy.
	ordersL7 []*flowpb.Policy
}

func newWeek(seed uint64, emit Emit) *week {
	g := newGen(seed, WeekStart, emit)
	c := newCluster(rand.New(rand.NewPCG(2026, 14)), []string{"worker-a", "worker-b", "worker-c"}, "10.132.0")
	k := &week{g: g, c: c, w: map[string]*Workload{}}
	add := func(name, ns, kind string, port uint16, replicas, first int, labels ...string) {
		w := &Workload{Name: name, Namespace: ns, Kind: kind, Port: port, Labels: labels}
		if ns == "bookinfo" {
			// bookinfo.yaml gives all versions of a service one account (bookinfo-reviews).
			w.ServiceAccount = "bookinfo-" + strings.TrimSuffix(strings.Split(name, "-v")[0], "-")
		}
		if port != 0 {
			w.Service = &flowpb.Service{Name: name, Namespace: ns}
		}
		k.w[name] = c.addWorkload(w, replicas, first)
	}
	k.dns = c.addWorkload(&Workload{Name: "coredns", Namespace: "kube-system", Labels: []string{"k8s-app=kube-dns"},
		Port: 53, Service: &flowpb.Service{Name: "kube-dns", Namespace: "kube-system"}}, 2, 0)
	add("gateway", "gateway", "", 8443, 2, 0, "app=gateway")
	add("productpage-v1", "bookinfo", "", 9080, 1, 0, "app=productpage", "version=v1")
	add("details", "bookinfo", "", 9080, 1, 1, "app=details", "version=v1")
	add("reviews-v1", "bookinfo", "", 9080, 1, 2, "app=reviews", "version=v1")
	add("reviews-v2", "bookinfo", "", 9080, 1, 0, "app=reviews", "version=v2")
	add("reviews-v3", "bookinfo", "", 9080, 1, 1, "app=reviews", "version=v3")
	add("ratings-v1", "bookinfo", "", 9080, 1, 2, "app=ratings", "version=v1")
	add("zipkin", "observability", "", 9411, 1, 0, "app=zipkin")
	add("web", "shop", "", 8080, 2, 1, "app=web")
	add("orders", "shop", "", 8080, 2, 2, "app=orders")
	add("inventory", "shop", "", 50051, 1, 0, "app=inventory")
	add("postgres", "shop", "StatefulSet", 5432, 1, 1, "app=postgres")
	add("report", "shop", "CronJob", 0, 1, 2, "app=report")
	k.upstream = world("1.1.1.1")
	k.stripe = extPeer{"api.stripe.com.", world("54.187.216.72", "api.stripe.com"), 443}
	k.apiserver = kubeAPIServer("172.16.0.2")
	k.ordersL7 = []*flowpb.Policy{policy("CiliumClusterwideNetworkPolicy", "", "shop-http-visibility", 2)}
	return k
}

// fqdn is the Service name of a workload as clients look it up.
func (k *week) fqdn(name string) string {
	w := k.w[name]
	return w.Service.Name + "." + w.Namespace + ".svc.cluster.local."
}

// serviceIP is the ClusterIP kube-dns answers for a workload's Service.
func (k *week) serviceIP(name string) string {
	n := 0
	for _, r := range name {
		n = (n*31 + int(r)) % 250
	}
	return fmt.Sprintf("10.96.%d.%d", 1+n%200, 10+n%240)
}

// lookup resolves name from client through the DNS proxy.
func (k *week) lookup(client *Peer, name string, ips ...string) {
	k.g.dns(client, k.dns.pick(k.g.rng), k.dns.Service, nil, name, ips)
	k.g.advance(time.Millisecond, 3*time.Millisecond)
}

// call opens one connection from a replica of client to a replica of server; requests are
// the HTTP requests the proxy reports on it ("GET /path?query"), when orders or inventory
// is the server.
func (k *week) call(client *Peer, server string, requests ...[2]string) {
	sw := k.w[server]
	c := &conn{client: client, server: sw.pick(k.g.rng), port: sw.Port, svc: sw.Service, bothEgress: true}
	var during func()
	if len(requests) > 0 {
		c.ingress, c.bothEgress = k.ordersL7, false
		during = func() {
			for _, r := range requests {
				k.g.http(c, r[0], "http://"+server+":"+fmt.Sprint(sw.Port)+r[1], 200, flowpb.Verdict_FORWARDED)
				k.g.advance(5*time.Millisecond, 50*time.Millisecond)
			}
		}
	}
	k.g.tcp(c, during)
	k.g.advance(2*time.Millisecond, 20*time.Millisecond)
}

// sha256Hex returns 64 random hex digits, the shape of a content address.
func (k *week) sha256Hex() string {
	return fmt.Sprintf("%016x%016x%016x%016x", k.g.rng.Uint64(), k.g.rng.Uint64(), k.g.rng.Uint64(), k.g.rng.Uint64())
}

// orderRequest is one request of the shop's web tier to orders.
func (k *week) orderRequest() [2]string {
	g := k.g
	switch g.rng.IntN(5) {
	case 0:
		return [2]string{"GET", fmt.Sprintf("/api/orders/%d?expand=items", 1+g.rng.IntN(99999))}
	case 1:
		return [2]string{"GET", fmt.Sprintf("/api/orders?page=%d&size=20", 1+g.rng.IntN(40))}
	case 2:
		return [2]string{"POST", "/api/orders"}
	case 3:
		return [2]string{"GET", "/api/users/" + g.uuid() + "/profile"}
	}
	return [2]string{"GET", "/api/blobs/" + k.sha256Hex()}
}

// hour emits one hour of traffic; day is the day of the week (from 0).
func (k *week) hour(day, hour int) {
	g := k.g
	resolved := map[*Peer]bool{}
	resolve := func(client *Peer, server string) {
		if !resolved[client] {
			resolved[client] = true
			k.lookup(client, k.fqdn(server), k.serviceIP(server))
		}
	}
	// kubelet probes every server replica from its own node (recorded every few hours: the
	// host is always allowed, so more of them would only make the week larger).
	for _, name := range []string{"gateway", "productpage-v1", "details", "reviews-v1", "reviews-v2", k.reviews3(day), "ratings-v1", "web", "orders", "inventory", "postgres", "zipkin"} {
		for _, p := range k.w[name].Pods {
			if hour%6 != 0 {
				break
			}
			g.tcp(&conn{client: p.Node.host(), server: p, port: k.w[name].Port}, nil)
			g.advance(time.Millisecond, 5*time.Millisecond)
		}
	}
	for range weekSessions {
		// The load balancer hands a user to the gateway from another node.
		gw := k.w["gateway"].pick(g.rng)
		lb := k.c.Nodes[(gw.Node.podNet+1)%len(k.c.Nodes)]
		g.tcp(&conn{client: lb.host(), server: gw, port: 8443}, nil)
		g.advance(time.Millisecond, 5*time.Millisecond)

		resolve(gw, "productpage-v1")
		k.call(gw, "productpage-v1")
		pp := k.w["productpage-v1"].Pods[0]
		resolve(pp, "details")
		k.call(pp, "details")
		rv := []string{"reviews-v1", "reviews-v2", k.reviews3(day)}[g.rng.IntN(3)]
		k.call(pp, rv)
		if rv != "reviews-v1" {
			rp := k.w[rv].Pods[0]
			resolve(rp, "ratings-v1")
			k.call(rp, "ratings-v1")
		}

		resolve(gw, "web")
		k.call(gw, "web")
		web := k.w["web"].pick(g.rng)
		resolve(web, "orders")
		reqs := make([][2]string, 1+g.rng.IntN(3))
		for i := range reqs {
			reqs[i] = k.orderRequest()
		}
		k.call(web, "orders", reqs...)
		ord := k.w["orders"].pick(g.rng)
		resolve(ord, "postgres")
		k.call(ord, "postgres")
		resolve(ord, "inventory")
		k.call(ord, "inventory", [2]string{"POST", []string{"/inventory.v1.Inventory/Reserve", "/inventory.v1.Inventory/Check"}[g.rng.IntN(2)]})
		if g.rng.IntN(3) == 0 {
			k.lookup(ord, k.stripe.name, k.stripe.peer.IP)
			// coredns forwards names outside the cluster upstream.
			g.udp(&conn{client: k.dns.pick(g.rng), server: k.upstream, port: 53})
			g.tcp(&conn{client: ord, server: k.stripe.peer, port: k.stripe.port}, nil)
			g.advance(time.Millisecond, 5*time.Millisecond)
		}
		g.advance(time.Minute, 10*time.Minute)
	}
	// Tracing: bookinfo's services (ratings has it off) send their spans to zipkin, so every
	// reviews version talks, and only its calls to ratings tell the versions apart.
	for _, name := range []string{"productpage-v1", "details", "reviews-v1", "reviews-v2", k.reviews3(day)} {
		p := k.w[name].Pods[0]
		resolve(p, "zipkin")
		k.call(p, "zipkin")
	}
	// The hourly report: a new Job pod each run.
	rep := k.w["report"]
	k.c.rollout(rep, 1, hour%len(k.c.Nodes))
	rp := rep.Pods[0]
	k.lookup(rp, k.fqdn("orders"), k.serviceIP("orders"))
	k.call(rp, "orders", [2]string{"GET", fmt.Sprintf("/api/orders?since=%d", WeekStart.Unix()+int64(day*86400+hour*3600))})
}

// reviews3 is the Deployment serving reviews' third version on a day.
func (k *week) reviews3(day int) string {
	if day >= WeekCanaryDay {
		return "reviews-v4"
	}
	return "reviews-v3"
}

// rollout applies WeekRolloutDay's change: details changes its version label in place.
func (k *week) rollout() {
	d := k.w["details"]
	d.Labels = []string{"app=details", "version=v2"}
	k.c.rollout(d, 1, 2)
}

// canary applies WeekCanaryDay's change: a new Deployment reviews-v4 replaces reviews-v3.
func (k *week) canary() {
	v3 := k.w["reviews-v3"]
	k.w["reviews-v4"] = k.c.addWorkload(&Workload{Name: "reviews-v4", Namespace: "bookinfo", Port: 9080, ServiceAccount: v3.ServiceAccount,
		Labels: []string{"app=reviews", "version=v4"}, Service: v3.Service}, 1, 1)
}

// Week emits WeekDays days of the two applications, hour by hour.
func Week(emit Emit) error {
	k := newWeek(14, emit)
	for day := range WeekDays {
		switch day {
		case WeekCanaryDay:
			k.canary()
		case WeekRolloutDay:
			k.rollout()
		}
		for hour := range 24 {
			k.g.now = WeekStart.Add(time.Duration(day*24+hour) * time.Hour)
			k.hour(day, hour)
		}
	}
	return k.g.err
}

// WeekAttacks emits, on the last day of Week and in the same cluster after the rollout,
// connections that no workload made during the week: what a compromised pod or an intruder
// tries. Each is one connection, some with HTTP requests the proxy reports (those are attacks
// at L7 only: the port itself is one the client uses).
func WeekAttacks(emit Emit) error {
	k := newWeek(1414, emit)
	k.canary()
	k.rollout()
	g := k.g
	g.now = WeekStart.Add((WeekDays - 1) * 24 * time.Hour).Add(12 * time.Hour)
	pod := func(name string) *Peer { return k.w[name].Pods[0] }
	tcp := func(client *Peer, server *Peer, port uint16) {
		g.tcp(&conn{client: client, server: server, port: port, bothEgress: true}, nil)
		g.advance(time.Second, time.Second)
	}
	// Canary: v1 borrows what v2 may do.
	tcp(pod("reviews-v1"), pod("ratings-v1"), 9080)
	// Quiet egress: servers that never dial out.
	tcp(pod("ratings-v1"), k.apiserver, 443)
	tcp(pod("ratings-v1"), world("203.0.113.66"), 443)
	tcp(pod("postgres"), world("198.51.100.99"), 4444)
	tcp(pod("postgres"), k.apiserver, 443)
	g.udp(&conn{client: pod("inventory"), server: k.upstream, port: 53})
	tcp(k.dns.Pods[0], world("203.0.113.66"), 443)
	// Quiet ingress: nobody calls the CronJob; the gateway is reached only through the load balancer.
	tcp(pod("details"), pod("report"), 9000)
	tcp(pod("web"), pod("report"), 8080)
	tcp(pod("orders"), pod("gateway"), 8443)
	// Lateral movement between workloads that talk, but not like this.
	tcp(pod("details"), pod("postgres"), 5432)
	tcp(pod("productpage-v1"), pod("orders"), 8080)
	tcp(pod("gateway"), pod("ratings-v1"), 9080)
	tcp(pod("reviews-v2"), pod("details"), 9080)
	tcp(pod("report"), pod("postgres"), 5432)
	tcp(pod("web"), pod("orders"), 22)
	tcp(pod("web"), pod("postgres"), 5432)
	tcp(pod("gateway"), pod("orders"), 8080)
	tcp(pod("orders"), k.apiserver, 443)
	// HTTP requests no client made, on connections it does make.
	k.call(pod("web"), "orders",
		[2]string{"DELETE", "/api/orders/42"},
		[2]string{"GET", "/api/admin/users"},
		[2]string{"GET", "/api/orders/42/cancel"},
		[2]string{"GET", "/api/users/" + g.uuid() + "/password"},
		[2]string{"PUT", "/api/blobs/" + k.sha256Hex()})
	k.call(pod("orders"), "inventory", [2]string{"POST", "/inventory.v1.Inventory/Release"}, [2]string{"GET", "/inventory.v1.Inventory/Reserve"})
	return g.err
}
