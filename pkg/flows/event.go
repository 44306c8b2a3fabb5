package flows

import (
	"strconv"
	"time"
)

// Kind says what an Event reports.
type Kind uint8

const (
	// KindFlow is one observed packet or connection event.
	KindFlow Kind = iota + 1
	// KindLost reports that Hubble lost events on a node: the window around it was not fully observed.
	KindLost
)

// Protocol is the L4 protocol of a flow.
type Protocol uint8

const (
	ProtoUnknown Protocol = iota
	ProtoTCP
	ProtoUDP
	ProtoSCTP
	ProtoICMPv4
	ProtoICMPv6
)

var protoNames = [...]string{"UNKNOWN", "TCP", "UDP", "SCTP", "ICMPv4", "ICMPv6"}

func (p Protocol) String() string {
	if int(p) < len(protoNames) {
		return protoNames[p]
	}
	return "UNKNOWN"
}

// ParseProtocol is the inverse of Protocol.String (case-sensitive).
func ParseProtocol(s string) Protocol {
	for i, n := range protoNames {
		if n == s {
			return Protocol(i)
		}
	}
	return ProtoUnknown
}

// IsICMP reports whether Port holds an ICMP type rather than a port.
func (p Protocol) IsICMP() bool { return p == ProtoICMPv4 || p == ProtoICMPv6 }

// Verdict is what the datapath did with a flow.
type Verdict uint8

const (
	VerdictUnknown Verdict = iota
	VerdictForwarded
	VerdictDropped
	VerdictAudit // Cilium in policy-audit-mode: a policy would have denied it
	VerdictError
	VerdictRedirected
	VerdictTraced
	VerdictTranslated
)

var verdictNames = [...]string{"UNKNOWN", "FORWARDED", "DROPPED", "AUDIT", "ERROR", "REDIRECTED", "TRACED", "TRANSLATED"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "UNKNOWN"
}

// Direction is a side of an endpoint: traffic entering it (ingress) or leaving it (egress).
type Direction uint8

const (
	DirectionUnknown Direction = iota
	DirectionIngress
	DirectionEgress
)

func (d Direction) String() string {
	switch d {
	case DirectionIngress:
		return "ingress"
	case DirectionEgress:
		return "egress"
	}
	return "unknown"
}

// EventType is the Hubble monitor event class a flow came from.
type EventType uint8

const (
	EventUnknown       EventType = iota
	EventTrace                   // L3/L4 trace (monitor type 4)
	EventDrop                    // drop notification (monitor type 1)
	EventPolicyVerdict           // policy verdict notification (monitor type 5)
	EventL7                      // proxy access log: DNS, HTTP (monitor type 129)
)

var eventTypeNames = [...]string{"unknown", "trace", "drop", "policy-verdict", "l7"}

func (t EventType) String() string {
	if int(t) < len(eventTypeNames) {
		return eventTypeNames[t]
	}
	return "unknown"
}

// PeerKind classifies the far end of a flow.
type PeerKind uint8

const (
	PeerUnknown  PeerKind = iota
	PeerWorkload          // a Cilium-managed pod, identified by namespace + stable labels
	PeerEntity            // a reserved identity other than world: host, remote-node, kube-apiserver, health, ...
	PeerWorld             // outside the cluster; IP and DNS names identify it
)

var peerKindNames = [...]string{"unknown", "workload", "entity", "world"}

func (k PeerKind) String() string {
	if int(k) < len(peerKindNames) {
		return peerKindNames[k]
	}
	return "unknown"
}

// Peer is one end of a flow after normalization.
type Peer struct {
	Kind PeerKind
	// Namespace and Labels identify a workload. Labels keep Cilium's source prefix
	// ("k8s:app=web") so selectors can be written from them, and hold only stable labels.
	Namespace string
	Labels    Labels
	// Entity is the Cilium entity name for reserved peers ("host", "remote-node",
	// "kube-apiserver", "health", "world", "init", "unmanaged", "ingress").
	Entity string
	// IP is kept for world peers only: pod IPs churn and must never identify a workload.
	IP string
	// Names are the DNS names Hubble linked to a world peer's IP: lower case, without a
	// trailing dot, sorted and unique (the normalizer's cleanNames).
	Names []string
	// Identity is Cilium's numeric security identity (informational).
	Identity uint32
	// Workload is the owner Hubble reported ("Deployment/web"), for reports only.
	Workload string
}

// Key returns a stable string identifying the peer for aggregation.
// Workloads: "ns/label1,label2"; entities: "entity:host"; world: "world:IP".
func (p *Peer) Key() string {
	switch p.Kind {
	case PeerWorkload:
		return p.Namespace + "/" + p.Labels.String()
	case PeerEntity:
		return "entity:" + p.Entity
	case PeerWorld:
		return "world:" + p.IP
	}
	return "unknown"
}

// String is a short human form used in tables and logs.
func (p *Peer) String() string {
	switch p.Kind {
	case PeerWorkload:
		if p.Workload != "" {
			return p.Namespace + "/" + p.Workload
		}
		return p.Namespace + "/" + p.Labels.Short()
	case PeerEntity:
		return "reserved:" + p.Entity
	case PeerWorld:
		if len(p.Names) > 0 {
			return p.Names[0] + "(" + p.IP + ")"
		}
		return "world:" + p.IP
	}
	return "unknown"
}

// DNS summarizes a DNS proxy record.
type DNS struct {
	Query    string // as Hubble reports it, with trailing dot
	Rcode    uint32
	IPs      []string
	Response bool // a response (Hubble saw the answer) rather than the request
}

// HTTP summarizes an HTTP proxy record.
type HTTP struct {
	Method string
	Host   string
	Path   string
	Code   uint32
}

// L7 is the proxy-visible part of a flow, when there is one.
type L7 struct {
	DNS  *DNS
	HTTP *HTTP
}

// PolicyRef names a policy Hubble reported as allowing or denying a flow.
type PolicyRef struct {
	Kind      string
	Namespace string
	Name      string
}

func (p PolicyRef) String() string {
	if p.Namespace != "" {
		return p.Kind + "/" + p.Namespace + "/" + p.Name
	}
	return p.Kind + "/" + p.Name
}

// Lost reports Hubble events lost on a node.
type Lost struct {
	Source string // PERF_EVENT_RING_BUFFER, OBSERVER_EVENTS_QUEUE, HUBBLE_RING_BUFFER
	Count  uint64
}

// Event is the normalized form of one Hubble flow (or lost-events notice), the one type
// every later stage consumes. Src is always the client (the side that opened the
// connection) and Dst the server, whatever direction Hubble reported.
type Event struct {
	Kind Kind
	Time time.Time
	Node string
	// ID fingerprints the original Hubble record; with (Node, Time) it lets a resumed
	// stream drop records it already delivered.
	ID uint64

	Type EventType
	// Point is where the flow was observed: at the egress of its client or the ingress of its server.
	Point Direction
	Src   Peer
	Dst   Peer
	Proto Protocol
	// Port is the server's port, or the ICMP type for ICMP.
	Port uint16
	// SrcPort is the client's (usually ephemeral) port; it is used to fold the two
	// observations of one connection and never becomes a rule.
	SrcPort uint16
	// SrcAddr and DstAddr are the packet's addresses (client, server). Like SrcPort they only
	// serve to fold observations; pod IPs churn and never identify a workload.
	SrcAddr, DstAddr string
	Verdict          Verdict
	DropReason       string
	// Reply marks server-to-client packets; sources skip them, so consumers rarely see one.
	Reply bool
	L7    *L7
	// Connection marks an L7 request that is the only proof of its connection: no L3/L4
	// record of the same connection was delivered within FoldWindow before it (captures of
	// L7 events alone). Consumers count it as they count a trace, keeping its L7 evidence.
	// Folder sets it; responses never have it.
	Connection bool

	// AllowedBy and DeniedBy are the policies Hubble names on policy verdicts
	// (ingress/egress_allowed_by, ingress/egress_denied_by; audited flows land in DeniedBy):
	// the attribution of a policy drop.
	AllowedBy []PolicyRef
	DeniedBy  []PolicyRef
	// PolicyLog holds the spec.log values of the policies that matched the flow (Hubble's
	// policy_log, Cilium 1.18+), sorted and unique; empty when none of them sets one.
	PolicyLog []string

	Lost *Lost
}

// PortString renders the port as in a Cilium toPorts rule ("443/TCP", "8/ICMPv4").
func (e *Event) PortString() string {
	return strconv.Itoa(int(e.Port)) + "/" + e.Proto.String()
}
