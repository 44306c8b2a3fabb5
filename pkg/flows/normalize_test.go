package flows

import (
	"slices"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// Endpoints as Hubble reports them (identity labels with source prefixes).
func web() *flowpb.Endpoint {
	return &flowpb.Endpoint{ID: 101, Identity: 12345, Namespace: "shop", PodName: "web-7d9f8b6c4-x2x7k",
		Labels: []string{
			"k8s:app=web",
			"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop",
			"k8s:io.cilium.k8s.policy.cluster=default",
			"k8s:io.cilium.k8s.policy.serviceaccount=web",
			"k8s:io.kubernetes.pod.namespace=shop",
			"k8s:pod-template-hash=7d9f8b6c4",
		},
		Workloads: []*flowpb.Workload{{Name: "web", Kind: "Deployment"}},
	}
}

func api() *flowpb.Endpoint {
	return &flowpb.Endpoint{Identity: 23456, Namespace: "shop", PodName: "api-5f6d7c8b9-abcde",
		Labels: []string{
			"k8s:app=api",
			"k8s:io.cilium.k8s.policy.serviceaccount=api",
			"k8s:io.kubernetes.pod.namespace=shop",
			"k8s:pod-template-hash=5f6d7c8b9",
		},
	}
}

func kubeDNS() *flowpb.Endpoint {
	return &flowpb.Endpoint{Identity: 34567, Namespace: "kube-system",
		Labels: []string{"k8s:io.kubernetes.pod.namespace=kube-system", "k8s:k8s-app=kube-dns"}}
}

func reserved(id uint32, labels ...string) *flowpb.Endpoint {
	return &flowpb.Endpoint{Identity: id, Labels: labels}
}

var (
	webLabels = Labels{"k8s:app=web", "k8s:io.cilium.k8s.policy.cluster=default", "k8s:io.cilium.k8s.policy.serviceaccount=web"}
	apiLabels = Labels{"k8s:app=api", "k8s:io.cilium.k8s.policy.serviceaccount=api"}
)

func tcp(sport, dport uint32, flags *flowpb.TCPFlags) *flowpb.Layer4 {
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: dport, Flags: flags}}}
}

func udp(sport, dport uint32) *flowpb.Layer4 {
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: sport, DestinationPort: dport}}}
}

func icmp4(typ uint32) *flowpb.Layer4 {
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: typ}}}
}

var syn = &flowpb.TCPFlags{SYN: true}

// trace builds a forwarded trace event from src to dst.
func trace(src, dst *flowpb.Endpoint, l4 *flowpb.Layer4, mod ...func(*flowpb.Flow)) *flowpb.Flow {
	f := &flowpb.Flow{
		Time:                  timestamppb.New(t0),
		Uuid:                  "2ac9b0de-70e3-46b6-a4f9-243384528c5a",
		NodeName:              "node-a",
		Verdict:               flowpb.Verdict_FORWARDED,
		IP:                    &flowpb.IP{Source: "10.244.0.10", Destination: "10.244.1.20", IpVersion: flowpb.IPVersion_IPv4},
		L4:                    l4,
		Source:                src,
		Destination:           dst,
		Type:                  flowpb.FlowType_L3_L4,
		EventType:             &flowpb.CiliumEventType{Type: 4, SubType: 4},
		TraceObservationPoint: flowpb.TraceObservationPoint_TO_OVERLAY,
		TrafficDirection:      flowpb.TrafficDirection_EGRESS,
		IsReply:               wrapperspb.Bool(false),
	}
	for _, m := range mod {
		m(f)
	}
	return f
}

func withIsReply(v bool) func(*flowpb.Flow) {
	return func(f *flowpb.Flow) { f.IsReply = wrapperspb.Bool(v) }
}
func noIsReply(f *flowpb.Flow) { f.IsReply = nil }
func atServer(f *flowpb.Flow) {
	f.NodeName = "node-b"
	f.TraceObservationPoint = flowpb.TraceObservationPoint_TO_ENDPOINT
	f.EventType = &flowpb.CiliumEventType{Type: 4}
	f.TrafficDirection = flowpb.TrafficDirection_INGRESS
}
func swapIPs(f *flowpb.Flow) { f.IP.Source, f.IP.Destination = f.IP.Destination, f.IP.Source }

// want is the part of an Event a case checks.
type want struct {
	skip       SkipReason
	src, dst   string // Peer.Key()
	proto      Protocol
	port       uint16
	srcPort    uint16
	point      Direction
	typ        EventType
	verdict    Verdict
	dropReason string
}

func TestNormalizeFlow(t *testing.T) {
	webKey := "shop/" + webLabels.String()
	apiKey := "shop/" + apiLabels.String()
	dnsKey := "kube-system/k8s:k8s-app=kube-dns"
	cases := []struct {
		name string
		flow *flowpb.Flow
		want want
	}{
		{
			name: "SYN at the client's egress",
			flow: trace(web(), api(), tcp(43210, 8080, syn)),
			want: want{src: webKey, dst: apiKey, proto: ProtoTCP, port: 8080, srcPort: 43210, point: DirectionEgress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			name: "SYN at the server's ingress",
			flow: trace(web(), api(), tcp(43210, 8080, syn), atServer),
			want: want{src: webKey, dst: apiKey, proto: ProtoTCP, port: 8080, srcPort: 43210, point: DirectionIngress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			// With no policy on the destination Hubble reports the server's side as EGRESS too:
			// client and server still come from the packet, not from traffic_direction.
			name: "both ends EGRESS: server side",
			flow: trace(web(), api(), tcp(43210, 8080, syn), atServer, func(f *flowpb.Flow) { f.TrafficDirection = flowpb.TrafficDirection_EGRESS }),
			want: want{src: webKey, dst: apiKey, proto: ProtoTCP, port: 8080, srcPort: 43210, point: DirectionIngress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			name: "ACK of an established connection, is_reply false",
			flow: trace(web(), api(), tcp(43210, 8080, &flowpb.TCPFlags{ACK: true})),
			want: want{src: webKey, dst: apiKey, proto: ProtoTCP, port: 8080, srcPort: 43210, point: DirectionEgress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			name: "is_reply true",
			flow: trace(api(), web(), tcp(8080, 43210, &flowpb.TCPFlags{ACK: true}), withIsReply(true), swapIPs),
			want: want{skip: SkipReply},
		},
		{
			name: "SYN+ACK without is_reply",
			flow: trace(api(), web(), tcp(8080, 43210, &flowpb.TCPFlags{SYN: true, ACK: true}), noIsReply, swapIPs),
			want: want{skip: SkipReply},
		},
		{
			name: "SYN+ACK between two high ports without is_reply",
			flow: trace(api(), web(), tcp(50051, 43210, &flowpb.TCPFlags{SYN: true, ACK: true}), noIsReply, swapIPs),
			want: want{skip: SkipReply},
		},
		{
			name: "well-known to ephemeral without is_reply",
			flow: trace(kubeDNS(), web(), udp(53, 40000), noIsReply, swapIPs),
			want: want{skip: SkipReply},
		},
		{
			name: "service port above 1024 to ephemeral without is_reply",
			flow: trace(api(), web(), tcp(8080, 51000, &flowpb.TCPFlags{ACK: true}), noIsReply, swapIPs),
			want: want{skip: SkipReply},
		},
		{
			name: "deprecated reply flag",
			flow: trace(api(), web(), tcp(8080, 51000, &flowpb.TCPFlags{ACK: true}), noIsReply, func(f *flowpb.Flow) { f.Reply = true }),
			want: want{skip: SkipReply},
		},
		{
			name: "ephemeral to well-known without is_reply is a request",
			flow: trace(web(), kubeDNS(), udp(40000, 53), noIsReply),
			want: want{src: webKey, dst: dnsKey, proto: ProtoUDP, port: 53, srcPort: 40000, point: DirectionEgress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			name: "ICMP echo request",
			flow: trace(web(), api(), icmp4(8)),
			want: want{src: webKey, dst: apiKey, proto: ProtoICMPv4, port: 8, point: DirectionEgress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			name: "ICMP echo reply without is_reply",
			flow: trace(api(), web(), icmp4(0), noIsReply),
			want: want{skip: SkipReply},
		},
		{
			name: "ICMPv6 echo request",
			flow: trace(web(), api(), &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{Type: 128}}}),
			want: want{src: webKey, dst: apiKey, proto: ProtoICMPv6, port: 128, point: DirectionEgress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			name: "policy drop",
			flow: trace(web(), api(), tcp(43210, 8080, syn), noIsReply, func(f *flowpb.Flow) {
				f.Verdict, f.DropReason, f.DropReasonDesc = flowpb.Verdict_DROPPED, 133, flowpb.DropReason_POLICY_DENIED
				f.EventType = &flowpb.CiliumEventType{Type: 1, SubType: 133}
				f.TraceObservationPoint, f.TrafficDirection = flowpb.TraceObservationPoint_UNKNOWN_POINT, flowpb.TrafficDirection_INGRESS
			}),
			want: want{src: webKey, dst: apiKey, proto: ProtoTCP, port: 8080, srcPort: 43210, point: DirectionIngress, typ: EventDrop, verdict: VerdictDropped, dropReason: "POLICY_DENIED"},
		},
		{
			name: "audit policy verdict",
			flow: trace(web(), api(), tcp(43210, 8080, syn), func(f *flowpb.Flow) {
				f.Verdict = flowpb.Verdict_AUDIT
				f.EventType = &flowpb.CiliumEventType{Type: 5}
				f.TraceObservationPoint, f.TrafficDirection = flowpb.TraceObservationPoint_UNKNOWN_POINT, flowpb.TrafficDirection_INGRESS
			}),
			want: want{src: webKey, dst: apiKey, proto: ProtoTCP, port: 8080, srcPort: 43210, point: DirectionIngress, typ: EventPolicyVerdict, verdict: VerdictAudit},
		},
		{
			name: "no event_type: inferred from the flow type",
			flow: trace(web(), api(), tcp(43210, 8080, syn), func(f *flowpb.Flow) { f.EventType = nil }),
			want: want{src: webKey, dst: apiKey, proto: ProtoTCP, port: 8080, srcPort: 43210, point: DirectionEgress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			name: "debug event type",
			flow: trace(web(), api(), tcp(43210, 8080, syn), func(f *flowpb.Flow) { f.EventType = &flowpb.CiliumEventType{Type: 2} }),
			want: want{skip: SkipEventType},
		},
		{
			name: "no endpoints",
			flow: trace(nil, nil, tcp(43210, 8080, syn)),
			want: want{skip: SkipNoEndpoint},
		},
		{
			name: "no l4",
			flow: trace(web(), api(), nil),
			want: want{skip: SkipNoL4},
		},
		{
			name: "kubelet probe from the host",
			flow: trace(reserved(1, "reserved:host"), web(), tcp(51000, 8080, syn), atServer),
			want: want{src: "entity:host", dst: webKey, proto: ProtoTCP, port: 8080, srcPort: 51000, point: DirectionIngress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			name: "kube-apiserver wins over host",
			flow: trace(web(), reserved(1, "reserved:host", "reserved:kube-apiserver"), tcp(43210, 6443, syn)),
			want: want{src: webKey, dst: "entity:kube-apiserver", proto: ProtoTCP, port: 6443, srcPort: 43210, point: DirectionEgress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			name: "kube-apiserver wins over remote-node",
			flow: trace(web(), reserved(6, "reserved:remote-node", "reserved:kube-apiserver"), tcp(43210, 6443, syn)),
			want: want{src: webKey, dst: "entity:kube-apiserver", proto: ProtoTCP, port: 6443, srcPort: 43210, point: DirectionEgress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			name: "remote-node and health",
			flow: trace(reserved(6, "reserved:remote-node"), reserved(4, "reserved:health"), tcp(43210, 4240, syn), atServer),
			want: want{src: "entity:remote-node", dst: "entity:health", proto: ProtoTCP, port: 4240, srcPort: 43210, point: DirectionIngress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			name: "world by reserved label",
			flow: trace(web(), reserved(2, "reserved:world"), tcp(43210, 443, syn), func(f *flowpb.Flow) { f.IP.Destination = "140.82.121.6" }),
			want: want{src: webKey, dst: "world:140.82.121.6", proto: ProtoTCP, port: 443, srcPort: 43210, point: DirectionEgress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			name: "world by FQDN identity (cidr and fqdn labels only)",
			flow: trace(web(), reserved(16777217, "cidr:140.82.121.6/32", "fqdn:api.github.com"), tcp(43210, 443, syn), func(f *flowpb.Flow) { f.IP.Destination = "140.82.121.6" }),
			want: want{src: webKey, dst: "world:140.82.121.6", proto: ProtoTCP, port: 443, srcPort: 43210, point: DirectionEgress, typ: EventTrace, verdict: VerdictForwarded},
		},
		{
			name: "world without a destination endpoint",
			flow: trace(web(), nil, tcp(43210, 443, syn), func(f *flowpb.Flow) { f.IP.Destination = "140.82.121.6" }),
			want: want{src: webKey, dst: "world:140.82.121.6", proto: ProtoTCP, port: 443, srcPort: 43210, point: DirectionEgress, typ: EventTrace, verdict: VerdictForwarded},
		},
	}
	n := NewNormalizer(nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, skip := n.Flow(tc.flow)
			if skip != tc.want.skip {
				t.Fatalf("Flow() skip = %q, want %q (event %+v)", skip, tc.want.skip, ev)
			}
			if skip != SkipNone {
				if ev != nil {
					t.Errorf("Flow() = %+v with skip %q, want nil", ev, skip)
				}
				return
			}
			got := want{src: ev.Src.Key(), dst: ev.Dst.Key(), proto: ev.Proto, port: ev.Port, srcPort: ev.SrcPort,
				point: ev.Point, typ: ev.Type, verdict: ev.Verdict, dropReason: ev.DropReason}
			if got != tc.want {
				t.Errorf("Flow() =\n %+v\nwant\n %+v", got, tc.want)
			}
			if ev.Kind != KindFlow || !ev.Time.Equal(t0) || ev.Node != tc.flow.NodeName || ev.ID == 0 {
				t.Errorf("Flow() kind, time, node, id = %v %v %q %d", ev.Kind, ev.Time, ev.Node, ev.ID)
			}
			if ev.Reply {
				t.Errorf("Flow() delivered a reply")
			}
		})
	}
}

// Ensure peers keep the facts later stages need: namespace, stable labels, workload, and for
// world peers the IP and clean DNS names.
func TestNormalizePeers(t *testing.T) {
	n := NewNormalizer(nil)
	f := trace(web(), reserved(2, "reserved:world"), tcp(43210, 443, syn), func(f *flowpb.Flow) {
		f.IP.Destination = "140.82.121.6"
		f.DestinationNames = []string{"API.GitHub.com.", "api.github.com", "github.com."}
	})
	ev, skip := n.Flow(f)
	if skip != SkipNone {
		t.Fatalf("skip %q", skip)
	}
	if ev.Src.Kind != PeerWorkload || ev.Src.Namespace != "shop" || !slices.Equal(ev.Src.Labels, webLabels) ||
		ev.Src.Workload != "Deployment/web" || ev.Src.Identity != 12345 || ev.Src.IP != "" {
		t.Errorf("Src = %+v, want workload shop/web with stable labels and no IP", ev.Src)
	}
	if ev.Dst.Kind != PeerWorld || ev.Dst.IP != "140.82.121.6" || !slices.Equal(ev.Dst.Names, []string{"api.github.com", "github.com"}) {
		t.Errorf("Dst = %+v, want world 140.82.121.6 with names [api.github.com github.com]", ev.Dst)
	}
	if ev.SrcAddr != "10.244.0.10" || ev.DstAddr != "140.82.121.6" {
		t.Errorf("addrs = %s -> %s", ev.SrcAddr, ev.DstAddr)
	}

	// Namespace from the labels alone (no namespace field).
	ep := web()
	ep.Namespace = ""
	ev, _ = n.Flow(trace(ep, api(), tcp(43210, 8080, syn)))
	if ev.Src.Namespace != "shop" {
		t.Errorf("Src.Namespace = %q, want shop from k8s:io.kubernetes.pod.namespace", ev.Src.Namespace)
	}

	// User filters: exclude serviceaccount, include pod-template-hash back.
	lf, err := NewLabelFilter([]string{`^io\.cilium\.k8s\.policy\.serviceaccount$`}, []string{`^pod-template-hash$`})
	if err != nil {
		t.Fatal(err)
	}
	ev, _ = NewNormalizer(lf).Flow(trace(web(), api(), tcp(43210, 8080, syn)))
	if want := (Labels{"k8s:app=web", "k8s:io.cilium.k8s.policy.cluster=default", "k8s:pod-template-hash=7d9f8b6c4"}); !slices.Equal(ev.Src.Labels, want) {
		t.Errorf("Src.Labels with user filter = %v, want %v", ev.Src.Labels, want)
	}
}

// Ensure the L7 DNS response is turned around so Src is the client, and keeps the answer.
func TestNormalizeL7(t *testing.T) {
	n := NewNormalizer(nil)
	l7 := func(src, dst *flowpb.Endpoint, l4 *flowpb.Layer4, rec *flowpb.Layer7, mod ...func(*flowpb.Flow)) *flowpb.Flow {
		return trace(src, dst, l4, append([]func(*flowpb.Flow){func(f *flowpb.Flow) {
			f.Type, f.L7 = flowpb.FlowType_L7, rec
			f.EventType = &flowpb.CiliumEventType{Type: 129}
			f.TraceObservationPoint = flowpb.TraceObservationPoint_UNKNOWN_POINT
		}}, mod...)...)
	}
	dnsReq := l7(web(), kubeDNS(), udp(40000, 53), &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST,
		Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{Query: "api.github.com.", Qtypes: []string{"A"}}}})
	dnsResp := l7(kubeDNS(), web(), udp(53, 40000), &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE,
		Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{Query: "api.github.com.", Ips: []string{"140.82.121.6"}, Rcode: 0, Qtypes: []string{"A"}}}},
		withIsReply(true), swapIPs)
	httpReq := l7(web(), api(), tcp(43210, 8080, nil), &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST,
		Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Method: "POST", Url: "http://api.shop:8080/v1/orders?id=42"}}},
		func(f *flowpb.Flow) { f.TrafficDirection = flowpb.TrafficDirection_INGRESS })
	httpDenied := l7(api(), web(), tcp(8080, 43210, nil), &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE,
		Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Code: 403, Method: "PUT", Url: "http://api.shop:8080/admin"}}},
		withIsReply(true), swapIPs, func(f *flowpb.Flow) { f.Verdict = flowpb.Verdict_DROPPED })

	for _, tc := range []struct {
		name     string
		flow     *flowpb.Flow
		src, dst string
		port     uint16
		srcAddr  string
		check    func(*L7) bool
	}{
		{"dns request", dnsReq, "shop/", "kube-system/", 53, "10.244.0.10",
			func(l *L7) bool { return l.DNS != nil && !l.DNS.Response && l.DNS.Query == "api.github.com." }},
		{"dns response flipped", dnsResp, "shop/", "kube-system/", 53, "10.244.0.10",
			func(l *L7) bool {
				return l.DNS != nil && l.DNS.Response && slices.Equal(l.DNS.IPs, []string{"140.82.121.6"})
			}},
		{"http request", httpReq, "shop/k8s:app=web", "shop/k8s:app=api", 8080, "10.244.0.10",
			func(l *L7) bool {
				return l.HTTP != nil && l.HTTP.Method == "POST" && l.HTTP.Host == "api.shop:8080" && l.HTTP.Path == "/v1/orders"
			}},
		{"http response flipped", httpDenied, "shop/k8s:app=web", "shop/k8s:app=api", 8080, "10.244.0.10",
			func(l *L7) bool { return l.HTTP != nil && l.HTTP.Code == 403 && l.HTTP.Path == "/admin" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, skip := n.Flow(tc.flow)
			if skip != SkipNone {
				t.Fatalf("skip %q", skip)
			}
			if ev.Type != EventL7 || ev.Reply || ev.L7 == nil || !tc.check(ev.L7) {
				t.Errorf("Flow() type %v reply %v L7 %+v", ev.Type, ev.Reply, ev.L7)
			}
			if !hasPrefix(ev.Src.Key(), tc.src) || !hasPrefix(ev.Dst.Key(), tc.dst) || ev.Port != tc.port || ev.SrcAddr != tc.srcAddr {
				t.Errorf("Flow() = %s -> %s port %d from %s, want %s… -> %s… port %d from %s",
					ev.Src.Key(), ev.Dst.Key(), ev.Port, ev.SrcAddr, tc.src, tc.dst, tc.port, tc.srcAddr)
			}
		})
	}
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// Ensure allowed_by and denied_by of both directions become policy refs, and policy_log values
// are kept.
func TestNormalizePolicyRefs(t *testing.T) {
	rule1 := &flowpb.Policy{Kind: "CiliumNetworkPolicy", Namespace: "default", Name: "rule1"}
	ccnp := &flowpb.Policy{Kind: "CiliumClusterwideNetworkPolicy", Name: "dns-visibility"}
	deny := &flowpb.Policy{Kind: "CiliumClusterwideNetworkPolicy", Name: "deny-ops"}
	f := trace(web(), api(), tcp(43210, 8080, syn), func(f *flowpb.Flow) {
		f.EventType = &flowpb.CiliumEventType{Type: 5}
		f.EgressAllowedBy = []*flowpb.Policy{ccnp}
		f.IngressAllowedBy = []*flowpb.Policy{rule1}
		f.IngressDeniedBy = []*flowpb.Policy{deny}
		f.PolicyLog = []string{"ops-deny", "audit-web", "ops-deny"}
	})
	ev, _ := NewNormalizer(nil).Flow(f)
	if want := []string{"audit-web", "ops-deny"}; !slices.Equal(ev.PolicyLog, want) {
		t.Errorf("PolicyLog = %v, want %v (sorted, unique)", ev.PolicyLog, want)
	}
	wantAllowed := []PolicyRef{{"CiliumClusterwideNetworkPolicy", "", "dns-visibility"}, {"CiliumNetworkPolicy", "default", "rule1"}}
	if !slices.Equal(ev.AllowedBy, wantAllowed) {
		t.Errorf("AllowedBy = %v, want %v", ev.AllowedBy, wantAllowed)
	}
	if want := []PolicyRef{{"CiliumClusterwideNetworkPolicy", "", "deny-ops"}}; !slices.Equal(ev.DeniedBy, want) {
		t.Errorf("DeniedBy = %v, want %v", ev.DeniedBy, want)
	}
	if got := ev.AllowedBy[1].String(); got != "CiliumNetworkPolicy/default/rule1" {
		t.Errorf("PolicyRef.String() = %q", got)
	}
}

// Ensure lost-events notices become KindLost events and node status messages are skipped.
func TestNormalizeResponse(t *testing.T) {
	n := NewNormalizer(nil)
	lost := &observerpb.GetFlowsResponse{
		NodeName: "node-b", Time: timestamppb.New(t0),
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
			Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: 1543}},
	}
	ev, skip := n.Response(lost)
	if skip != SkipNone || ev.Kind != KindLost || ev.Node != "node-b" || !ev.Time.Equal(t0) ||
		ev.Lost.Source != "HUBBLE_RING_BUFFER" || ev.Lost.Count != 1543 || ev.ID == 0 {
		t.Errorf("Response(lost) = %+v (lost %+v), %q", ev, ev.Lost, skip)
	}
	status := &observerpb.GetFlowsResponse{NodeName: "node-b", Time: timestamppb.New(t0),
		ResponseTypes: &observerpb.GetFlowsResponse_NodeStatus{NodeStatus: &relaypb.NodeStatusEvent{}}}
	if ev, skip := n.Response(status); skip != SkipNoFlow || ev != nil {
		t.Errorf("Response(node status) = %+v, %q, want nil, %q", ev, skip, SkipNoFlow)
	}
	flow := &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: trace(web(), api(), tcp(43210, 8080, syn))}}
	if ev, skip := n.Response(flow); skip != SkipNone || ev.Port != 8080 {
		t.Errorf("Response(flow) = %+v, %q", ev, skip)
	}
}

// Ensure two records of one flow get one ID and other flows another, with and without uuid.
func TestFlowID(t *testing.T) {
	n := NewNormalizer(nil)
	a, _ := n.Flow(trace(web(), api(), tcp(43210, 8080, syn)))
	b, _ := n.Flow(trace(web(), api(), tcp(43210, 8080, syn)))
	c, _ := n.Flow(trace(web(), api(), tcp(43210, 8080, syn), func(f *flowpb.Flow) { f.Uuid = "other" }))
	if a.ID != b.ID || a.ID == c.ID {
		t.Errorf("IDs %d %d %d: want same uuid -> same ID, other uuid -> other ID", a.ID, b.ID, c.ID)
	}
	noUUID := func(port uint32) *Event {
		ev, _ := n.Flow(trace(web(), api(), tcp(port, 8080, syn), func(f *flowpb.Flow) { f.Uuid = "" }))
		return ev
	}
	first, again, other := noUUID(43210), noUUID(43210), noUUID(43211)
	if first.ID == other.ID || first.ID != again.ID {
		t.Errorf("IDs without uuid must follow the record's fields")
	}
}
