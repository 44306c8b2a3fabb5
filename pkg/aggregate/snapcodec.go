package aggregate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// snapshotMagic opens MarshalBinary's encoding; the byte after it is SnapshotVersion.
const snapshotMagic = "recommender-snapshot\x00"

// SnapshotVersion is the version of MarshalBinary's encoding. A change of the encoding
// bumps it, and with it the media type the replicas ask for (replicas.SummaryType), so that a
// replica of the older version is served the JSON form instead of bytes it cannot read.
const SnapshotVersion = 1

// ErrSnapshot is what UnmarshalBinary fails with on bytes that are not a snapshot this code
// wrote: truncated, damaged, of another version, or naming what no Aggregator keeps.
var ErrSnapshot = errors.New("malformed snapshot")

// MarshalBinary encodes the snapshot compactly, for the replicas to exchange (issue 19.3: as
// JSON, a summary of 100k edges was 80 MB and took 2 s of CPU to write and read). Each
// workload key and peer is written once, in a table, and each edge refers to them by index,
// followed by what appendEdgeTail writes for the store:
//
//	magic, version:1
//	flows, overflow, rejected, from, to
//	lost: count, then node, lost, last
//	churning: count, then namespace, owner, key
//	DNS: count, then IP, names, last confirmed (0 when unknown)
//	workload keys: count, then namespace, labels
//	workloads: count, then key index, names, first seen, last seen minus first, flows, nodes
//	peers: count, then appendPeerPart
//	edges: group count, then per group its key index and edge count, and per edge its
//	       direction:1, peer index and appendEdgeTail
//
// Numbers are varints and strings a length and the bytes, as in the store. The encoding is
// deterministic: maps are written in key order.
func (s *Snapshot) MarshalBinary() ([]byte, error) {
	var w snapshotWriter
	b := append([]byte(snapshotMagic), SnapshotVersion)
	b = binary.AppendUvarint(b, s.Flows)
	b = binary.AppendUvarint(b, s.Overflow)
	b = binary.AppendUvarint(b, s.Rejected)
	b = binary.AppendVarint(b, nanos(s.From))
	b = binary.AppendVarint(b, nanos(s.To))
	b = binary.AppendUvarint(b, uint64(len(s.Lost)))
	for _, l := range s.Lost {
		b = appendString(b, l.Node)
		b = binary.AppendUvarint(b, l.Lost)
		b = binary.AppendVarint(b, nanos(l.Last))
	}
	b = binary.AppendUvarint(b, uint64(len(s.Churning)))
	for _, c := range s.Churning {
		b = appendString(b, c.Namespace)
		b = appendString(b, c.Owner)
		b = appendString(b, c.Key)
	}
	b = binary.AppendUvarint(b, uint64(len(s.DNS)))
	for _, ip := range slices.Sorted(maps.Keys(s.DNS)) {
		b = appendString(b, ip)
		b = appendStrings(b, s.DNS[ip])
		b = binary.AppendVarint(b, nanos(s.dnsLast[ip]))
	}

	// The tables first: every workload key and peer the workloads and edges name.
	for i := range s.Workloads {
		w.workload(s.Workloads[i].Key)
	}
	var groups []string
	for _, g := range slices.Sorted(maps.Keys(s.Edges)) {
		if len(s.Edges[g]) > 0 {
			groups = append(groups, g)
		}
	}
	for _, g := range groups {
		es := s.Edges[g]
		if k := es[0].Workload.String(); k != g {
			return nil, fmt.Errorf("encode snapshot: edge of workload %q filed under %q", k, g)
		}
		w.workload(es[0].Workload)
		for i := range es {
			if !sameWorkload(&es[i].Workload, &es[0].Workload) {
				return nil, fmt.Errorf("encode snapshot: edge of workload %q filed under %q", es[i].Workload.String(), g)
			}
			w.peer(&es[i].Peer)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(w.wls)))
	for _, k := range w.wls {
		b = appendWorkloadPart(b, k)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Workloads)))
	for i := range s.Workloads {
		wl := &s.Workloads[i]
		first := nanos(wl.FirstSeen)
		b = binary.AppendUvarint(b, uint64(w.workload(wl.Key)))
		b = appendStrings(b, wl.Names)
		b = binary.AppendVarint(b, first)
		b = binary.AppendVarint(b, nanos(wl.LastSeen)-first)
		b = binary.AppendUvarint(b, wl.Flows)
		b = appendStrings(b, wl.Nodes)
	}
	b = binary.AppendUvarint(b, uint64(len(w.peers)))
	for i := range w.peers {
		b = appendPeerPart(b, &w.peers[i])
	}

	// One group per workload: Snapshot.Edges files each edge under its workload's key.
	b = binary.AppendUvarint(b, uint64(len(groups)))
	for _, g := range groups {
		es := s.Edges[g]
		wi := w.workload(es[0].Workload)
		b = binary.AppendUvarint(b, uint64(wi))
		b = binary.AppendUvarint(b, uint64(len(es)))
		for i := range es {
			e := &es[i]
			b = append(b, byte(e.Direction))
			b = binary.AppendUvarint(b, uint64(w.peer(&e.Peer)))
			b = appendEdgeTail(b, edgeTail{
				proto: e.Proto, port: e.Port, endPort: e.EndPort, collapsed: e.Collapsed, truncated: e.Truncated,
				counts: &e.Counts, first: nanos(e.FirstSeen), last: nanos(e.LastSeen), dns: e.DNSNames, http: e.HTTP,
			})
		}
	}
	return b, nil
}

// snapshotWriter numbers the workload keys and peers of a snapshot in the order first met.
// Peers are found by a hash of their fields, not by Peer.Key: joining the labels of every
// edge's peer into a string was most of the encoding's CPU.
type snapshotWriter struct {
	wlIdx   map[string]int
	wls     []WorkloadKey
	seed    maphash.Seed
	peerIdx map[uint64][]int // hash -> indexes in peers
	peers   []Peer
}

func (w *snapshotWriter) workload(k WorkloadKey) int {
	if w.wlIdx == nil {
		w.wlIdx = make(map[string]int)
	}
	s := k.String()
	i, ok := w.wlIdx[s]
	if !ok {
		i = len(w.wls)
		w.wlIdx[s] = i
		w.wls = append(w.wls, k)
	}
	return i
}

func (w *snapshotWriter) peer(p *Peer) int {
	if w.peerIdx == nil {
		w.peerIdx = make(map[uint64][]int)
		w.seed = maphash.MakeSeed()
	}
	var h maphash.Hash
	h.SetSeed(w.seed)
	h.WriteByte(byte(p.Kind))
	for _, f := range [...]string{p.Namespace, p.Entity, p.FQDN, p.CIDR} {
		h.WriteString(f)
		h.WriteByte(0)
	}
	for _, l := range p.Labels {
		h.WriteString(l)
		h.WriteByte(0)
	}
	sum := h.Sum64()
	for _, i := range w.peerIdx[sum] {
		if samePeer(&w.peers[i], p) {
			return i
		}
	}
	i := len(w.peers)
	w.peerIdx[sum] = append(w.peerIdx[sum], i)
	w.peers = append(w.peers, *p)
	return i
}

func samePeer(a, b *Peer) bool {
	return a.Kind == b.Kind && a.Namespace == b.Namespace && a.Entity == b.Entity && a.FQDN == b.FQDN &&
		a.CIDR == b.CIDR && slices.Equal(a.Labels, b.Labels)
}

func sameWorkload(a, b *WorkloadKey) bool {
	return a.Namespace == b.Namespace && slices.Equal(a.Labels, b.Labels)
}

// UnmarshalBinary replaces s with the snapshot MarshalBinary encoded in b. b comes from
// another process (a replica's summary), so it is checked as validate checks a flow: workload
// keys and peers within validate's bounds (no NUL byte, valid UTF-8, canonical label sets),
// CIDRs that parse, known directions, protocols and flags, port ranges only on collapsed
// edges, indexes within their tables, every table, workload and edge once and in the order
// MarshalBinary writes them, and no byte left over. Anything else fails with ErrSnapshot,
// saying what and where. No count is trusted beyond the bytes left to hold that many of its
// records at their smallest, so what is allocated stays within a small multiple of len(b).
// The edges of one workload share its label slices, as they share the workload: like every
// Snapshot, it is read-only.
func (s *Snapshot) UnmarshalBinary(b []byte) error {
	if len(b) < len(snapshotMagic)+1 || string(b[:len(snapshotMagic)]) != snapshotMagic {
		return fmt.Errorf("%w: not a snapshot", ErrSnapshot)
	}
	if v := b[len(snapshotMagic)]; v != SnapshotVersion {
		return fmt.Errorf("%w: version %d, this code reads %d", ErrSnapshot, v, SnapshotVersion)
	}
	r := snapshotReader{edgeReader: edgeReader{b: b[len(snapshotMagic)+1:]}}
	out := Snapshot{Edges: map[string][]Edge{}, DNS: map[string][]string{}, dnsLast: map[string]time.Time{}}
	out.Flows, out.Overflow, out.Rejected = r.uvarint(), r.uvarint(), r.uvarint()
	out.From, out.To = fromNanos(r.varint()), fromNanos(r.varint())
	// The smallest encoding of each record: one byte per length, count and number.
	const minLost, minChurn, minDNS, minKey, minWorkload, minPeer, minGroup, minEdge, minSample = 3, 3, 3, 2, 6, 2, 2, 16, 3
	for range r.count("lost", minLost) {
		out.Lost = append(out.Lost, NodeLost{Node: r.string(), Lost: r.uvarint(), Last: fromNanos(r.varint())})
	}
	for range r.count("churning", minChurn) {
		out.Churning = append(out.Churning, ChurningLabel{Namespace: r.string(), Owner: r.string(), Key: r.string()})
	}
	for range r.count("dns", minDNS) {
		ip, names, last := r.string(), r.strings(), r.varint()
		if _, dup := out.DNS[ip]; dup {
			r.invalid("DNS entry of %q twice", excerpt(ip))
		}
		out.DNS[ip] = names
		if last != 0 {
			out.dnsLast[ip] = fromNanos(last)
		}
	}
	wls := make([]WorkloadKey, r.count("workload keys", minKey))
	wlKeys := make([]string, len(wls))
	keyIdx := make(map[string]bool, len(wls))
	for i := range wls {
		wls[i] = r.workloadKey("workload")
		wlKeys[i] = wls[i].String()
		if keyIdx[wlKeys[i]] {
			r.invalid("workload key %q twice", excerpt(wlKeys[i]))
		}
		keyIdx[wlKeys[i]] = true
	}
	out.Workloads = make([]Workload, r.count("workloads", minWorkload))
	for i := range out.Workloads {
		wl := &out.Workloads[i]
		var wi int
		wl.Key, wi = pick(&r, "workload key", wls)
		if i > 0 && r.err == nil && wlKeys[wi] <= out.Workloads[i-1].Key.String() {
			r.invalid("workload %q out of order or twice", excerpt(wlKeys[wi]))
		}
		wl.Names = r.strings()
		first := r.varint()
		wl.FirstSeen, wl.LastSeen = fromNanos(first), fromNanos(first+r.varint())
		wl.Flows = r.uvarint()
		wl.Nodes = r.strings()
	}
	peers := make([]Peer, r.count("peers", minPeer))
	peerKeys := make([]string, len(peers))
	peerIdx := make(map[string]bool, len(peers))
	for i := range peers {
		peers[i] = r.peer()
		peerKeys[i] = peers[i].Key()
		if peerIdx[peerKeys[i]] {
			r.invalid("peer %q twice", excerpt(peerKeys[i]))
		}
		peerIdx[peerKeys[i]] = true
	}
	lastGroup := ""
	for range r.count("edge groups", minGroup) {
		wl, wi := pick(&r, "workload key", wls)
		var key string
		if r.err == nil {
			key = wlKeys[wi]
		}
		if lastGroup != "" && r.err == nil && key <= lastGroup {
			r.invalid("edges of workload %q out of order or in two groups", excerpt(key))
		}
		lastGroup = key
		es := make([]Edge, r.count("edges", minEdge))
		var prevPeer int
		for j := range es {
			e := &es[j]
			e.Workload = wl
			if e.Direction = flows.Direction(r.byte()); !knownDirection(e.Direction) {
				r.invalid("edge direction %d", e.Direction)
			}
			var pi int
			e.Peer, pi = pick(&r, "peer", peers)
			if e.Proto = flows.Protocol(r.byte()); e.Proto == flows.ProtoUnknown || e.Proto > flows.ProtoICMPv6 {
				r.invalid("edge protocol %d", e.Proto)
			}
			e.Port, e.EndPort = r.uint16(), r.uint16()
			flags := r.byte()
			if flags&^3 != 0 {
				r.invalid("edge flags %#x", flags)
			}
			e.Collapsed, e.Truncated = flags&1 != 0, flags&2 != 0
			if e.Collapsed && e.EndPort < e.Port || !e.Collapsed && e.EndPort != e.Port {
				r.invalid("edge ports %d-%d (collapsed %t)", e.Port, e.EndPort, e.Collapsed)
			}
			if j > 0 && r.err == nil && compareEdgeKeysWith(&es[j-1].EdgeKey, &e.EdgeKey, peerKeys[prevPeer], peerKeys[pi]) >= 0 {
				r.invalid("edges of workload %q out of order or twice", excerpt(key))
			}
			prevPeer = pi
			c := &e.Counts
			for _, n := range [...]*uint64{&c.Forwarded, &c.Dropped, &c.PolicyDrops, &c.Audit, &c.Other, &c.L7} {
				*n = r.uvarint()
			}
			first := r.varint()
			e.FirstSeen, e.LastSeen = fromNanos(first), fromNanos(first+r.varint())
			e.DNSNames = r.strings()
			if n := r.count("HTTP samples", minSample); n > 0 {
				e.HTTP = make([]HTTPSample, n)
				for k := range e.HTTP {
					e.HTTP[k] = HTTPSample{Method: r.string(), Path: r.string(), Count: r.uvarint()}
				}
			}
			if r.err != nil {
				break
			}
		}
		if r.err != nil {
			break
		}
		if len(es) > 0 {
			out.Edges[key] = es
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.invalid("%d bytes after the last edge", len(r.b))
	}
	if r.err != nil {
		consumed := len(b) - len(r.b)
		if r.where != "" {
			return fmt.Errorf("%w: %s (near byte %d of %d)", ErrSnapshot, r.where, consumed, len(b))
		}
		return fmt.Errorf("%w: truncated or damaged near byte %d of %d", ErrSnapshot, consumed, len(b))
	}
	*s = out
	return nil
}

// snapshotReader is an edgeReader that also says what it was reading when it failed.
type snapshotReader struct {
	edgeReader
	where string
}

func (r *snapshotReader) invalid(format string, args ...any) {
	if r.err == nil {
		r.where = fmt.Sprintf(format, args...)
	}
	r.fail()
}

// count reads a count of records, each of which takes at least size bytes: a count larger
// than the bytes left can hold is damage, not a reason to allocate. After a failure it is 0,
// so no loop goes on reading nothing.
func (r *snapshotReader) count(what string, size int) int {
	n := r.uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(len(r.b)/size) {
		r.invalid("%d %s in %d bytes", n, what, len(r.b))
		return 0
	}
	return int(n)
}

// pick reads an index into table and returns the entry and the index; the zero entry when
// the index is not within the table.
func pick[T any](r *snapshotReader, what string, table []T) (T, int) {
	var zero T
	i := r.uvarint()
	if i >= uint64(len(table)) {
		if r.err == nil {
			r.invalid("%s %d of %d", what, i, len(table))
		}
		return zero, 0
	}
	return table[i], int(i)
}

// workloadKey reads a workload's namespace and labels, checked as validate checks a flow's.
func (r *snapshotReader) workloadKey(what string) WorkloadKey {
	k := WorkloadKey{Namespace: r.string(), Labels: r.strings()}
	if r.err != nil {
		return WorkloadKey{}
	}
	if rej := validatePeer(&flows.Peer{Kind: flows.PeerWorkload, Namespace: k.Namespace, Labels: k.Labels}); rej != nil {
		r.invalid("%s %s: empty, oversized, a NUL byte or invalid UTF-8", what, rej.excerpt)
	}
	for i := 1; i < len(k.Labels); i++ {
		if k.Labels[i-1] >= k.Labels[i] {
			r.invalid("%s labels not sorted and unique at %q", what, excerpt(k.Labels[i]))
		}
	}
	return k
}

func (r *snapshotReader) peer() Peer {
	p := Peer{Kind: PeerKind(r.byte())}
	switch p.Kind {
	case PeerWorkload:
		k := r.workloadKey("peer")
		p.Namespace, p.Labels = k.Namespace, k.Labels
	case PeerEntity:
		p.Entity = r.string()
		if rej := validatePeer(&flows.Peer{Kind: flows.PeerEntity, Entity: p.Entity}); rej != nil && r.err == nil {
			r.invalid("peer %s: empty, oversized, a NUL byte or invalid UTF-8", rej.excerpt)
		}
	case PeerFQDN:
		p.FQDN = r.string()
		if (p.FQDN == "" || len(p.FQDN) > maxNameBytes+1 || badKey(p.FQDN)) && r.err == nil {
			r.invalid("peer name %q", excerpt(p.FQDN))
		}
	case PeerCIDR:
		p.CIDR = r.string()
		if _, err := netip.ParsePrefix(p.CIDR); err != nil && r.err == nil {
			r.invalid("peer CIDR %q", excerpt(p.CIDR))
		}
	default:
		if r.err == nil {
			r.invalid("peer kind %d", p.Kind)
		}
	}
	return p
}
