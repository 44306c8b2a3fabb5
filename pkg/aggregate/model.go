package aggregate

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// WorkloadKey identifies a workload: its namespace and canonical stable label set.
type WorkloadKey struct {
	Namespace string
	Labels    flows.Labels
}

// String is the canonical form "namespace/label1,label2", used as the bucket key.
func (k WorkloadKey) String() string { return k.Namespace + "/" + k.Labels.String() }

// PeerKind classifies the other end of an edge.
type PeerKind uint8

const (
	PeerWorkload PeerKind = iota + 1 // a workload in the cluster (Namespace + Labels)
	PeerEntity                       // a Cilium reserved entity (Entity)
	PeerFQDN                         // an external name Hubble or a DNS answer linked to the IP (FQDN)
	PeerCIDR                         // an external address with no known name (CIDR, a /32 or /128 when stored)
)

func (k PeerKind) String() string {
	switch k {
	case PeerWorkload:
		return "workload"
	case PeerEntity:
		return "entity"
	case PeerFQDN:
		return "fqdn"
	case PeerCIDR:
		return "cidr"
	}
	return "unknown"
}

// Peer is the other end of an edge.
type Peer struct {
	Kind      PeerKind
	Namespace string       // PeerWorkload
	Labels    flows.Labels // PeerWorkload
	Entity    string       // PeerEntity: host, remote-node, kube-apiserver, health, world, ...
	FQDN      string       // PeerFQDN, lower case, no trailing dot
	CIDR      string       // PeerCIDR, e.g. "203.0.113.7/32"
}

// Key is a canonical string for the peer ("workload:ns/labels", "entity:host", "fqdn:api.example.com", "cidr:1.2.3.4/32").
func (p Peer) Key() string {
	switch p.Kind {
	case PeerWorkload:
		return "workload:" + p.Namespace + "/" + p.Labels.String()
	case PeerEntity:
		return "entity:" + p.Entity
	case PeerFQDN:
		return "fqdn:" + p.FQDN
	case PeerCIDR:
		return "cidr:" + p.CIDR
	}
	return "unknown"
}

// Counts are the verdict counters of an edge.
type Counts struct {
	Forwarded   uint64
	Dropped     uint64 // dropped by the datapath (any reason)
	PolicyDrops uint64 // the subset of Dropped denied by policy
	Audit       uint64 // AUDIT verdicts: Cilium in policy-audit-mode would have denied
	Other       uint64 // ERROR, TRACED, TRANSLATED, UNKNOWN
	// L7 counts forwarded proxy records (DNS, HTTP). They are not part of Total: the L3/L4
	// trace of the same packet is already counted. L7 drops and audits are counted in
	// Dropped/Audit, since no L3/L4 record reports them.
	L7 uint64
}

// Total is the number of observations folded into the edge.
func (c Counts) Total() uint64 { return c.Forwarded + c.Dropped + c.Audit + c.Other }

// add adds o to c.
func (c *Counts) add(o Counts) {
	c.Forwarded += o.Forwarded
	c.Dropped += o.Dropped
	c.PolicyDrops += o.PolicyDrops
	c.Audit += o.Audit
	c.Other += o.Other
	c.L7 += o.L7
}

// HTTPSample is one observed HTTP method and path shape on an edge: Path is the smallest path
// seen with that shape, Count how many requests had it. Stores written before samples were kept
// by shape hold one sample per path; the Aggregator folds them when it loads a store.
type HTTPSample struct {
	Method string
	Path   string
	Count  uint64
}

// EdgeKey identifies an edge: (workload, direction, peer, protocol, port).
type EdgeKey struct {
	Workload  WorkloadKey
	Direction flows.Direction // ingress: Peer is the client; egress: Peer is the server
	Peer      Peer
	Proto     flows.Protocol
	// Port is the server port (ICMP: type). When Collapsed, the edge stands for every port in
	// [Port, EndPort] seen from this peer, and Port/EndPort are the observed bounds.
	Port uint16
	// Collapsed marks the one range edge that replaced the per-port edges of (Workload,
	// Direction, Peer, Proto) once they exceeded the port limit; see Config.MaxPorts.
	Collapsed bool
}

// Edge is what the store knows about one edge.
type Edge struct {
	EdgeKey
	EndPort   uint16 // the upper bound of a Collapsed edge's port range; equal to Port otherwise
	Counts    Counts
	FirstSeen time.Time
	LastSeen  time.Time
	// DNSNames are the names the workload looked up over this edge (egress edges to a DNS
	// server), sorted, at most Config.MaxDNSNames.
	DNSNames []string
	// HTTP holds the HTTP requests seen on the edge, one sample per method and path shape
	// (flows.HTTPPathShape), sorted by method then shape, at most Config.MaxHTTPSamples.
	HTTP []HTTPSample
	// Truncated says DNSNames or HTTP reached their bound and later distinct values were not kept.
	Truncated bool
}

// Workload is what the store knows about one workload besides its edges.
type Workload struct {
	Key       WorkloadKey
	Names     []string // owner names Hubble reported ("Deployment/web"), for reports
	FirstSeen time.Time
	LastSeen  time.Time
	Flows     uint64 // observations in which the workload took part
	// Nodes are the nodes its flows were observed on: a lost-events notice on one of them
	// means the workload was not fully observed.
	Nodes []string
}

// NodeLost is the Hubble lost-events total for a node.
type NodeLost struct {
	Node string
	Lost uint64
	Last time.Time
}

// Snapshot is a consistent copy of the store (read in one transaction), the input of synthesis
// and audit. Workloads are sorted by key; each workload's edges are sorted by EdgeKey.
type Snapshot struct {
	Workloads []Workload
	Edges     map[string][]Edge // keyed by WorkloadKey.String()
	From, To  time.Time         // observation window covered
	Flows     uint64            // events aggregated in total
	Lost      []NodeLost
	Overflow  uint64 // observations dropped because a cap was reached
	Rejected  uint64 // malformed records dropped, see recommender_aggregate_rejected_total
	// Churning are the label keys dropped from workload identities because their values kept
	// changing, sorted.
	Churning []ChurningLabel
	// DNS maps an external IP to the names DNS answers linked it to (lower case, no trailing dot).
	DNS map[string][]string
	// dnsLast is when each DNS entry was last confirmed; it lets a restored Aggregator keep
	// evicting and expiring the oldest answers first.
	dnsLast map[string]time.Time
}

// Workload returns the workload with the given key (WorkloadKey.String()) and its edges.
func (s *Snapshot) Workload(key string) (*Workload, []Edge, bool) {
	i, ok := slices.BinarySearchFunc(s.Workloads, key, func(w Workload, k string) int {
		return strings.Compare(w.Key.String(), k)
	})
	if !ok {
		return nil, nil, false
	}
	return &s.Workloads[i], s.Edges[key], true
}

// EdgeCount is the number of edges in the snapshot.
func (s *Snapshot) EdgeCount() int {
	n := 0
	for _, es := range s.Edges {
		n += len(es)
	}
	return n
}

// Expired returns the snapshot as Aggregator.Expire would leave it at cutoff: without the
// edges last seen before cutoff, the workloads left without edges and not seen since, and the
// DNS answers not confirmed since (an answer whose age the snapshot does not carry, as one
// read from the JSON form, is kept). It is for a snapshot no aggregator expires any more, such as the last
// summary of a replica that left the set (package replicas). The result shares what it keeps
// with s; s itself is returned, unchanged, when nothing expired.
func (s *Snapshot) Expired(cutoff time.Time) *Snapshot {
	expired := false
	for _, es := range s.Edges {
		for i := range es {
			expired = expired || es[i].LastSeen.Before(cutoff)
		}
	}
	for _, w := range s.Workloads {
		expired = expired || len(s.Edges[w.Key.String()]) == 0 && w.LastSeen.Before(cutoff)
	}
	for ip := range s.DNS {
		expired = expired || dnsExpired(s.dnsLast[ip], cutoff)
	}
	if !expired {
		return s
	}
	out := *s
	out.Edges = make(map[string][]Edge, len(s.Edges))
	for key, es := range s.Edges {
		kept := make([]Edge, 0, len(es))
		for _, e := range es {
			if !e.LastSeen.Before(cutoff) {
				kept = append(kept, e)
			}
		}
		if len(kept) > 0 {
			out.Edges[key] = kept
		}
	}
	out.Workloads = make([]Workload, 0, len(s.Workloads))
	for _, w := range s.Workloads {
		if len(out.Edges[w.Key.String()]) > 0 || !w.LastSeen.Before(cutoff) {
			out.Workloads = append(out.Workloads, w)
		}
	}
	out.DNS = make(map[string][]string, len(s.DNS))
	out.dnsLast = make(map[string]time.Time, len(s.dnsLast))
	for ip, names := range s.DNS {
		last, ok := s.dnsLast[ip]
		if dnsExpired(last, cutoff) {
			continue
		}
		out.DNS[ip] = names
		if ok {
			out.dnsLast[ip] = last
		}
	}
	return &out
}

// dnsExpired reports whether a DNS answer last confirmed at last is older than cutoff; a zero
// time is an age the snapshot did not carry.
func dnsExpired(last, cutoff time.Time) bool { return !last.IsZero() && last.Before(cutoff) }

// compareEdgeKeys orders the edges of one workload as the store's keys do (doc.go): direction,
// peer key, protocol, per-port before collapsed, port.
func compareEdgeKeys(a, b *EdgeKey) int { return compareEdgeKeysWith(a, b, a.Peer.Key(), b.Peer.Key()) }

// compareEdgeKeysWith is compareEdgeKeys given the peers' keys, for callers that built them once.
func compareEdgeKeysWith(a, b *EdgeKey, peerA, peerB string) int {
	if c := cmp.Compare(a.Direction, b.Direction); c != 0 {
		return c
	}
	if c := strings.Compare(peerA, peerB); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Proto, b.Proto); c != 0 {
		return c
	}
	if a.Collapsed != b.Collapsed {
		if a.Collapsed {
			return 1
		}
		return -1
	}
	return cmp.Compare(a.Port, b.Port)
}
