package aggregate

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// Bucket and key names (doc.go describes them).
var (
	bucketMeta      = []byte("meta")
	bucketWorkloads = []byte("workloads")
	bucketEdges     = []byte("edges")
	bucketDNS       = []byte("dns")
	bucketLost      = []byte("lost")
	bucketLifecycle = []byte("lifecycle")

	allBuckets = [][]byte{bucketMeta, bucketWorkloads, bucketEdges, bucketJournal, bucketDNS, bucketLost, bucketLifecycle}

	keyFormat  = []byte("format")
	keySchema  = []byte("schema")
	keyCursor  = []byte("cursor")
	keyTotals  = []byte("totals")
	keyCreated = []byte("created")
	keyChurn   = []byte("churn")
	keyFiles   = []byte("files")
)

// formatID marks a bbolt file as ours; a file without it is refused.
const formatID = "recommender-aggregate"

// schemaVersion is the layout version written by this code. Bump it with every incompatible
// change of doc.go's layout and add the step to migrations. Schema 2 stores edges in the
// binary encoding of appendEdge instead of JSON, schema 3 commits them to the journal
// (journal.go) before they reach the edge tree, schema 4 writes the tree as chunks like the
// journal's and prefix-compresses their keys (all issue 19.2).
const schemaVersion uint32 = 4

// edgeKey is the store key of an edge:
//
//	<workload key> 0x00 <direction:1> <peer key> 0x00 <protocol:1> <collapsed:1> <port:2 BE>
//
// A collapsed edge stores port 0 so that widening its range does not move it.
func edgeKey(k *EdgeKey) []byte {
	w, p := k.Workload.String(), k.Peer.Key()
	return appendEdgeKey(make([]byte, 0, len(w)+len(p)+7), w, p, k.Direction, k.Proto, k.Port, k.Collapsed)
}

// appendEdgeKey appends the store key of an edge to b, given the workload key w
// (WorkloadKey.String()) and the peer key p (Peer.Key()), which the Aggregator holds already
// built: joining the labels again for every edge of every commit was 6% of an ingest over
// 100k edges.
func appendEdgeKey(b []byte, w, p string, dir flows.Direction, proto flows.Protocol, port uint16, collapsed bool) []byte {
	b = append(b, w...)
	b = append(b, 0, byte(dir))
	b = append(b, p...)
	b = append(b, 0, byte(proto))
	if collapsed {
		b = append(b, 1)
		port = 0
	} else {
		b = append(b, 0)
	}
	return binary.BigEndian.AppendUint16(b, port)
}

// workloadPrefix is the prefix of every edge key of a workload.
func workloadPrefix(key string) []byte { return append([]byte(key), 0) }

// The value records other than edges are JSON: few, small next to the fsync of a commit, and
// readable with bbolt's own tools when something goes wrong. Times are Unix nanoseconds (UTC,
// exact round trip). Edges were JSON in schema 1 (edgeRecord, read by the migration to
// schema 2 only); they are the bulk of every commit, and encoding them was 15% of the CPU of
// an ingest over 100k edges and made each value four times its binary size.

type workloadKeyRecord struct {
	Namespace string   `json:"ns"`
	Labels    []string `json:"labels,omitempty"`
}

type peerRecord struct {
	Kind      PeerKind `json:"kind"`
	Namespace string   `json:"ns,omitempty"`
	Labels    []string `json:"labels,omitempty"`
	Entity    string   `json:"entity,omitempty"`
	FQDN      string   `json:"fqdn,omitempty"`
	CIDR      string   `json:"cidr,omitempty"`
}

type countsRecord struct {
	Forwarded   uint64 `json:"fwd,omitempty"`
	Dropped     uint64 `json:"drop,omitempty"`
	PolicyDrops uint64 `json:"pdrop,omitempty"`
	Audit       uint64 `json:"audit,omitempty"`
	Other       uint64 `json:"other,omitempty"`
	L7          uint64 `json:"l7,omitempty"`
}

type httpRecord struct {
	Method string `json:"m"`
	Path   string `json:"p"`
	Count  uint64 `json:"n"`
}

type edgeRecord struct {
	Workload  workloadKeyRecord `json:"w"`
	Direction flows.Direction   `json:"dir"`
	Peer      peerRecord        `json:"peer"`
	Proto     flows.Protocol    `json:"proto"`
	Port      uint16            `json:"port"`
	EndPort   uint16            `json:"end"`
	Collapsed bool              `json:"collapsed,omitempty"`
	Counts    countsRecord      `json:"counts"`
	First     int64             `json:"first"`
	Last      int64             `json:"last"`
	DNSNames  []string          `json:"dns,omitempty"`
	HTTP      []httpRecord      `json:"http,omitempty"`
	Truncated bool              `json:"truncated,omitempty"`
}

type workloadRecord struct {
	Key   workloadKeyRecord `json:"key"`
	Names []string          `json:"names,omitempty"`
	First int64             `json:"first"`
	Last  int64             `json:"last"`
	Flows uint64            `json:"flows"`
	Nodes []string          `json:"nodes,omitempty"`
}

type dnsRecord struct {
	Names []string `json:"names"`
	Last  int64    `json:"last"`
}

type lostRecord struct {
	Lost uint64 `json:"lost"`
	Last int64  `json:"last"`
}

type totalsRecord struct {
	Flows    uint64 `json:"flows"`
	Overflow uint64 `json:"overflow"`
	Rejected uint64 `json:"rejected,omitempty"`
	From     int64  `json:"from"`
	To       int64  `json:"to"`
}

type fileMarkRecord struct {
	Path   string `json:"path"`
	Offset int64  `json:"offset"`
	Line   int    `json:"line"`
	Head   uint64 `json:"head"`
	Tail   uint64 `json:"tail"`
	Time   int64  `json:"time"`
}

type churnRecord struct {
	Namespace string `json:"ns"`
	Owner     string `json:"owner,omitempty"`
	Key       string `json:"key"`
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// edgeFormat is the first byte of a binary edge value; it leaves room for another encoding
// without a schema change of the rest of the store.
const edgeFormat = 1

// appendEdge appends the binary encoding of e to b:
//
//	format:1 (edgeFormat)
//	workload namespace, label count, labels
//	direction:1, peer kind:1, then for a workload peer its namespace, label count and labels,
//	           else its entity, FQDN or CIDR
//	protocol:1, port, end port, flags:1 (1 collapsed, 2 truncated)
//	forwarded, dropped, policy drops, audit, other, L7
//	first seen (signed, Unix ns or 0), last seen minus first seen (signed)
//	DNS name count, names; HTTP sample count, then method, path, count for each
//
// Numbers and counts are varints (encoding/binary), strings a length varint and the bytes.
func appendEdge(b []byte, e *Edge) []byte {
	b = append(b, edgeFormat)
	b = appendWorkloadPart(b, e.Workload)
	b = append(b, byte(e.Direction))
	b = appendPeerPart(b, &e.Peer)
	return appendEdgeTail(b, edgeTail{
		proto: e.Proto, port: e.Port, endPort: e.EndPort, collapsed: e.Collapsed, truncated: e.Truncated,
		counts: &e.Counts, first: nanos(e.FirstSeen), last: nanos(e.LastSeen), dns: e.DNSNames, http: e.HTTP,
	})
}

// The parts of appendEdge's encoding: a batch encodes each of its workloads and peers once
// and copies those bytes into each of their edges' values (Batch.encode).

// appendWorkloadPart appends the workload's namespace, label count and labels.
func appendWorkloadPart(b []byte, w WorkloadKey) []byte {
	b = appendString(b, w.Namespace)
	return appendStrings(b, w.Labels)
}

// appendPeerPart appends the peer's kind and what names it.
func appendPeerPart(b []byte, p *Peer) []byte {
	b = append(b, byte(p.Kind))
	switch p.Kind {
	case PeerWorkload:
		b = appendString(b, p.Namespace)
		b = appendStrings(b, p.Labels)
	case PeerEntity:
		b = appendString(b, p.Entity)
	case PeerFQDN:
		b = appendString(b, p.FQDN)
	case PeerCIDR:
		b = appendString(b, p.CIDR)
	}
	return b
}

// edgeTail is what an edge value holds after its peer.
type edgeTail struct {
	proto                flows.Protocol
	port, endPort        uint16
	collapsed, truncated bool
	counts               *Counts
	first, last          int64 // Unix ns (nanos)
	dns                  []string
	http                 []HTTPSample
}

// appendEdgeTail appends the protocol, ports, flags, counts, times, DNS names and HTTP samples.
func appendEdgeTail(b []byte, t edgeTail) []byte {
	var flags byte
	if t.collapsed {
		flags |= 1
	}
	if t.truncated {
		flags |= 2
	}
	b = append(b, byte(t.proto))
	b = binary.AppendUvarint(b, uint64(t.port))
	b = binary.AppendUvarint(b, uint64(t.endPort))
	b = append(b, flags)
	c := t.counts
	for _, n := range [...]uint64{c.Forwarded, c.Dropped, c.PolicyDrops, c.Audit, c.Other, c.L7} {
		b = binary.AppendUvarint(b, n)
	}
	b = binary.AppendVarint(b, t.first)
	b = binary.AppendVarint(b, t.last-t.first)
	b = appendStrings(b, t.dns)
	b = binary.AppendUvarint(b, uint64(len(t.http)))
	for _, h := range t.http {
		b = appendString(b, h.Method)
		b = appendString(b, h.Path)
		b = binary.AppendUvarint(b, h.Count)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrings[S ~[]string](b []byte, ss S) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

// errEdgeValue is what a binary edge value that does not parse fails with.
var errEdgeValue = errors.New("malformed edge value")

// edgeReader reads appendEdge's encoding; the first failure sticks, so decodeEdge checks once.
type edgeReader struct {
	b   []byte
	err error
}

func (r *edgeReader) fail() {
	if r.err == nil {
		r.err = errEdgeValue
	}
	r.b = nil
}

func (r *edgeReader) byte() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *edgeReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *edgeReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *edgeReader) uint16() uint16 {
	v := r.uvarint()
	if v > 0xffff {
		r.fail()
		return 0
	}
	return uint16(v)
}

func (r *edgeReader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// strings reads a count and that many strings; nil for none, as the Aggregator keeps them.
func (r *edgeReader) strings() []string {
	n := r.uvarint()
	if n == 0 || n > uint64(len(r.b)) { // every string takes at least its length byte
		if n != 0 {
			r.fail()
		}
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = r.string()
	}
	return ss
}

// knownDirection reports whether d is a direction the Aggregator keys edges on. Anything else
// in a stored edge is damage: restored, it would sort among the wrong workload's edges, as a
// batch's order gives the direction two bits (edgeCopy.order).
func knownDirection(d flows.Direction) bool {
	return d == flows.DirectionIngress || d == flows.DirectionEgress
}

func decodeEdge(v []byte) (Edge, error) {
	r := edgeReader{b: v}
	if f := r.byte(); f != edgeFormat && r.err == nil {
		return Edge{}, fmt.Errorf("decode edge: %w: format %d, want %d", errEdgeValue, f, edgeFormat)
	}
	var e Edge
	e.Workload.Namespace = r.string()
	e.Workload.Labels = r.strings()
	e.Direction = flows.Direction(r.byte())
	if !knownDirection(e.Direction) {
		r.fail()
	}
	e.Peer.Kind = PeerKind(r.byte())
	switch e.Peer.Kind {
	case PeerWorkload:
		e.Peer.Namespace = r.string()
		e.Peer.Labels = r.strings()
	case PeerEntity:
		e.Peer.Entity = r.string()
	case PeerFQDN:
		e.Peer.FQDN = r.string()
	case PeerCIDR:
		e.Peer.CIDR = r.string()
	default:
		r.fail()
	}
	e.Proto = flows.Protocol(r.byte())
	e.Port = r.uint16()
	e.EndPort = r.uint16()
	flags := r.byte()
	e.Collapsed, e.Truncated = flags&1 != 0, flags&2 != 0
	if flags&^3 != 0 {
		r.fail()
	}
	c := &e.Counts
	for _, n := range [...]*uint64{&c.Forwarded, &c.Dropped, &c.PolicyDrops, &c.Audit, &c.Other, &c.L7} {
		*n = r.uvarint()
	}
	first := r.varint()
	last := first + r.varint()
	e.FirstSeen, e.LastSeen = fromNanos(first), fromNanos(last)
	e.DNSNames = r.strings()
	if n := r.uvarint(); n > uint64(len(r.b)) {
		r.fail()
	} else if n > 0 {
		e.HTTP = make([]HTTPSample, n)
		for i := range e.HTTP {
			e.HTTP[i] = HTTPSample{Method: r.string(), Path: r.string(), Count: r.uvarint()}
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail()
	}
	if r.err != nil {
		return Edge{}, fmt.Errorf("decode edge: %w", r.err)
	}
	return e, nil
}

// decodeEdgeJSON reads schema 1's edge encoding, for the migration to schema 2.
func decodeEdgeJSON(v []byte) (Edge, error) {
	var r edgeRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return Edge{}, fmt.Errorf("decode edge: %w", err)
	}
	if !knownDirection(r.Direction) {
		return Edge{}, fmt.Errorf("decode edge: %w: direction %d", errEdgeValue, r.Direction)
	}
	e := Edge{
		EdgeKey: EdgeKey{
			Workload:  WorkloadKey{Namespace: r.Workload.Namespace, Labels: r.Workload.Labels},
			Direction: r.Direction,
			Peer: Peer{Kind: r.Peer.Kind, Namespace: r.Peer.Namespace, Labels: r.Peer.Labels,
				Entity: r.Peer.Entity, FQDN: r.Peer.FQDN, CIDR: r.Peer.CIDR},
			Proto: r.Proto, Port: r.Port, Collapsed: r.Collapsed,
		},
		EndPort: r.EndPort, Counts: Counts(r.Counts),
		FirstSeen: fromNanos(r.First), LastSeen: fromNanos(r.Last),
		DNSNames: r.DNSNames, Truncated: r.Truncated,
	}
	for _, s := range r.HTTP {
		e.HTTP = append(e.HTTP, HTTPSample(s))
	}
	return e, nil
}

func encodeWorkload(w *Workload) ([]byte, error) {
	return json.Marshal(&workloadRecord{
		Key:   workloadKeyRecord{Namespace: w.Key.Namespace, Labels: w.Key.Labels},
		Names: w.Names, First: nanos(w.FirstSeen), Last: nanos(w.LastSeen), Flows: w.Flows, Nodes: w.Nodes,
	})
}

func decodeWorkload(v []byte) (Workload, error) {
	var r workloadRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return Workload{}, fmt.Errorf("decode workload: %w", err)
	}
	return Workload{
		Key:   WorkloadKey{Namespace: r.Key.Namespace, Labels: r.Key.Labels},
		Names: r.Names, FirstSeen: fromNanos(r.First), LastSeen: fromNanos(r.Last), Flows: r.Flows, Nodes: r.Nodes,
	}, nil
}
