package aggregate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/flows"
)

var (
	web = workload("shop", "k8s:app=web")
	api = workload("shop", "k8s:app=api")
	dns = workload("kube-system", "k8s:k8s-app=kube-dns")
)

// Ensure that events fold into the documented edges, counters and bounds.
func TestAggregatorAdd(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		evs  []*flows.Event
		want []string
	}{
		{
			name: "client egress and server ingress",
			evs:  []*flows.Event{flow(1, web, api, flows.ProtoTCP, 8080), flow(2, web, api, flows.ProtoTCP, 8080)},
			want: []string{
				"workloads=2 flows=2 overflow=0",
				"shop/k8s:app=api ingress workload:shop/k8s:app=web 8080/TCP fwd=2",
				"shop/k8s:app=web egress workload:shop/k8s:app=api 8080/TCP fwd=2",
			},
		},
		{
			name: "entities and world have no edges of their own",
			evs: []*flows.Event{
				flow(1, entity("host"), web, flows.ProtoTCP, 8080),
				flow(2, web, entity("kube-apiserver"), flows.ProtoTCP, 6443),
				flow(3, world("198.51.100.9"), web, flows.ProtoTCP, 443),
				flow(4, web, world("203.0.113.7"), flows.ProtoTCP, 443),
				flow(5, web, world("2001:db8::1"), flows.ProtoTCP, 443),
			},
			want: []string{
				"workloads=1 flows=5 overflow=0",
				"shop/k8s:app=web ingress cidr:198.51.100.9/32 443/TCP fwd=1",
				"shop/k8s:app=web ingress entity:host 8080/TCP fwd=1",
				"shop/k8s:app=web egress cidr:2001:db8::1/128 443/TCP fwd=1",
				"shop/k8s:app=web egress cidr:203.0.113.7/32 443/TCP fwd=1",
				"shop/k8s:app=web egress entity:kube-apiserver 6443/TCP fwd=1",
			},
		},
		{
			name: "verdicts",
			evs: []*flows.Event{
				with(flow(1, web, api, flows.ProtoTCP, 80), func(e *flows.Event) {
					e.Verdict, e.DropReason = flows.VerdictDropped, flowpb.DropReason_POLICY_DENIED.String()
				}),
				with(flow(2, web, api, flows.ProtoTCP, 80), func(e *flows.Event) {
					e.Verdict, e.DropReason = flows.VerdictDropped, flowpb.DropReason_CT_MAP_INSERTION_FAILED.String()
				}),
				with(flow(3, web, api, flows.ProtoTCP, 80), func(e *flows.Event) { e.Verdict = flows.VerdictAudit }),
				with(flow(4, web, api, flows.ProtoTCP, 80), func(e *flows.Event) { e.Verdict = flows.VerdictRedirected }),
				with(flow(5, web, api, flows.ProtoTCP, 80), func(e *flows.Event) { e.Verdict = flows.VerdictError }),
			},
			want: []string{
				"workloads=2 flows=5 overflow=0",
				"shop/k8s:app=api ingress workload:shop/k8s:app=web 80/TCP fwd=1 drop=2 pdrop=1 audit=1 other=1",
				"shop/k8s:app=web egress workload:shop/k8s:app=api 80/TCP fwd=1 drop=2 pdrop=1 audit=1 other=1",
			},
		},
		{
			name: "hubble names make an fqdn peer, first name in order",
			evs:  []*flows.Event{flow(1, web, world("203.0.113.7", "b.example.com", "c.example.com"), flows.ProtoTCP, 443)},
			want: []string{
				"workloads=1 flows=1 overflow=0",
				"shop/k8s:app=web egress fqdn:b.example.com 443/TCP fwd=1",
			},
		},
		{
			name: "dns answer links a later flow's ip to the name",
			evs: []*flows.Event{
				dnsRequest(1, web, dns, "API.Example.com."),
				dnsResponse(1, web, dns, "api.example.com.", "203.0.113.7"),
				flow(2, web, world("203.0.113.7"), flows.ProtoTCP, 443),
				flow(3, web, world("203.0.113.8"), flows.ProtoTCP, 443),
				flow(4, world("203.0.113.7"), api, flows.ProtoTCP, 443),
			},
			want: []string{
				"workloads=3 flows=5 overflow=0",
				"kube-system/k8s:k8s-app=kube-dns ingress workload:shop/k8s:app=web 53/UDP l7=1",
				"shop/k8s:app=api ingress cidr:203.0.113.7/32 443/TCP fwd=1",
				"shop/k8s:app=web egress cidr:203.0.113.8/32 443/TCP fwd=1",
				"shop/k8s:app=web egress fqdn:api.example.com 443/TCP fwd=1",
				"shop/k8s:app=web egress workload:kube-system/k8s:k8s-app=kube-dns 53/UDP l7=1 dns=api.example.com",
			},
		},
		{
			name: "dns names bounded per edge",
			cfg:  Config{MaxDNSNames: 2},
			evs: []*flows.Event{
				dnsRequest(1, web, dns, "c.example."), dnsRequest(2, web, dns, "a.example."),
				dnsRequest(3, web, dns, "b.example."), dnsRequest(4, web, dns, "a.example."),
			},
			want: []string{
				"workloads=2 flows=4 overflow=0",
				"kube-system/k8s:k8s-app=kube-dns ingress workload:shop/k8s:app=web 53/UDP l7=4",
				"shop/k8s:app=web egress workload:kube-system/k8s:k8s-app=kube-dns 53/UDP l7=4 dns=a.example,c.example truncated",
			},
		},
		{
			name: "http samples from requests, responses ignored",
			cfg:  Config{MaxHTTPSamples: 2},
			evs: []*flows.Event{
				with(flow(1, web, api, flows.ProtoTCP, 8080), func(e *flows.Event) {
					e.Type, e.L7 = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: "GET", Path: "/v1/items"}}
				}),
				with(flow(2, web, api, flows.ProtoTCP, 8080), func(e *flows.Event) {
					e.Type, e.L7 = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: "GET", Path: "/v1/items"}}
				}),
				with(flow(2, web, api, flows.ProtoTCP, 8080), func(e *flows.Event) {
					e.Type, e.L7 = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: "GET", Path: "/v1/items", Code: 200}}
				}),
				with(flow(3, web, api, flows.ProtoTCP, 8080), func(e *flows.Event) {
					e.Type, e.L7 = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: "DELETE", Path: "/v1/items"}}
					e.Verdict, e.DeniedBy = flows.VerdictDropped, []flows.PolicyRef{{Kind: "CiliumNetworkPolicy", Name: "p"}}
				}),
				with(flow(4, web, api, flows.ProtoTCP, 8080), func(e *flows.Event) {
					e.Type, e.L7 = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: "POST", Path: "/v1/items"}}
				}),
			},
			want: []string{
				"workloads=2 flows=5 overflow=0",
				"shop/k8s:app=api ingress workload:shop/k8s:app=web 8080/TCP drop=1 pdrop=1 l7=3 http=DELETE:/v1/items:1 http=GET:/v1/items:2 truncated",
				"shop/k8s:app=web egress workload:shop/k8s:app=api 8080/TCP drop=1 pdrop=1 l7=3 http=DELETE:/v1/items:1 http=GET:/v1/items:2 truncated",
			},
		},
		{
			name: "ports collapse into one range edge, later ports widen it",
			cfg:  Config{MaxPorts: 3},
			evs: []*flows.Event{
				flow(1, web, api, flows.ProtoTCP, 9002), flow(2, web, api, flows.ProtoTCP, 9001),
				flow(3, web, api, flows.ProtoTCP, 9003), flow(4, web, api, flows.ProtoTCP, 9001),
				flow(5, web, api, flows.ProtoTCP, 9005), // the fourth port: collapse
				flow(6, web, api, flows.ProtoTCP, 8000), // widens
				flow(7, web, api, flows.ProtoUDP, 9000), // another protocol, its own edge
			},
			want: []string{
				"workloads=2 flows=7 overflow=0",
				"shop/k8s:app=api ingress workload:shop/k8s:app=web 8000-9005/TCP fwd=6",
				"shop/k8s:app=api ingress workload:shop/k8s:app=web 9000/UDP fwd=1",
				"shop/k8s:app=web egress workload:shop/k8s:app=api 8000-9005/TCP fwd=6",
				"shop/k8s:app=web egress workload:shop/k8s:app=api 9000/UDP fwd=1",
			},
		},
		{
			name: "edge cap counts overflow",
			cfg:  Config{MaxEdges: 3},
			evs: []*flows.Event{
				flow(1, web, api, flows.ProtoTCP, 80), // 2 edges
				flow(2, web, api, flows.ProtoTCP, 81), // 1 fits, 1 overflows
				flow(3, web, api, flows.ProtoTCP, 80), // existing edges still count
			},
			want: []string{
				"workloads=2 flows=3 overflow=1",
				"shop/k8s:app=api ingress workload:shop/k8s:app=web 80/TCP fwd=2",
				"shop/k8s:app=web egress workload:shop/k8s:app=api 80/TCP fwd=2",
				"shop/k8s:app=web egress workload:shop/k8s:app=api 81/TCP fwd=1",
			},
		},
		{
			name: "workload cap counts overflow",
			cfg:  Config{MaxWorkloads: 1},
			evs:  []*flows.Event{flow(1, web, api, flows.ProtoTCP, 80), flow(2, web, dns, flows.ProtoUDP, 53)},
			want: []string{
				"workloads=1 flows=2 overflow=2",
				"shop/k8s:app=web egress workload:kube-system/k8s:k8s-app=kube-dns 53/UDP fwd=1",
				"shop/k8s:app=web egress workload:shop/k8s:app=api 80/TCP fwd=1",
			},
		},
		{
			name: "unnamed world clients beyond the bound fold into world",
			cfg:  Config{MaxWorldPeers: 2},
			evs: []*flows.Event{
				flow(1, world("198.51.100.1"), web, flows.ProtoTCP, 443),
				flow(2, world("198.51.100.2"), web, flows.ProtoTCP, 443),
				flow(3, world("198.51.100.3"), web, flows.ProtoTCP, 443),
				flow(4, world("198.51.100.4"), web, flows.ProtoTCP, 443),
				flow(5, world("198.51.100.1"), web, flows.ProtoTCP, 443),
			},
			want: []string{
				"workloads=1 flows=5 overflow=0",
				"shop/k8s:app=web ingress cidr:198.51.100.1/32 443/TCP fwd=2",
				"shop/k8s:app=web ingress cidr:198.51.100.2/32 443/TCP fwd=1",
				"shop/k8s:app=web ingress entity:world 443/TCP fwd=2",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAgg(t, tt.cfg)
			for _, ev := range tt.evs {
				a.Add(ev)
			}
			checkTables(t, a)
			if got := render(a.Snapshot()); !slices.Equal(got, tt.want) {
				t.Errorf("edges:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// Ensure that recorded flows, read as production reads them (file, normalizer, folder), count
// a connection once although both ends reported it, ignore replies and keep one workload
// across pod-template-hash churn.
func TestAggregateRecording(t *testing.T) {
	webLabels := func(hash string) []string {
		return []string{"k8s:app=web", "k8s:pod-template-hash=" + hash, "k8s:io.kubernetes.pod.namespace=shop"}
	}
	apiLabels := []string{"k8s:app=api", "k8s:io.kubernetes.pod.namespace=shop"}
	conn := pbFlow{node: "node-1", srcNS: "shop", dstNS: "shop", srcLabels: webLabels("5d8f7"), dstLabels: apiLabels,
		srcIP: "10.0.1.5", dstIP: "10.0.2.9", sport: 41000, dport: 8080}
	var recs []*observerpb.GetFlowsResponse
	add := func(p pbFlow) { recs = append(recs, response(p.build())) }

	egress := conn
	egress.uuid = "a"
	add(egress)
	ingress := conn // the same connection reported by the server's node
	ingress.uuid, ingress.node, ingress.nanos = "b", "node-2", 3e6
	ingress.point = flowpb.TraceObservationPoint_TO_ENDPOINT
	add(ingress)
	reply := conn // the server's answer
	reply.uuid, reply.reply = "c", true
	reply.srcLabels, reply.dstLabels = apiLabels, webLabels("5d8f7")
	reply.srcIP, reply.dstIP, reply.sport, reply.dport = conn.dstIP, conn.srcIP, conn.dport, conn.sport
	add(reply)
	rollout := conn // a new pod of the next ReplicaSet
	rollout.uuid, rollout.sec = "d", 60
	rollout.srcLabels, rollout.srcIP, rollout.sport = webLabels("77c9b"), "10.0.1.6", 42000
	add(rollout)

	a := newAgg(t, Config{})
	drain(t, fileSource(t, writeJSONPB(t, t.TempDir(), recs)), a)
	want := []string{
		"workloads=2 flows=2 overflow=0",
		"shop/k8s:app=api ingress workload:shop/k8s:app=web 8080/TCP fwd=2",
		"shop/k8s:app=web egress workload:shop/k8s:app=api 8080/TCP fwd=2",
	}
	checkTables(t, a)
	if got := render(a.Snapshot()); !slices.Equal(got, want) {
		t.Errorf("edges:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Ensure that lost-events notices are summed per node and never create edges.
func TestAggregatorLost(t *testing.T) {
	a := newAgg(t, Config{})
	for i, n := range []string{"node-1", "node-2", "node-1"} {
		a.Add(&flows.Event{Kind: flows.KindLost, Node: n, Time: at(i), Lost: &flows.Lost{Source: "HUBBLE_RING_BUFFER", Count: 10}})
	}
	s := a.Snapshot()
	want := []NodeLost{{Node: "node-1", Lost: 20, Last: at(2)}, {Node: "node-2", Lost: 10, Last: at(1)}}
	if !slices.Equal(s.Lost, want) {
		t.Errorf("Lost = %v, want %v", s.Lost, want)
	}
	if s.Flows != 0 || len(s.Workloads) != 0 {
		t.Errorf("lost notices made flows=%d workloads=%d, want none", s.Flows, len(s.Workloads))
	}
}

// Ensure that workload bookkeeping keeps first/last seen, nodes and owner names.
func TestAggregatorWorkload(t *testing.T) {
	a := newAgg(t, Config{})
	owned := web
	owned.Workload = "Deployment/web"
	a.Add(flow(5, owned, api, flows.ProtoTCP, 80))
	a.Add(with(flow(2, web, api, flows.ProtoTCP, 80), func(e *flows.Event) { e.Node = "node-2" }))
	w, edges, ok := a.Snapshot().Workload(web.Namespace + "/" + web.Labels.String())
	if !ok {
		t.Fatal("web not found")
	}
	if w.FirstSeen != at(2) || w.LastSeen != at(5) || w.Flows != 2 ||
		!slices.Equal(w.Nodes, []string{"node-1", "node-2"}) || !slices.Equal(w.Names, []string{"Deployment/web"}) {
		t.Errorf("workload = %+v", w)
	}
	if len(edges) != 1 || edges[0].FirstSeen != at(2) || edges[0].LastSeen != at(5) {
		t.Errorf("edges = %+v", edges)
	}
	if _, _, ok := a.Snapshot().Workload("shop/k8s:app=none"); ok {
		t.Error("Workload(unknown) found something")
	}
}

// Ensure that the retention sweep removes stale edges, then workloads left without edges, then
// stale DNS answers, and that the removals reach the next batch.
func TestAggregatorExpire(t *testing.T) {
	a := newAgg(t, Config{MaxPorts: 2})
	a.Add(flow(1, web, api, flows.ProtoTCP, 80))
	a.Add(dnsResponse(1, web, dns, "old.example.", "203.0.113.1"))
	for p := range uint16(3) { // collapsed edge, seen last at 12
		a.Add(flow(10+int(p), web, dns, flows.ProtoTCP, 1000+p))
	}
	a.Add(flow(20, web, world("198.51.100.1"), flows.ProtoTCP, 443))
	a.TakeBatch()

	if n := a.Expire(at(12)); n != 2 {
		t.Errorf("Expire(12) = %d, want 2", n)
	}
	want := []string{
		"workloads=2 flows=6 overflow=0",
		"kube-system/k8s:k8s-app=kube-dns ingress workload:shop/k8s:app=web 1000-1002/TCP fwd=3",
		"shop/k8s:app=web egress cidr:198.51.100.1/32 443/TCP fwd=1",
		"shop/k8s:app=web egress workload:kube-system/k8s:k8s-app=kube-dns 1000-1002/TCP fwd=3",
	}
	s := a.Snapshot()
	if got := render(s); !slices.Equal(got, want) {
		t.Errorf("after expire:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(s.DNS) != 0 {
		t.Errorf("DNS = %v, want expired", s.DNS)
	}
	b := a.TakeBatch()
	b.encode()
	if len(b.DeletedEdges) != 2 || !slices.Equal(b.DeletedWorkloads, []string{"shop/k8s:app=api"}) ||
		!slices.Equal(b.DeletedDNS, []string{"203.0.113.1"}) || b.edges.len() != 0 {
		t.Errorf("batch after expire = %+v", b)
	}

	// A collapsed edge expires too, and its group starts afresh.
	a.Expire(at(13))
	a.Add(flow(30, web, dns, flows.ProtoTCP, 1000))
	want = []string{
		"workloads=2 flows=7 overflow=0",
		"kube-system/k8s:k8s-app=kube-dns ingress workload:shop/k8s:app=web 1000/TCP fwd=1",
		"shop/k8s:app=web egress cidr:198.51.100.1/32 443/TCP fwd=1",
		"shop/k8s:app=web egress workload:kube-system/k8s:k8s-app=kube-dns 1000/TCP fwd=1",
	}
	checkTables(t, a)
	if got := render(a.Snapshot()); !slices.Equal(got, want) {
		t.Errorf("after second expire:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Ensure that the DNS answer map stays bounded, evicting the oldest answers.
func TestAggregatorDNSBound(t *testing.T) {
	a := newAgg(t, Config{MaxDNSAnswers: 10})
	for i := range 25 {
		a.Add(dnsResponse(i, web, dns, fmt.Sprintf("h%d.example.", i), fmt.Sprintf("203.0.113.%d", i)))
	}
	s := a.Snapshot()
	if len(s.DNS) > 10 {
		t.Errorf("DNS holds %d answers, want at most 10", len(s.DNS))
	}
	if _, ok := s.DNS["203.0.113.24"]; !ok {
		t.Error("newest answer evicted")
	}
	if _, ok := s.DNS["203.0.113.0"]; ok {
		t.Error("oldest answer kept")
	}
}

// Ensure that reaching a cap is counted in the overflow metric, by cap.
func TestAggregatorOverflowMetric(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	a, err := NewAggregator(Config{MaxEdges: 1}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	a.Add(flow(1, web, api, flows.ProtoTCP, 80))
	a.Add(flow(2, web, api, flows.ProtoTCP, 81))
	if got := gather(t, reg, "recommender_aggregate_overflow_total", "cap", "edges"); got != 3 {
		t.Errorf("recommender_aggregate_overflow_total{cap=edges} = %v, want 3", got)
	}
}

// Ensure that invalid bounds are refused.
func TestConfigValidate(t *testing.T) {
	if _, err := NewAggregator(Config{MaxPorts: -1}, nil, nil); err == nil {
		t.Error("NewAggregator(MaxPorts: -1) succeeded")
	}
}

// Ensure that a caller reusing one label slice for different workloads still gets them apart:
// the key cache must not trust the slice's identity alone.
func TestAggregatorReusedLabels(t *testing.T) {
	a := newAgg(t, Config{})
	labels := flows.Labels{"k8s:app=one"}
	p := flows.Peer{Kind: flows.PeerWorkload, Namespace: "ns", Labels: labels}
	a.Add(flow(1, p, api, flows.ProtoTCP, 80))
	labels[0] = "k8s:app=two"
	a.Add(flow(2, p, api, flows.ProtoTCP, 80))
	want := []string{
		"workloads=3 flows=2 overflow=0",
		"ns/k8s:app=one egress workload:shop/k8s:app=api 80/TCP fwd=1",
		"ns/k8s:app=two egress workload:shop/k8s:app=api 80/TCP fwd=1",
		"shop/k8s:app=api ingress workload:ns/k8s:app=one 80/TCP fwd=1",
		"shop/k8s:app=api ingress workload:ns/k8s:app=two 80/TCP fwd=1",
	}
	checkTables(t, a)
	if got := render(a.Snapshot()); !slices.Equal(got, want) {
		t.Errorf("edges:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Ensure AddAll folds a source to its end and returns a source's error, not io.EOF.
func TestAddAll(t *testing.T) {
	web := flows.Peer{Kind: flows.PeerWorkload, Namespace: "shop", Labels: flows.NewLabels("k8s:app=web")}
	db := flows.Peer{Kind: flows.PeerWorkload, Namespace: "shop", Labels: flows.NewLabels("k8s:app=db")}
	a := newAgg(t, Config{})
	if err := a.AddAll(t.Context(), &sliceSource{evs: []*flows.Event{flow(1, web, db, flows.ProtoTCP, 5432)}}); err != nil {
		t.Fatalf("AddAll = %v, want nil at the end of the source", err)
	}
	if w, e := a.Len(); w != 2 || e != 2 {
		t.Errorf("after AddAll: %d workloads, %d edges; want 2, 2", w, e)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := a.AddAll(ctx, &sliceSource{}); !errors.Is(err, context.Canceled) {
		t.Errorf("AddAll on a failing source = %v, want its error", err)
	}
}

// httpRequest is an HTTP request from client to server on 8080/TCP.
func httpRequest(sec int, client, server flows.Peer, method, path string) *flows.Event {
	return with(flow(sec, client, server, flows.ProtoTCP, 8080), func(e *flows.Event) {
		e.Type, e.L7 = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: method, Path: path}}
	})
}

// Ensure HTTP samples are kept per method and path shape: paths that differ only in IDs are
// one sample (issue 14: an API with IDs in its paths left every port at L4), while distinct
// shapes still count against the bound.
func TestAggregatorHTTPShapes(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		evs  func() []*flows.Event
		want string // the server's ingress edge
	}{
		{
			name: "10,000 ids in one route are one sample",
			cfg:  Config{MaxHTTPSamples: 2},
			evs: func() []*flows.Event {
				var evs []*flows.Event
				for i := range 10_000 {
					evs = append(evs, httpRequest(i, web, api, "GET", fmt.Sprintf("/api/orders/%d", 10_000-i)))
				}
				return evs
			},
			want: "shop/k8s:app=api ingress workload:shop/k8s:app=web 8080/TCP l7=10000 http=GET:/api/orders/1:10000",
		},
		{
			name: "uuids, digests and numbers by route; the smallest path stands for its shape",
			cfg:  Config{MaxHTTPSamples: 3},
			evs: func() []*flows.Event {
				return []*flows.Event{
					httpRequest(1, web, api, "PUT", "/carts/3fa85f64-5717-4562-b3fc-2c963f66afa6/items/7"),
					httpRequest(2, web, api, "PUT", "/carts/00000000-1111-4222-8333-444444444444/items/12"),
					httpRequest(3, web, api, "GET", "/blobs/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
					httpRequest(4, web, api, "GET", "/blobs/"+strings.Repeat("a1", 32)),
					httpRequest(5, web, api, "GET", "/blobs/42"),
					httpRequest(6, web, api, "GET", "/blobs/7"),
				}
			},
			want: "shop/k8s:app=api ingress workload:shop/k8s:app=web 8080/TCP l7=6" +
				" http=GET:/blobs/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08:2 http=GET:/blobs/42:2" + // {hex64} sorts before {int}
				" http=PUT:/carts/00000000-1111-4222-8333-444444444444/items/12:2",
		},
		{
			name: "distinct shapes truncate at the bound",
			cfg:  Config{MaxHTTPSamples: 2},
			evs: func() []*flows.Event {
				return []*flows.Event{
					httpRequest(1, web, api, "GET", "/api/orders/1"),
					httpRequest(2, web, api, "GET", "/api/users/1"),
					httpRequest(3, web, api, "GET", "/api/users/2"),    // a known shape: counted
					httpRequest(4, web, api, "GET", "/api/invoices/1"), // a third shape: dropped
					httpRequest(5, web, api, "GET", "/api/orders/2"),
				}
			},
			want: "shop/k8s:app=api ingress workload:shop/k8s:app=web 8080/TCP l7=5 http=GET:/api/orders/1:2 http=GET:/api/users/1:2 truncated",
		},
		{
			name: "methods and grpc methods stay exact",
			cfg:  Config{MaxHTTPSamples: 10},
			evs: func() []*flows.Event {
				return []*flows.Event{
					httpRequest(1, web, api, "GET", "/api/orders/1"),
					httpRequest(2, web, api, "DELETE", "/api/orders/2"),
					httpRequest(3, web, api, "POST", "/pkg.Svc/deadbeefdeadbeef1234"),
					httpRequest(4, web, api, "POST", "/pkg.Svc/deadbeefdeadbeef5678"),
				}
			},
			want: "shop/k8s:app=api ingress workload:shop/k8s:app=web 8080/TCP l7=4 http=DELETE:/api/orders/2:1 http=GET:/api/orders/1:1" +
				" http=POST:/pkg.Svc/deadbeefdeadbeef1234:1 http=POST:/pkg.Svc/deadbeefdeadbeef5678:1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAgg(t, tc.cfg)
			for _, ev := range tc.evs() {
				a.Add(ev)
			}
			edges := a.Snapshot().Edges[api.Key()]
			if len(edges) != 1 {
				t.Fatalf("server has %d edges, want 1", len(edges))
			}
			if got := renderEdge(&edges[0]); got != tc.want {
				t.Errorf("edge:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// Ensure a store written when samples were kept per raw path loads as one sample per shape,
// so later requests of a stored route find their sample instead of taking a new one.
func TestAggregatorRestoresSamplesByShape(t *testing.T) {
	a := newAgg(t, Config{MaxHTTPSamples: 2})
	for i := range 2 {
		a.Add(httpRequest(i, web, api, "GET", fmt.Sprintf("/api/orders/%d", i)))
	}
	snap := a.Snapshot()
	// As an older aggregator stored them: sorted by path, one per path.
	for _, es := range snap.Edges {
		for i := range es {
			es[i].HTTP = []HTTPSample{{Method: "GET", Path: "/api/orders/10", Count: 1}, {Method: "GET", Path: "/api/orders/9", Count: 1}}
		}
	}
	b := newAgg(t, Config{MaxHTTPSamples: 2})
	b.restore(snap)
	b.Add(httpRequest(3, web, api, "GET", "/api/orders/8"))
	b.Add(httpRequest(4, web, api, "GET", "/api/users/8"))
	got := renderEdge(&b.Snapshot().Edges[api.Key()][0])
	want := "shop/k8s:app=api ingress workload:shop/k8s:app=web 8080/TCP l7=4 http=GET:/api/orders/10:3 http=GET:/api/users/8:1"
	if got != want {
		t.Errorf("edge:\n%s\nwant:\n%s", got, want)
	}
}
