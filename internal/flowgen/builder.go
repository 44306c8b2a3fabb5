package flowgen

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Emit receives each generated record in order. Returning an error stops the generator,
// which returns that error.
type Emit func(*observerpb.GetFlowsResponse) error

// JSONL returns an Emit writing one record per line exactly as `hubble observe -o jsonpb`
// does: hubble hands each GetFlowsResponse to encoding/json, which calls the generated
// MarshalJSON (protojson with UseProtoNames) and compacts the result. The compaction also
// removes the random spaces protojson inserts to keep its output unstable, so the bytes do
// not depend on the binary that wrote them.
func JSONL(w io.Writer) Emit {
	enc := json.NewEncoder(w)
	return func(r *observerpb.GetFlowsResponse) error { return enc.Encode(r) }
}

// Cilium's reserved identities (pkg/identity/numericidentity.go).
const (
	idHost          = 1
	idWorld         = 2
	idHealth        = 4
	idRemoteNode    = 6
	idKubeAPIServer = 7
)

// Cilium monitor message types, which Hubble reports in event_type.type, and the sub types used.
const (
	monitorDrop          = 1
	monitorTrace         = 4
	monitorPolicyVerdict = 5
	monitorAccessLog     = 129

	traceToLxc     = 0
	traceToProxy   = 1
	traceToStack   = 3
	traceToOverlay = 4
)

// Cilium's policy match types (pkg/monitor/api/types.go), reported in policy_match_type.
const (
	matchNone = 0
	matchL3L4 = 2
	matchAll  = 4
)

// ephemeral port range of Linux (net.ipv4.ip_local_port_range default).
const ephemeralLo, ephemeralHi = 32768, 60999

// podNameChars is the alphabet Kubernetes uses for generated name suffixes.
const podNameChars = "bcdfghjklmnpqrstvwxz2456789"

// Node is a cluster node: Cilium reports its own host as reserved:host and every other
// node as reserved:remote-node.
type Node struct {
	Name string
	IP   string
	// Health is the node's cilium-health endpoint.
	Health *Peer
	// podNet is the third octet of the node's pod CIDR (10.244.<podNet>.0/24).
	podNet int
	nextIP int
	nextEP uint32
}

// Peer is one end of a generated connection: a pod, a node, a health endpoint, the
// kube-apiserver or a world address.
type Peer struct {
	IP string
	// Node is where the peer lives; nil outside the cluster.
	Node      *Node
	Namespace string
	// Labels are the identity labels exactly as Cilium emits them ("k8s:app=web").
	Labels     []string
	Identity   uint32
	EndpointID uint32
	PodName    string
	Workload   *flowpb.Workload
	// Names are the DNS names Hubble links to a world IP (no trailing dot).
	Names []string
	// host marks the node itself: reserved:host on its own node, reserved:remote-node elsewhere.
	host bool
	// cluster is the ClusterMesh cluster of a pod ("" is clusterName).
	cluster string
}

// endpoint renders the peer as Hubble shows it on node obs.
func (p *Peer) endpoint(obs *Node) *flowpb.Endpoint {
	if p.host {
		if p.Node == obs {
			return &flowpb.Endpoint{Identity: idHost, Labels: []string{"reserved:host"}}
		}
		return &flowpb.Endpoint{Identity: idRemoteNode, Labels: []string{"reserved:remote-node"}}
	}
	ep := &flowpb.Endpoint{
		Identity:  p.Identity,
		Namespace: p.Namespace,
		Labels:    p.Labels,
		PodName:   p.PodName,
	}
	if p.Namespace != "" {
		ep.ClusterName = cmp.Or(p.cluster, clusterName)
	}
	// Endpoint IDs are node-local: Hubble knows them only for endpoints on its own node.
	if p.Node != nil && p.Node == obs {
		ep.ID = p.EndpointID
	}
	if p.Workload != nil {
		ep.Workloads = []*flowpb.Workload{p.Workload}
	}
	return ep
}

// local reports whether packets of p are seen by Hubble on a node (pods, health endpoints).
func (p *Peer) local() bool { return p.Node != nil && !p.host }

const clusterName = "default"

// Cluster holds nodes and allocates addresses and identities.
type Cluster struct {
	Nodes []*Node
	// name is the cluster's cluster.name; idBase its ClusterMesh cluster ID shifted into the
	// high bits of its identities, as Cilium allocates them in a mesh.
	name   string
	idBase uint32
	rng    *rand.Rand
	// ids maps a canonical label set to its identity; used holds allocated numbers.
	ids  map[string]uint32
	used map[uint32]bool
}

// newCluster makes n nodes named name(i) with node IPs nodeNet.<i+2>.
func newCluster(rng *rand.Rand, nodeNames []string, nodeNet string) *Cluster {
	c := &Cluster{name: clusterName, rng: rng, ids: map[string]uint32{}, used: map[uint32]bool{}}
	for i, name := range nodeNames {
		// Pod CIDRs wrap after 10.244.255.0/24: very large synthetic clusters share them.
		n := &Node{Name: name, IP: fmt.Sprintf("%s.%d", nodeNet, 2+i%250), podNet: i % 256, nextIP: 10, nextEP: 100}
		n.Health = &Peer{
			IP: fmt.Sprintf("10.244.%d.%d", n.podNet, 250), Node: n,
			Labels: []string{"reserved:health"}, Identity: idHealth, EndpointID: 3,
		}
		c.Nodes = append(c.Nodes, n)
	}
	return c
}

// identity returns Cilium's numeric identity for a label set, stable for the same set.
// Cilium allocates identities from 256 up; a hash with probing keeps numbers independent
// of the order workloads are created, so several files of one cluster agree.
func (c *Cluster) identity(labels []string) uint32 {
	key := strings.Join(labels, ",")
	if id, ok := c.ids[key]; ok {
		return id
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	id := c.idBase + 256 + h.Sum32()%65000
	for c.used[id] {
		id++
	}
	c.ids[key], c.used[id] = id, true
	return id
}

// Workload is a set of replicas sharing stable labels; each rollout gets a new
// pod-template-hash and so new pods, IPs and identities.
type Workload struct {
	Name, Namespace, Kind string
	// Labels are the pod labels without the namespace facts Cilium adds ("app=web").
	Labels []string
	// ServiceAccount defaults to Name.
	ServiceAccount string
	Port           uint16
	// Pods are the replicas of the current rollout.
	Pods []*Peer
	// Service is the Service clients address, if any.
	Service *flowpb.Service
}

// addWorkload creates a workload with replicas pods spread over the nodes from node index
// first on.
func (c *Cluster) addWorkload(w *Workload, replicas, first int) *Workload {
	if w.Kind == "" {
		w.Kind = "Deployment"
	}
	if w.ServiceAccount == "" {
		w.ServiceAccount = w.Name
	}
	c.rollout(w, replicas, first)
	return w
}

// rollout replaces the workload's pods by replicas new ones with a fresh pod-template-hash.
func (c *Cluster) rollout(w *Workload, replicas, first int) {
	hash := c.randName(10)
	w.Pods = w.Pods[:0:0]
	for i := range replicas {
		n := c.Nodes[(first+i)%len(c.Nodes)]
		labels := c.podLabels(w, hash)
		p := &Peer{
			IP: fmt.Sprintf("10.244.%d.%d", n.podNet, n.nextIP), Node: n,
			Namespace: w.Namespace, Labels: labels, Identity: c.identity(labels),
			EndpointID: n.nextEP, cluster: c.name,
		}
		n.nextIP++
		if n.nextIP >= 250 {
			n.nextIP = 10
		}
		n.nextEP += 1 + uint32(c.rng.IntN(300))
		switch w.Kind {
		case "Pod":
			p.PodName = w.Name
		case "StatefulSet":
			p.PodName = fmt.Sprintf("%s-%d", w.Name, i)
			p.Workload = &flowpb.Workload{Name: w.Name, Kind: w.Kind}
		default:
			p.PodName = w.Name + "-" + hash + "-" + c.randName(5)
			p.Workload = &flowpb.Workload{Name: w.Name, Kind: w.Kind}
		}
		w.Pods = append(w.Pods, p)
	}
}

// podLabels builds the identity labels Cilium derives for a pod of w, sorted as Cilium
// prints them.
func (c *Cluster) podLabels(w *Workload, hash string) []string {
	ls := make([]string, 0, len(w.Labels)+5)
	for _, l := range w.Labels {
		ls = append(ls, "k8s:"+l)
	}
	ls = append(ls,
		"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name="+w.Namespace,
		"k8s:io.cilium.k8s.policy.cluster="+c.name,
		"k8s:io.cilium.k8s.policy.serviceaccount="+w.ServiceAccount,
		"k8s:io.kubernetes.pod.namespace="+w.Namespace,
	)
	if w.Kind == "Deployment" {
		ls = append(ls, "k8s:pod-template-hash="+hash)
	}
	slices.Sort(ls)
	return ls
}

func (c *Cluster) randName(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = podNameChars[c.rng.IntN(len(podNameChars))]
	}
	return string(b)
}

// host returns node n as a peer (kubelet, hostNetwork pods).
func (n *Node) host() *Peer { return &Peer{IP: n.IP, Node: n, host: true} }

// world returns an address outside the cluster with the DNS names Hubble links to it.
func world(ip string, names ...string) *Peer {
	return &Peer{IP: ip, Labels: []string{"reserved:world"}, Identity: idWorld, Names: names}
}

// kubeAPIServer returns the API server of a managed control plane outside the nodes.
func kubeAPIServer(ip string) *Peer {
	return &Peer{IP: ip, Labels: []string{"reserved:kube-apiserver"}, Identity: idKubeAPIServer}
}

// pick returns a random replica.
func (w *Workload) pick(rng *rand.Rand) *Peer { return w.Pods[rng.IntN(len(w.Pods))] }

// policy names a network policy as Hubble reports it in *_allowed_by / *_denied_by.
func policy(kind, namespace, name string, revision uint64) *flowpb.Policy {
	labels := []string{
		"k8s:io.cilium.k8s.policy.derived-from=" + kind,
		"k8s:io.cilium.k8s.policy.name=" + name,
	}
	if namespace != "" {
		labels = append(labels, "k8s:io.cilium.k8s.policy.namespace="+namespace)
	}
	return &flowpb.Policy{Name: name, Namespace: namespace, Labels: labels, Revision: revision, Kind: kind}
}

// errLimit stops a generator once it has emitted the requested number of records.
var errLimit = errors.New("record limit reached")

// gen emits records with a moving clock. Errors are sticky: after the first one nothing
// more is emitted and err reports it, which keeps scenario code free of error plumbing.
type gen struct {
	rng   *rand.Rand
	now   time.Time
	emit  Emit
	err   error
	count int
	limit int // 0: no limit
}

func newGen(seed uint64, start time.Time, emit Emit) *gen {
	return &gen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), now: start, emit: emit}
}

// advance moves the clock by d plus up to jitter.
func (g *gen) advance(d, jitter time.Duration) {
	g.now = g.now.Add(d)
	if jitter > 0 {
		g.now = g.now.Add(time.Duration(g.rng.Int64N(int64(jitter))))
	}
}

func (g *gen) ephemeral() uint16 {
	return uint16(ephemeralLo + g.rng.IntN(ephemeralHi-ephemeralLo+1))
}

func (g *gen) uuid() string {
	a, b := g.rng.Uint64(), g.rng.Uint64()
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", a>>32, (a>>16)&0xffff, a&0xfff,
		0x8000|(b>>48)&0x3fff, b&0xffffffffffff)
}

func (g *gen) send(r *observerpb.GetFlowsResponse) {
	if g.err != nil {
		return
	}
	if g.limit > 0 && g.count >= g.limit {
		g.err = errLimit
		return
	}
	g.count++
	g.err = g.emit(r)
}

func (g *gen) sendFlow(f *flowpb.Flow) {
	// Records on one node are microseconds apart; the clock moves so times stay ordered.
	g.advance(20*time.Microsecond, 180*time.Microsecond)
	f.Time = timestamppb.New(g.now)
	f.Uuid = g.uuid()
	g.send(&observerpb.GetFlowsResponse{
		ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f},
		NodeName:      f.NodeName,
		Time:          f.Time,
	})
}

// lost emits a Hubble ring-buffer overflow notice on node n.
func (g *gen) lost(n *Node, count uint64, span time.Duration) {
	g.advance(time.Millisecond, 0)
	g.send(&observerpb.GetFlowsResponse{
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
			Source:        flowpb.LostEventSource_HUBBLE_RING_BUFFER,
			NumEventsLost: count,
			First:         timestamppb.New(g.now.Add(-span)),
			Last:          timestamppb.New(g.now),
		}},
		NodeName: n.Name,
		Time:     timestamppb.New(g.now),
	})
}

// l4 is the transport part of a packet.
type l4 struct {
	proto     string // "TCP", "UDP", "ICMPv4"
	sport     uint16
	dport     uint16
	flags     *flowpb.TCPFlags
	icmpType  uint32
	reply     bool
	newConn   bool // first packet of the connection (trace_reason NEW)
	noIsReply bool // Hubble could not tell (no conntrack entry): is_reply stays unset
}

func (p l4) layer() *flowpb.Layer4 {
	switch p.proto {
	case "TCP":
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort: uint32(p.sport), DestinationPort: uint32(p.dport), Flags: p.flags}}}
	case "UDP":
		return &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{
			SourcePort: uint32(p.sport), DestinationPort: uint32(p.dport)}}}
	}
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: p.icmpType}}}
}

func (p l4) summary() string {
	switch p.proto {
	case "TCP":
		var fs []string
		f := p.flags
		for _, x := range []struct {
			on   bool
			name string
		}{{f.GetSYN(), "SYN"}, {f.GetACK(), "ACK"}, {f.GetPSH(), "PSH"}, {f.GetFIN(), "FIN"}, {f.GetRST(), "RST"}} {
			if x.on {
				fs = append(fs, x.name)
			}
		}
		return "TCP Flags: " + strings.Join(fs, ", ")
	case "UDP":
		return "UDP"
	}
	switch p.icmpType {
	case 8:
		return "ICMPv4 EchoRequest"
	case 0:
		return "ICMPv4 EchoReply"
	}
	return "ICMPv4"
}

// base builds the fields every L3/L4 record of a packet from src to dst observed on obs shares.
func base(obs *Node, src, dst *Peer, p l4) *flowpb.Flow {
	f := &flowpb.Flow{
		Verdict:     flowpb.Verdict_FORWARDED,
		IP:          &flowpb.IP{Source: src.IP, Destination: dst.IP, IpVersion: flowpb.IPVersion_IPv4},
		L4:          p.layer(),
		Source:      src.endpoint(obs),
		Destination: dst.endpoint(obs),
		Type:        flowpb.FlowType_L3_L4,
		NodeName:    obs.Name,
		Summary:     p.summary(),
	}
	if len(src.Names) > 0 {
		f.SourceNames = src.Names
	}
	if len(dst.Names) > 0 {
		f.DestinationNames = dst.Names
	}
	if !p.noIsReply {
		f.IsReply = wrapperspb.Bool(p.reply)
	}
	return f
}

// conn is one connection between a client and a server port.
type conn struct {
	client, server *Peer
	proto          string
	port           uint16
	sport          uint16
	// svc is the Service the client addressed (Hubble fills destination_service).
	svc *flowpb.Service
	// ingress and egress are the policies that allow the connection at the server and the
	// client; a non-nil slice makes the enforcing side emit a policy-verdict event.
	ingress, egress []*flowpb.Policy
	// audit marks the server endpoint as in policy-audit-mode with nothing allowing the
	// connection: the policy-verdict says AUDIT and traffic flows.
	audit bool
	// bothEgress reproduces Hubble's reports where the destination has no policy: the
	// server-side observation says EGRESS too.
	bothEgress bool
	// proxyDNS sends the packets through Cilium's DNS proxy (to-proxy on the client's node).
	proxyDNS bool
}

// packet emits the trace records of one packet: on the sender's node when it is a local
// endpoint, and on the receiver's node when the receiver is one (once if both share a node).
func (g *gen) packet(c *conn, p l4) {
	src, dst := c.client, c.server
	if p.reply {
		src, dst = dst, src
	}
	reason := flowpb.TraceReason_ESTABLISHED
	switch {
	case p.reply:
		reason = flowpb.TraceReason_REPLY
	case p.newConn:
		reason = flowpb.TraceReason_NEW
	}
	// traffic_direction is the connection's direction seen from the endpoint that observed it.
	dirAtClient, dirAtServer := flowpb.TrafficDirection_EGRESS, flowpb.TrafficDirection_INGRESS
	if c.bothEgress {
		dirAtServer = flowpb.TrafficDirection_EGRESS
	}
	dirAt := func(n *Node) flowpb.TrafficDirection {
		if c.client.Node == n && c.client.local() {
			return dirAtClient
		}
		return dirAtServer
	}
	sameNode := src.local() && dst.local() && src.Node == dst.Node
	toProxy := c.proxyDNS && !p.reply
	if src.local() && (!sameNode || toProxy) {
		f := base(src.Node, src, dst, p)
		point, sub := flowpb.TraceObservationPoint_TO_OVERLAY, int32(traceToOverlay)
		switch {
		case toProxy:
			point, sub = flowpb.TraceObservationPoint_TO_PROXY, traceToProxy
		case !dst.local():
			point, sub = flowpb.TraceObservationPoint_TO_STACK, traceToStack
		}
		f.TraceObservationPoint, f.EventType = point, &flowpb.CiliumEventType{Type: monitorTrace, SubType: sub}
		f.TraceReason = reason
		f.TrafficDirection = dirAt(src.Node)
		if !p.reply && c.svc != nil {
			f.DestinationService = c.svc
		}
		if p.reply && c.svc != nil {
			f.SourceService = c.svc
		}
		g.sendFlow(f)
	}
	// A redirected packet ends in the proxy, which sends its own copy on.
	if dst.local() && !toProxy {
		g.advance(40*time.Microsecond, 400*time.Microsecond) // wire and the other node's clock
		f := base(dst.Node, src, dst, p)
		f.TraceObservationPoint = flowpb.TraceObservationPoint_TO_ENDPOINT
		f.EventType = &flowpb.CiliumEventType{Type: monitorTrace, SubType: traceToLxc}
		f.TraceReason = reason
		f.TrafficDirection = dirAt(dst.Node)
		if !p.reply && c.svc != nil && sameNode {
			f.DestinationService = c.svc
		}
		g.sendFlow(f)
	}
}

// verdict emits the policy-verdict event of a new connection at the enforcing endpoint.
func (g *gen) verdict(c *conn, p l4, ingress bool, v flowpb.Verdict, match uint32, by []*flowpb.Policy, dropDesc flowpb.DropReason) {
	obs := c.server.Node
	dir := flowpb.TrafficDirection_INGRESS
	if !ingress {
		obs, dir = c.client.Node, flowpb.TrafficDirection_EGRESS
	}
	f := base(obs, c.client, c.server, p)
	f.Verdict = v
	f.EventType = &flowpb.CiliumEventType{Type: monitorPolicyVerdict}
	f.TrafficDirection = dir
	f.PolicyMatchType = match
	f.IsReply = wrapperspb.Bool(false)
	if v == flowpb.Verdict_DROPPED {
		f.DropReason = uint32(dropDesc)
		f.DropReasonDesc = dropDesc
	}
	verdictWord := map[flowpb.Verdict]string{flowpb.Verdict_FORWARDED: "ALLOWED", flowpb.Verdict_DROPPED: "DENIED", flowpb.Verdict_AUDIT: "AUDITED"}[v]
	matchWord := map[uint32]string{matchNone: "none", matchL3L4: "L3-L4", matchAll: "all"}[match]
	f.Summary = fmt.Sprintf("policy-verdict:%s %s %s (%s)", matchWord, dir, verdictWord, p.summary())
	switch {
	case v == flowpb.Verdict_FORWARDED && ingress:
		f.IngressAllowedBy = by
	case v == flowpb.Verdict_FORWARDED:
		f.EgressAllowedBy = by
	case ingress:
		f.IngressDeniedBy = by
	default:
		f.EgressDeniedBy = by
	}
	g.sendFlow(f)
}

// drop emits a drop notification for a packet the server's endpoint refused.
func (g *gen) drop(c *conn, p l4, reason flowpb.DropReason) {
	f := base(c.server.Node, c.client, c.server, p)
	f.Verdict = flowpb.Verdict_DROPPED
	f.DropReason = uint32(reason)
	f.DropReasonDesc = reason
	f.EventType = &flowpb.CiliumEventType{Type: monitorDrop, SubType: int32(reason)}
	f.TrafficDirection = flowpb.TrafficDirection_INGRESS
	f.IsReply = nil // drop notifications carry no conntrack state
	g.sendFlow(f)
}

// open emits the handshake of a TCP connection (or the first packet of UDP/ICMP) with the
// policy-verdict events of the enforcing sides.
func (g *gen) open(c *conn) {
	if c.sport == 0 && c.proto != "ICMPv4" {
		c.sport = g.ephemeral()
	}
	syn := l4{proto: c.proto, sport: c.sport, dport: c.port, newConn: true}
	if c.proto == "TCP" {
		syn.flags = &flowpb.TCPFlags{SYN: true}
	}
	if c.proto == "ICMPv4" {
		syn.icmpType = 8
	}
	if c.egress != nil && c.client.local() {
		g.verdict(c, syn, false, flowpb.Verdict_FORWARDED, matchL3L4, c.egress, 0)
	}
	g.packet(c, syn)
	if c.server.local() {
		switch {
		case c.audit:
			g.verdict(c, syn, true, flowpb.Verdict_AUDIT, matchNone, nil, 0)
		case c.ingress != nil:
			g.verdict(c, syn, true, flowpb.Verdict_FORWARDED, matchL3L4, c.ingress, 0)
		}
	}
}

// tcp emits a complete, forwarded TCP connection: SYN, SYN+ACK, ACK, then the close. With
// Cilium's default monitor aggregation these are the trace events Hubble reports. Between
// handshake and close, during runs.
func (g *gen) tcp(c *conn, during func()) {
	c.proto = "TCP"
	g.open(c)
	g.advance(200*time.Microsecond, 2*time.Millisecond)
	g.packet(c, l4{proto: "TCP", sport: c.sport, dport: c.port, reply: true, flags: &flowpb.TCPFlags{SYN: true, ACK: true}})
	g.advance(100*time.Microsecond, time.Millisecond)
	g.packet(c, l4{proto: "TCP", sport: c.sport, dport: c.port, flags: &flowpb.TCPFlags{ACK: true}})
	if during != nil {
		during()
	}
	g.advance(2*time.Millisecond, 40*time.Millisecond)
	g.packet(c, l4{proto: "TCP", sport: c.sport, dport: c.port, flags: &flowpb.TCPFlags{ACK: true, FIN: true}})
	g.advance(100*time.Microsecond, time.Millisecond)
	g.packet(c, l4{proto: "TCP", sport: c.sport, dport: c.port, reply: true, flags: &flowpb.TCPFlags{ACK: true, FIN: true}})
}

// tcpDenied emits a connection the server's policy drops: each SYN (first try plus
// retransmissions a second, then two seconds apart) is forwarded on the client's node and
// dropped at the server with a policy-verdict and a drop notification. deniedBy names an
// explicit deny rule (reason POLICY_DENY); without one the drop is default deny.
func (g *gen) tcpDenied(c *conn, tries int, deniedBy []*flowpb.Policy) {
	c.proto = "TCP"
	if c.sport == 0 {
		c.sport = g.ephemeral()
	}
	reason, match := flowpb.DropReason_POLICY_DENIED, uint32(matchNone)
	if deniedBy != nil {
		reason, match = flowpb.DropReason_POLICY_DENY, matchL3L4
	}
	backoff := time.Second
	for i := range tries {
		syn := l4{proto: "TCP", sport: c.sport, dport: c.port, newConn: i == 0, flags: &flowpb.TCPFlags{SYN: true}}
		if c.client.local() && c.client.Node != c.server.Node {
			f := base(c.client.Node, c.client, c.server, syn)
			f.TraceObservationPoint = flowpb.TraceObservationPoint_TO_OVERLAY
			f.EventType = &flowpb.CiliumEventType{Type: monitorTrace, SubType: traceToOverlay}
			f.TraceReason = flowpb.TraceReason_NEW
			f.TrafficDirection = flowpb.TrafficDirection_EGRESS
			f.DestinationService = c.svc
			g.sendFlow(f)
			g.advance(40*time.Microsecond, 400*time.Microsecond)
		}
		g.verdict(c, syn, true, flowpb.Verdict_DROPPED, match, deniedBy, reason)
		g.drop(c, syn, reason)
		if i < tries-1 {
			g.advance(backoff, 5*time.Millisecond)
			backoff *= 2
		}
	}
}

// udp emits a request and its reply.
func (g *gen) udp(c *conn) {
	c.proto = "UDP"
	g.open(c)
	g.advance(300*time.Microsecond, 3*time.Millisecond)
	g.packet(c, l4{proto: "UDP", sport: c.sport, dport: c.port, reply: true})
}

// ping emits an ICMP echo request and reply (cilium-health probes its peers this way).
func (g *gen) ping(c *conn) {
	c.proto = "ICMPv4"
	g.open(c)
	g.advance(100*time.Microsecond, time.Millisecond)
	g.packet(c, l4{proto: "ICMPv4", icmpType: 0, reply: true})
}

// dns emits a lookup of query from client through Cilium's DNS proxy to the kube-dns pod,
// with the proxy's L7 request and response records, answering with ips.
// egress names the policies allowing the query at the client (nil: no policy-verdict).
func (g *gen) dns(client, server *Peer, svc *flowpb.Service, egress []*flowpb.Policy, query string, ips []string) {
	c := &conn{client: client, server: server, proto: "UDP", port: 53, svc: svc, proxyDNS: true, egress: egress}
	c.sport = g.ephemeral()
	g.open(c)
	req := l4{proto: "UDP", sport: c.sport, dport: 53}
	f := base(client.Node, client, server, req)
	f.Type = flowpb.FlowType_L7
	f.EventType = &flowpb.CiliumEventType{Type: monitorAccessLog}
	f.TrafficDirection = flowpb.TrafficDirection_EGRESS
	f.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{
		Query: query, Qtypes: []string{"A"}, ObservationSource: "proxy"}}}
	f.DestinationService = svc
	f.Summary = "DNS Query " + query + " A"
	g.sendFlow(f)
	// The proxy forwards the query: Hubble sees it arrive at the DNS pod.
	g.advance(100*time.Microsecond, 500*time.Microsecond)
	fwd := *c
	fwd.proxyDNS, fwd.egress = false, nil
	fwd.sport = g.ephemeral()
	g.packet(&fwd, l4{proto: "UDP", sport: fwd.sport, dport: 53, newConn: true})
	g.advance(200*time.Microsecond, 2*time.Millisecond)
	g.packet(&fwd, l4{proto: "UDP", sport: fwd.sport, dport: 53, reply: true})
	resp := l4{proto: "UDP", sport: 53, dport: c.sport, reply: true}
	r := base(client.Node, server, client, resp)
	r.Type = flowpb.FlowType_L7
	r.EventType = &flowpb.CiliumEventType{Type: monitorAccessLog}
	r.TrafficDirection = flowpb.TrafficDirection_EGRESS
	r.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: uint64(300_000 + g.rng.IntN(2_000_000)),
		Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{
			Query: query, Ips: ips, Ttl: 30, Qtypes: []string{"A"}, Rrtypes: []string{"A"}, ObservationSource: "proxy"}}}
	r.SourceService = svc
	answer := make([]string, len(ips))
	for i, ip := range ips {
		answer[i] = fmt.Sprintf("%q", ip)
	}
	r.Summary = fmt.Sprintf("DNS Answer %s TTL: 30 (Proxy %s A)", strings.Join(answer, ","), query)
	g.sendFlow(r)
}

// http emits the L7 records of one HTTP exchange seen by the proxy on the server's ingress.
// A verdict of DROPPED is an L7 policy denial: the proxy answers 403 itself.
func (g *gen) http(c *conn, method, url string, code uint32, v flowpb.Verdict) {
	p := l4{proto: "TCP", sport: c.sport, dport: c.port}
	f := base(c.server.Node, c.client, c.server, p)
	f.Type = flowpb.FlowType_L7
	f.Verdict = v
	f.EventType = &flowpb.CiliumEventType{Type: monitorAccessLog}
	f.TrafficDirection = flowpb.TrafficDirection_INGRESS
	f.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{
		Method: method, Url: url, Protocol: "HTTP/1.1",
		Headers: []*flowpb.HTTPHeader{{Key: "User-Agent", Value: "curl/8.5.0"}}}}}
	f.Summary = "HTTP/1.1 " + method + " " + url
	g.sendFlow(f)
	g.advance(500*time.Microsecond, 5*time.Millisecond)
	rp := l4{proto: "TCP", sport: c.port, dport: c.sport, reply: true}
	r := base(c.server.Node, c.server, c.client, rp)
	r.Type = flowpb.FlowType_L7
	r.Verdict = v
	r.EventType = &flowpb.CiliumEventType{Type: monitorAccessLog}
	r.TrafficDirection = flowpb.TrafficDirection_INGRESS
	r.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: uint64(500_000 + g.rng.IntN(5_000_000)),
		Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Code: code, Method: method, Url: url, Protocol: "HTTP/1.1"}}}
	r.Summary = fmt.Sprintf("HTTP/1.1 %d %dms (%s %s)", code, r.L7.LatencyNs/1_000_000, method, url)
	g.sendFlow(r)
}
