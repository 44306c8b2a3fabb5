package aggregate

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// Bucket and key names of schema 1 (doc.go describes them).
var (
	bucketMeta      = []byte("meta")
	bucketWorkloads = []byte("workloads")
	bucketEdges     = []byte("edges")
	bucketDNS       = []byte("dns")
	bucketLost      = []byte("lost")
	bucketLifecycle = []byte("lifecycle")

	allBuckets = [][]byte{bucketMeta, bucketWorkloads, bucketEdges, bucketDNS, bucketLost, bucketLifecycle}

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
// change of doc.go's layout and add the step to migrations.
const schemaVersion uint32 = 1

// edgeKey is the store key of an edge:
//
//	<workload key> 0x00 <direction:1> <peer key> 0x00 <protocol:1> <collapsed:1> <port:2 BE>
//
// A collapsed edge stores port 0 so that widening its range does not move it.
func edgeKey(k *EdgeKey) []byte {
	w, p := k.Workload.String(), k.Peer.Key()
	b := make([]byte, 0, len(w)+len(p)+7)
	b = append(b, w...)
	b = append(b, 0, byte(k.Direction))
	b = append(b, p...)
	b = append(b, 0, byte(k.Proto))
	port := k.Port
	if k.Collapsed {
		b = append(b, 1)
		port = 0
	} else {
		b = append(b, 0)
	}
	return binary.BigEndian.AppendUint16(b, port)
}

// workloadPrefix is the prefix of every edge key of a workload.
func workloadPrefix(key string) []byte { return append([]byte(key), 0) }

// The value records are JSON: small next to the fsync of a commit, readable with bbolt's own
// tools when something goes wrong. Times are Unix nanoseconds (UTC, exact round trip).

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

func encodeEdge(e *Edge) ([]byte, error) {
	r := edgeRecord{
		Workload:  workloadKeyRecord{Namespace: e.Workload.Namespace, Labels: e.Workload.Labels},
		Direction: e.Direction,
		Peer: peerRecord{Kind: e.Peer.Kind, Namespace: e.Peer.Namespace, Labels: e.Peer.Labels,
			Entity: e.Peer.Entity, FQDN: e.Peer.FQDN, CIDR: e.Peer.CIDR},
		Proto: e.Proto, Port: e.Port, EndPort: e.EndPort, Collapsed: e.Collapsed,
		Counts: countsRecord(e.Counts),
		First:  nanos(e.FirstSeen), Last: nanos(e.LastSeen),
		DNSNames: e.DNSNames, Truncated: e.Truncated,
	}
	for _, s := range e.HTTP {
		r.HTTP = append(r.HTTP, httpRecord(s))
	}
	return json.Marshal(&r)
}

func decodeEdge(v []byte) (Edge, error) {
	var r edgeRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return Edge{}, fmt.Errorf("decode edge: %w", err)
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
