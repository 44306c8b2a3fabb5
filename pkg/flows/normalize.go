package flows

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
)

// Normalizer turns Hubble records into Events: it decides client and server, skips replies,
// reduces labels to the stable set and classifies peers. It is safe for concurrent use.
type Normalizer struct {
	labels *LabelFilter

	// mu guards cache, which maps a security identity to its raw labels and their filtered
	// form; identities repeat endlessly in a flow stream, so this saves the regexp work and
	// the allocations on nearly every flow. A hit is checked against the raw labels, so an
	// identity number reused for other labels (another cluster, a restart) is never wrong.
	mu    sync.RWMutex
	cache map[uint32]labelsEntry
	// workloads maps a workload's kind and name to "kind/name" (Peer.Workload), guarded by
	// mu: joining them was an allocation per endpoint of every flow.
	workloads map[[2]string]string

	// pods resolves pods that flows name without labels; nil refuses them all (offline).
	pods PodResolver
	// umu guards unresolved: per namespace/workload (guessed from pod names), the pods
	// refused for want of labels and why.
	umu        sync.Mutex
	unresolved map[string]*refusal
}

// refusal is what Unresolved reports for one workload.
type refusal struct {
	why  string
	pods map[string]struct{} // at most maxRefusedPods
	more bool                // more pods than that were refused
}

// maxRefusedPods bounds the pod names kept per refused workload.
const maxRefusedPods = 20

// PodResolver supplies the identity labels of a pod that a flow names only by namespace and
// pod name: exporter output written with a field mask without labels, or a pod the L7 proxy
// reported as reserved:world. PodLabels must answer from memory (a table read from the
// cluster beforehand), never block on the network: normalization runs on the flow path.
type PodResolver interface {
	// PodLabels returns the pod's labels with their source prefix ("k8s:app=web"), including
	// k8s:io.kubernetes.pod.namespace, and its owner ("Deployment/web"); ok is false for a
	// pod it does not know.
	PodLabels(namespace, pod string) (labels []string, workload string, ok bool)
}

// maxUnresolved bounds the refused workloads a Normalizer remembers for reports.
const maxUnresolved = 100

type labelsEntry struct {
	raw    []string
	labels Labels
	ns     string
}

// maxLabelCache bounds the label cache; it is cleared when full, which only costs time.
const maxLabelCache = 1 << 16

// NewNormalizer returns a Normalizer using the given label filter (nil: defaults only).
func NewNormalizer(f *LabelFilter) *Normalizer {
	if f == nil {
		f, _ = NewLabelFilter(nil, nil) // default patterns are constants and compile
	}
	return &Normalizer{labels: f, cache: make(map[uint32]labelsEntry), workloads: make(map[[2]string]string),
		unresolved: make(map[string]*refusal)}
}

// WithResolver makes n resolve label-less pods through r (nil: refuse them). Call it before
// the first record is normalized.
func (n *Normalizer) WithResolver(r PodResolver) *Normalizer {
	n.pods = r
	return n
}

// Unresolved lists, per workload (at most maxUnresolved, sorted), the pods whose flows were
// skipped with SkipNoIdentity and why: "namespace/workload (pods p1, p2): why". The workload
// is guessed from the pod names for this report only; it never becomes a selector.
func (n *Normalizer) Unresolved() []string {
	n.umu.Lock()
	defer n.umu.Unlock()
	out := make([]string, 0, len(n.unresolved))
	for k, r := range n.unresolved {
		pods := strings.Join(slices.Sorted(maps.Keys(r.pods)), ", ")
		if r.more {
			pods += " and more"
		}
		out = append(out, fmt.Sprintf("%s (pods %s): %s", k, pods, r.why))
	}
	slices.Sort(out)
	return out
}

func (n *Normalizer) refuse(ns, pod, why string) {
	key := ns + "/" + ownerGuess(pod)
	n.umu.Lock()
	defer n.umu.Unlock()
	r := n.unresolved[key]
	if r == nil {
		if len(n.unresolved) >= maxUnresolved {
			return
		}
		r = &refusal{why: why, pods: make(map[string]struct{})}
		n.unresolved[key] = r
	}
	if _, ok := r.pods[pod]; ok {
		return
	}
	if len(r.pods) >= maxRefusedPods {
		r.more = true
		return
	}
	r.pods[pod] = struct{}{}
}

// ownerGuess strips the suffixes Kubernetes controllers add to pod names: a ReplicaSet's
// pod-template hash and the random five characters ("web-6d5f8c7b9d-x2x4k" -> "web"), or the
// five characters alone (DaemonSet, Job: "node-local-dns-r99x7" -> "node-local-dns"). Both are
// drawn from the alphabet of k8s.io/apimachinery's rand.String, which has no vowels.
func ownerGuess(pod string) string {
	parts := strings.Split(pod, "-")
	isRand := func(s string, min, max int) bool {
		if len(s) < min || len(s) > max {
			return false
		}
		for _, c := range s {
			if !strings.ContainsRune("bcdfghjklmnpqrstvwxz2456789", c) {
				return false
			}
		}
		return true
	}
	if len(parts) < 2 || !isRand(parts[len(parts)-1], 5, 5) {
		return pod
	}
	parts = parts[:len(parts)-1]
	if len(parts) >= 2 && isRand(parts[len(parts)-1], 6, 10) {
		parts = parts[:len(parts)-1]
	}
	return strings.Join(parts, "-")
}

// Response normalizes one GetFlows response: a flow, or a lost-events notice. Node status
// messages and anything else are skipped with SkipNoFlow.
func (n *Normalizer) Response(resp *observerpb.GetFlowsResponse) (*Event, SkipReason) {
	switch r := resp.GetResponseTypes().(type) {
	case *observerpb.GetFlowsResponse_Flow:
		return n.Flow(r.Flow)
	case *observerpb.GetFlowsResponse_LostEvents:
		ev := &Event{
			Kind: KindLost,
			Time: resp.GetTime().AsTime(),
			Node: resp.GetNodeName(),
			Lost: &Lost{Source: r.LostEvents.GetSource().String(), Count: r.LostEvents.GetNumEventsLost()},
		}
		ev.ID = fingerprint(ev.Node, "lost", ev.Lost.Source, uint64(ev.Time.UnixNano()), uint64(r.LostEvents.GetCpu().GetValue()))
		return ev, SkipNone
	}
	return nil, SkipNoFlow
}

// Flow normalizes one Hubble flow.
func (n *Normalizer) Flow(f *flowpb.Flow) (*Event, SkipReason) {
	ev := &Event{
		Kind:       KindFlow,
		Time:       f.GetTime().AsTime(),
		Node:       f.GetNodeName(),
		Verdict:    verdictOf(f.GetVerdict()),
		DropReason: dropReason(f),
		Type:       eventTypeOf(f),
	}
	if f.GetSource() == nil && f.GetDestination() == nil {
		return nil, SkipNoEndpoint
	}
	if ev.Type == EventUnknown {
		if f.GetEventType() == nil && f.GetType() == flowpb.FlowType_UNKNOWN_TYPE {
			// Nothing says what kind of event this is, and it has neither l4 nor l7 to infer
			// it from (eventTypeOf would have): a field mask without them.
			return nil, SkipNoL4
		}
		return nil, SkipEventType
	}
	ev.ID = flowID(f)

	src, dst := f.GetSource(), f.GetDestination()
	srcIP, dstIP := f.GetIP().GetSource(), f.GetIP().GetDestination()
	srcNames, dstNames := f.GetSourceNames(), f.GetDestinationNames()
	proto, sport, dport, role := l4(f)

	if ev.Type == EventL7 {
		l7, reply := n.l7(f)
		ev.L7 = l7
		// L7 responses come from the server: flip so Src stays the client. DNS responses carry
		// the answer (query -> IPs), which is what links external IPs to names.
		if reply {
			src, dst = dst, src
			srcIP, dstIP = dstIP, srcIP
			srcNames, dstNames = dstNames, srcNames
			sport, dport = dport, sport
		}
		ev.Reply = false
	} else {
		if proto == ProtoUnknown {
			return nil, SkipNoL4
		}
		if isReply(f, role) == replyYes {
			return nil, SkipReply
		}
	}

	ev.Proto, ev.Port, ev.SrcPort = proto, dport, sport
	ev.SrcAddr, ev.DstAddr = srcIP, dstIP
	var srcOK, dstOK bool
	ev.Src, srcOK = n.peer(src, srcIP, srcNames, true)
	ev.Dst, dstOK = n.peer(dst, dstIP, dstNames, false) // both ends, so every refused pod is named
	if !srcOK || !dstOK {
		return nil, SkipNoIdentity
	}
	ev.Point = observationPoint(f)
	ev.AllowedBy = policyRefs(f.GetEgressAllowedBy(), f.GetIngressAllowedBy())
	ev.DeniedBy = policyRefs(f.GetEgressDeniedBy(), f.GetIngressDeniedBy())
	if l := f.GetPolicyLog(); len(l) > 0 {
		ev.PolicyLog = slices.Compact(slices.Sorted(slices.Values(l)))
	}
	return ev, SkipNone
}

func verdictOf(v flowpb.Verdict) Verdict {
	switch v {
	case flowpb.Verdict_FORWARDED:
		return VerdictForwarded
	case flowpb.Verdict_DROPPED:
		return VerdictDropped
	case flowpb.Verdict_AUDIT:
		return VerdictAudit
	case flowpb.Verdict_ERROR:
		return VerdictError
	case flowpb.Verdict_REDIRECTED:
		return VerdictRedirected
	case flowpb.Verdict_TRACED:
		return VerdictTraced
	case flowpb.Verdict_TRANSLATED:
		return VerdictTranslated
	}
	return VerdictUnknown
}

func dropReason(f *flowpb.Flow) string {
	if f.GetVerdict() != flowpb.Verdict_DROPPED {
		return ""
	}
	if d := f.GetDropReasonDesc(); d != flowpb.DropReason_DROP_REASON_UNKNOWN {
		return d.String()
	}
	return ""
}

// IsPolicyDrop reports whether a drop reason means policy denied the flow.
func IsPolicyDrop(reason string) bool {
	switch reason {
	case flowpb.DropReason_POLICY_DENIED.String(), flowpb.DropReason_POLICY_DENY.String(),
		flowpb.DropReason_AUTH_REQUIRED.String():
		return true
	}
	return false
}

// Cilium monitor message types (pkg/monitor/api): Hubble puts them in event_type.type.
const (
	monitorDrop          = 1
	monitorTrace         = 4
	monitorPolicyVerdict = 5
	monitorAccessLog     = 129
)

func eventTypeOf(f *flowpb.Flow) EventType {
	switch f.GetEventType().GetType() {
	case monitorTrace:
		return EventTrace
	case monitorDrop:
		return EventDrop
	case monitorPolicyVerdict:
		return EventPolicyVerdict
	case monitorAccessLog:
		return EventL7
	}
	if f.GetEventType() != nil {
		return EventUnknown // debug, capture and other monitor events carry no policy evidence
	}
	// Records without event_type (hand-made or old recordings): infer from the flow type, and
	// without that either (exporter output written with a field mask that leaves out
	// event_type and Type) from the fields present: an l7 record is a proxy record, l4 alone
	// a trace or, dropped, a drop notification.
	switch {
	case f.GetType() == flowpb.FlowType_L7, f.GetType() == flowpb.FlowType_UNKNOWN_TYPE && f.GetL7() != nil:
		return EventL7
	case f.GetType() == flowpb.FlowType_L3_L4, f.GetType() == flowpb.FlowType_UNKNOWN_TYPE && f.GetL4() != nil:
		if f.GetVerdict() == flowpb.Verdict_DROPPED {
			return EventDrop
		}
		return EventTrace
	}
	return EventUnknown
}

// role is what the port pair and TCP flags say about who sent a packet.
type role uint8

const (
	roleUnknown     role = iota
	roleClientFirst      // source is the client (SYN without ACK, ICMP request, ephemeral -> well-known)
	roleServerFirst      // source is the server (SYN+ACK, ICMP reply, well-known -> ephemeral)
)

// ephemeralMin is the lowest port Linux hands out for outgoing connections by default
// (net.ipv4.ip_local_port_range = 32768 60999); below it a port is taken as a service port.
const ephemeralMin = 32768

func portRole(sport, dport uint32) role {
	switch {
	case sport >= ephemeralMin && dport < ephemeralMin:
		return roleClientFirst
	case dport >= ephemeralMin && sport < ephemeralMin:
		return roleServerFirst
	case sport < 1024 && dport >= 1024:
		return roleServerFirst
	case dport < 1024 && sport >= 1024:
		return roleClientFirst
	}
	return roleUnknown
}

// l4 extracts protocol, source and destination port (ICMP: type) and the role the packet
// itself reveals.
func l4(f *flowpb.Flow) (Protocol, uint16, uint16, role) {
	l := f.GetL4()
	switch {
	case l.GetTCP() != nil:
		t := l.GetTCP()
		r := portRole(t.GetSourcePort(), t.GetDestinationPort())
		if fl := t.GetFlags(); fl != nil && fl.GetSYN() {
			if fl.GetACK() {
				r = roleServerFirst
			} else {
				r = roleClientFirst
			}
		}
		return ProtoTCP, port16(t.GetSourcePort()), port16(t.GetDestinationPort()), r
	case l.GetUDP() != nil:
		u := l.GetUDP()
		return ProtoUDP, port16(u.GetSourcePort()), port16(u.GetDestinationPort()), portRole(u.GetSourcePort(), u.GetDestinationPort())
	case l.GetSCTP() != nil:
		s := l.GetSCTP()
		return ProtoSCTP, port16(s.GetSourcePort()), port16(s.GetDestinationPort()), portRole(s.GetSourcePort(), s.GetDestinationPort())
	case l.GetICMPv4() != nil:
		typ := l.GetICMPv4().GetType()
		r := roleUnknown
		switch typ {
		case 8, 13, 15, 17: // echo, timestamp, info, address mask requests
			r = roleClientFirst
		case 0, 14, 16, 18:
			r = roleServerFirst
		}
		return ProtoICMPv4, 0, icmpType16(typ), r
	case l.GetICMPv6() != nil:
		typ := l.GetICMPv6().GetType()
		r := roleUnknown
		switch typ {
		case 128:
			r = roleClientFirst
		case 129:
			r = roleServerFirst
		}
		return ProtoICMPv6, 0, icmpType16(typ), r
	}
	return ProtoUnknown, 0, 0, roleUnknown
}

type replyState uint8

const (
	replyUnknown replyState = iota
	replyNo
	replyYes
)

// isReply combines Hubble's is_reply (authoritative when set: it comes from conntrack) with
// what the packet itself shows. traffic_direction is deliberately not used: with no policy on
// the destination Hubble reports both ends as EGRESS.
func isReply(f *flowpb.Flow, r role) replyState {
	if b := f.GetIsReply(); b != nil {
		if b.GetValue() {
			return replyYes
		}
		return replyNo
	}
	if f.GetReply() {
		return replyYes
	}
	if r == roleServerFirst {
		// No reply flag, but the packet runs from the well-known port to an ephemeral one (or
		// is a SYN+ACK): server-to-client traffic of a connection that started before we looked.
		return replyYes
	}
	return replyUnknown
}

func (n *Normalizer) l7(f *flowpb.Flow) (*L7, bool) {
	l := f.GetL7()
	reply := l.GetType() == flowpb.L7FlowType_RESPONSE
	switch {
	case l.GetDns() != nil:
		d := l.GetDns()
		return &L7{DNS: &DNS{Query: d.GetQuery(), Rcode: d.GetRcode(), IPs: d.GetIps(), Response: reply}}, reply
	case l.GetHttp() != nil:
		h := l.GetHttp()
		host, path := splitURL(h.GetUrl())
		return &L7{HTTP: &HTTP{Method: h.GetMethod(), Host: host, Path: path, Code: h.GetCode()}}, reply
	}
	return nil, reply
}

// splitURL splits "http://host:port/path?query" into host and path (query dropped: it holds
// identifiers and secrets, and Cilium HTTP rules match the path).
func splitURL(u string) (host, path string) {
	if i := strings.Index(u, "://"); i >= 0 {
		u = u[i+3:]
		if j := strings.IndexByte(u, '/'); j >= 0 {
			host, u = u[:j], u[j:]
		} else {
			host, u = u, "/"
		}
	}
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	if u == "" {
		u = "/"
	}
	return host, u
}

// entityPriority orders reserved labels when an identity carries several
// (kube-apiserver traffic often also says host or remote-node).
var entityPriority = []string{"kube-apiserver", "host", "remote-node", "health", "init", "ingress", "unmanaged", "world", "world-ipv4", "world-ipv6"}

// identityHost is Cilium's reserved identity of the local node. When the API server runs on
// the node, that identity also carries reserved:kube-apiserver: connections a pod opens to it
// are the API server's, but connections it opens (kubelet probes) are the host's.
const identityHost = 1

// peer classifies one end of a flow; client says it is the end that opened the connection.
// It returns false when the end is a pod known only by namespace and pod name that the
// resolver could not resolve: no selector can be written for it, and guessing one (or a /32
// for a pod IP) would be wrong.
func (n *Normalizer) peer(ep *flowpb.Endpoint, ip string, names []string, client bool) (Peer, bool) {
	if ep == nil {
		return Peer{Kind: PeerWorld, Entity: "world", IP: ip, Names: cleanNames(names)}, true
	}
	if client && ep.GetIdentity() == identityHost {
		return Peer{Kind: PeerEntity, Entity: "host", Identity: identityHost}, true
	}
	var reserved []string
	for _, l := range ep.GetLabels() {
		if v, ok := strings.CutPrefix(l, "reserved:"); ok {
			reserved = append(reserved, v)
		}
	}
	if len(reserved) > 0 {
		for _, e := range entityPriority {
			if slices.Contains(reserved, e) {
				if strings.HasPrefix(e, "world") {
					if ep.GetPodName() != "" && ep.GetNamespace() != "" {
						// The proxy saw a pod (often one on another node) as world: the pod
						// name says it is in the cluster, so it is neither world nor a CIDR.
						return n.resolve(ep, "reported as reserved:world by the proxy")
					}
					return Peer{Kind: PeerWorld, Entity: "world", IP: ip, Names: cleanNames(names), Identity: ep.GetIdentity()}, true
				}
				return Peer{Kind: PeerEntity, Entity: e, Identity: ep.GetIdentity()}, true
			}
		}
		return Peer{Kind: PeerEntity, Entity: reserved[0], Identity: ep.GetIdentity()}, true
	}
	if len(ep.GetLabels()) == 0 && ep.GetPodName() != "" && ep.GetNamespace() != "" {
		return n.resolve(ep, "flow carries no labels (exporter field mask without labels?)")
	}
	labels, ns := n.filterLabels(ep.GetIdentity(), ep.GetLabels())
	if ep.GetNamespace() != "" {
		ns = ep.GetNamespace()
	}
	if ns == "" && len(labels) == 0 {
		// Identity 2 without labels, or an endpoint Hubble could not resolve: outside the cluster.
		return Peer{Kind: PeerWorld, Entity: "world", IP: ip, Names: cleanNames(names), Identity: ep.GetIdentity()}, true
	}
	p := Peer{Kind: PeerWorkload, Namespace: ns, Labels: labels, Identity: ep.GetIdentity()}
	if ws := ep.GetWorkloads(); len(ws) > 0 {
		p.Workload = n.workloadName(ws[0].GetKind(), ws[0].GetName())
	}
	return p, true
}

// workloadName returns "kind/name", the same string for every flow of the workload.
func (n *Normalizer) workloadName(kind, name string) string {
	k := [2]string{kind, name}
	n.mu.RLock()
	s, ok := n.workloads[k]
	n.mu.RUnlock()
	if ok {
		return s
	}
	s = kind + "/" + name
	n.mu.Lock()
	putCapped(n.workloads, k, s, maxLabelCache)
	n.mu.Unlock()
	return s
}

// putCapped stores v at k in a cache of what a stream repeats, first emptying it once it
// holds limit entries: bounded against what a stream does not repeat.
func putCapped[K comparable, V any](m map[K]V, k K, v V, limit int) {
	if len(m) >= limit {
		clear(m)
	}
	m[k] = v
}

// resolve looks a label-less pod up through the resolver, or records the refusal.
func (n *Normalizer) resolve(ep *flowpb.Endpoint, why string) (Peer, bool) {
	ns, pod := ep.GetNamespace(), ep.GetPodName()
	if n.pods == nil {
		n.refuse(ns, pod, why+"; not connected to the cluster, so its labels are unknown")
		return Peer{}, false
	}
	raw, workload, ok := n.pods.PodLabels(ns, pod)
	if !ok {
		n.refuse(ns, pod, why+"; the cluster has no such pod (any more)")
		return Peer{}, false
	}
	labels, _ := n.labels.Filter(raw)
	return Peer{Kind: PeerWorkload, Namespace: ns, Labels: labels, Workload: workload}, true
}

func (n *Normalizer) filterLabels(id uint32, raw []string) (Labels, string) {
	n.mu.RLock()
	e, ok := n.cache[id]
	n.mu.RUnlock()
	if ok && slices.Equal(e.raw, raw) {
		return e.labels, e.ns
	}
	l, ns := n.labels.Filter(raw)
	n.mu.Lock()
	putCapped(n.cache, id, labelsEntry{raw: slices.Clone(raw), labels: l, ns: ns}, maxLabelCache)
	n.mu.Unlock()
	return l, ns
}

// cleanNames returns the DNS names without trailing dots, sorted and unique.
func cleanNames(names []string) []string {
	if len(names) == 0 {
		return nil
	}
	out := make([]string, 0, len(names))
	for _, n := range names {
		if n = strings.TrimSuffix(strings.ToLower(n), "."); n != "" {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func observationPoint(f *flowpb.Flow) Direction {
	switch f.GetTraceObservationPoint() {
	case flowpb.TraceObservationPoint_TO_ENDPOINT:
		return DirectionIngress
	case flowpb.TraceObservationPoint_FROM_ENDPOINT, flowpb.TraceObservationPoint_TO_STACK,
		flowpb.TraceObservationPoint_TO_NETWORK, flowpb.TraceObservationPoint_TO_OVERLAY:
		return DirectionEgress
	}
	switch f.GetTrafficDirection() {
	case flowpb.TrafficDirection_INGRESS:
		return DirectionIngress
	case flowpb.TrafficDirection_EGRESS:
		return DirectionEgress
	}
	return DirectionUnknown
}

func policyRefs(lists ...[]*flowpb.Policy) []PolicyRef {
	var out []PolicyRef
	for _, l := range lists {
		for _, p := range l {
			out = append(out, PolicyRef{Kind: p.GetKind(), Namespace: p.GetNamespace(), Name: p.GetName()})
		}
	}
	return out
}

// flowID fingerprints a flow. Hubble sets a UUID on every flow; recordings without one fall
// back to the fields that make a record unique on its node.
func flowID(f *flowpb.Flow) uint64 {
	if u := f.GetUuid(); u != "" {
		return fnvString(fnvOffset, u)
	}
	_, sp, dp, _ := l4(f)
	return fingerprint(f.GetNodeName(), f.GetIP().GetSource(), f.GetIP().GetDestination(),
		uint64(f.GetTime().AsTime().UnixNano()), uint64(sp)<<16|uint64(dp)|uint64(f.GetEventType().GetType())<<32|uint64(f.GetVerdict())<<40|uint64(f.GetTraceObservationPoint())<<48)
}

func fingerprint(a, b, c string, x, y uint64) uint64 {
	h := uint64(fnvOffset)
	for _, s := range []string{a, b, c} {
		h = fnvString(h, s)
		h = fnvByte(h, 0)
	}
	for _, v := range []uint64{x, y} {
		for i := range 8 {
			h = fnvByte(h, byte(v>>(8*i)))
		}
	}
	return h
}

// FNV-1a, inlined: hash/fnv would allocate a hasher and a byte copy per flow.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvByte(h uint64, b byte) uint64 { return (h ^ uint64(b)) * fnvPrime }

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = fnvByte(h, s[i])
	}
	return h
}
