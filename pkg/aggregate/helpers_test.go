package aggregate

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/recommender/recommender/pkg/flows"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func workload(ns string, labels ...string) flows.Peer {
	return flows.Peer{Kind: flows.PeerWorkload, Namespace: ns, Labels: flows.NewLabels(labels...)}
}

func entity(name string) flows.Peer { return flows.Peer{Kind: flows.PeerEntity, Entity: name} }

func world(ip string, names ...string) flows.Peer {
	return flows.Peer{Kind: flows.PeerWorld, Entity: "world", IP: ip, Names: names}
}

// lastID numbers test events, so that each has its own ID as Hubble's records do.
var lastID atomic.Uint64

// flow builds a forwarded L3/L4 trace event from client src to server dst.
func flow(sec int, src, dst flows.Peer, proto flows.Protocol, port uint16) *flows.Event {
	return &flows.Event{
		Kind: flows.KindFlow, Time: at(sec), Node: "node-1", ID: lastID.Add(1),
		Type: flows.EventTrace, Point: flows.DirectionEgress, Src: src, Dst: dst, Proto: proto, Port: port,
		SrcPort: 40000, Verdict: flows.VerdictForwarded,
	}
}

func with(ev *flows.Event, f func(*flows.Event)) *flows.Event { f(ev); return ev }

func dnsRequest(sec int, client, server flows.Peer, query string) *flows.Event {
	return with(flow(sec, client, server, flows.ProtoUDP, 53), func(e *flows.Event) {
		e.Type = flows.EventL7
		e.L7 = &flows.L7{DNS: &flows.DNS{Query: query}}
	})
}

func dnsResponse(sec int, client, server flows.Peer, query string, ips ...string) *flows.Event {
	return with(flow(sec, client, server, flows.ProtoUDP, 53), func(e *flows.Event) {
		e.Type = flows.EventL7
		e.L7 = &flows.L7{DNS: &flows.DNS{Query: query, IPs: ips, Response: true}}
	})
}

// render prints a snapshot's edges one per line, for table tests.
func render(s *Snapshot) []string {
	out := []string{fmt.Sprintf("workloads=%d flows=%d overflow=%d", len(s.Workloads), s.Flows, s.Overflow)}
	for _, w := range s.Workloads {
		for _, e := range s.Edges[w.Key.String()] {
			out = append(out, renderEdge(&e))
		}
	}
	return out
}

func renderEdge(e *Edge) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %d", e.Workload, e.Direction, e.Peer.Key(), e.Port)
	if e.Collapsed {
		fmt.Fprintf(&b, "-%d", e.EndPort)
	}
	fmt.Fprintf(&b, "/%s", e.Proto)
	for _, c := range []struct {
		name string
		v    uint64
	}{{"fwd", e.Counts.Forwarded}, {"drop", e.Counts.Dropped}, {"pdrop", e.Counts.PolicyDrops},
		{"audit", e.Counts.Audit}, {"other", e.Counts.Other}, {"l7", e.Counts.L7}} {
		if c.v != 0 {
			fmt.Fprintf(&b, " %s=%d", c.name, c.v)
		}
	}
	if len(e.DNSNames) > 0 {
		fmt.Fprintf(&b, " dns=%s", strings.Join(e.DNSNames, ","))
	}
	for _, h := range e.HTTP {
		fmt.Fprintf(&b, " http=%s:%s:%d", h.Method, h.Path, h.Count)
	}
	if e.Truncated {
		b.WriteString(" truncated")
	}
	return b.String()
}

// sliceSource delivers events from a slice, then io.EOF.
type sliceSource struct{ evs []*flows.Event }

func (s *sliceSource) Recv(ctx context.Context) (*flows.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(s.evs) == 0 {
		return nil, io.EOF
	}
	ev := s.evs[0]
	s.evs = s.evs[1:]
	return ev, nil
}

// drain feeds every event of src into a.
func drain(t testing.TB, src flows.Source, a *Aggregator) {
	t.Helper()
	if err := a.AddAll(t.Context(), src); err != nil {
		t.Fatal(err)
	}
}

// pbFlow is a Hubble TCP flow from a client endpoint to a server endpoint, as `hubble observe`
// records it.
type pbFlow struct {
	sec                int
	nanos              int
	node, uuid         string
	srcNS, dstNS       string
	srcLabels          []string
	dstLabels          []string
	srcIP, dstIP       string
	sport, dport       uint32
	reply              bool
	verdict            flowpb.Verdict
	point              flowpb.TraceObservationPoint
	dstNames           []string
	dstWorld, srcWorld bool
}

func (p pbFlow) build() *flowpb.Flow {
	verdict := p.verdict
	if verdict == flowpb.Verdict_VERDICT_UNKNOWN {
		verdict = flowpb.Verdict_FORWARDED
	}
	point := p.point
	if point == flowpb.TraceObservationPoint_UNKNOWN_POINT {
		point = flowpb.TraceObservationPoint_FROM_ENDPOINT
	}
	f := &flowpb.Flow{
		Time:      timestamppb.New(at(p.sec).Add(time.Duration(p.nanos))),
		Uuid:      p.uuid,
		NodeName:  p.node,
		Verdict:   verdict,
		EventType: &flowpb.CiliumEventType{Type: 4},
		IP:        &flowpb.IP{Source: p.srcIP, Destination: p.dstIP, IpVersion: flowpb.IPVersion_IPv4},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
			SourcePort: p.sport, DestinationPort: p.dport, Flags: &flowpb.TCPFlags{SYN: !p.reply, ACK: p.reply},
		}}},
		Source:                &flowpb.Endpoint{Namespace: p.srcNS, Labels: p.srcLabels, Identity: 1000},
		Destination:           &flowpb.Endpoint{Namespace: p.dstNS, Labels: p.dstLabels, Identity: 2000},
		DestinationNames:      p.dstNames,
		TraceObservationPoint: point,
		IsReply:               wrapperspb.Bool(p.reply),
		Type:                  flowpb.FlowType_L3_L4,
	}
	if p.dstWorld {
		f.Destination = &flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:world"}}
	}
	if p.srcWorld {
		f.Source = &flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:world"}}
	}
	return f
}

// writeJSONPB writes records as `hubble observe -o jsonpb` does and returns the file path.
func writeJSONPB(t testing.TB, dir string, recs []*observerpb.GetFlowsResponse) string {
	t.Helper()
	path := filepath.Join(dir, "flows.jsonpb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := protojson.MarshalOptions{UseProtoNames: true}
	for _, r := range recs {
		b, err := m.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(append(b, '\n')); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func response(f *flowpb.Flow) *observerpb.GetFlowsResponse {
	return &observerpb.GetFlowsResponse{
		ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}, NodeName: f.GetNodeName(), Time: f.GetTime(),
	}
}

// fileSource opens a recording through the production path: FileSource then Folder.
func fileSource(t testing.TB, path string) flows.Source {
	t.Helper()
	fs, err := flows.NewFileSource(flows.FileConfig{Paths: []string{path}, Strict: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return flows.NewFolder(fs, fs.Stats())
}

// gather returns the value of a counter, gauge or histogram (its sample count) from reg, for
// the series whose label name has the given value (both empty: the unlabelled series).
// prometheus/testutil would need a module this repository does not require.
func gather(t testing.TB, reg prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("metric %s{%s=%q} not gathered", name, label, value)
	return 0
}

func newAgg(t testing.TB, cfg Config) *Aggregator {
	t.Helper()
	a, err := NewAggregator(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// fold folds the store's journal into its edge tree, as a commit does once the journal is
// large enough.
func fold(t testing.TB, s *Store) {
	t.Helper()
	err := s.update(func(tx *bolt.Tx) error {
		if err := foldJournal(tx); err != nil {
			return err
		}
		return putJournalRecord(tx.Bucket(bucketMeta), journalRecord{Tree: len(treeEdges(t, tx))})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// encodedEdgesOf returns each edge as the store keys and encodes it: store key -> value.
func encodedEdgesOf(edges map[string][]Edge) map[string][]byte {
	m := map[string][]byte{}
	for _, es := range edges {
		for i := range es {
			m[string(edgeKey(&es[i].EdgeKey))] = appendEdge(nil, &es[i])
		}
	}
	return m
}

// checkTables fails t unless the Aggregator's edge tables (edges.go) agree with each other:
// every live edge is in its group's chain once, and the edge counts of workloads and peers,
// the index of peers and the free slots are what the live edges make them.
func checkTables(t testing.TB, a *Aggregator) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	live := 0
	wlEdges := map[uint32]int{}
	peerEdges := map[uint32]int{}
	for i := edgeIdx(1); int(i) < a.edges.len(); i++ {
		r := a.edges.at(i)
		if r.deleted {
			continue
		}
		live++
		wlEdges[r.wl]++
		peerEdges[r.peer]++
		if int(r.wl) >= len(a.wlByID) || a.wlByID[r.wl] == nil {
			t.Fatalf("edge %d: workload %d is not held", i, r.wl)
		}
		if p := a.peers[r.peer]; p.key == "" || a.peerIdx[p.key] != r.peer {
			t.Fatalf("edge %d: peer %d (%q) is not indexed", i, r.peer, p.key)
		}
	}
	if live != a.nEdges {
		t.Fatalf("nEdges = %d, live edges %d", a.nEdges, live)
	}
	chained, groups := 0, 0
	a.groups.all(func(gk groupID, head edgeIdx) {
		groups++
		if got := a.groups.get(gk); got != head {
			t.Fatalf("group %+v: get = %d, its slot holds %d", gk, got, head)
		}
		for j := head; j != 0; j = a.edges.at(j).next {
			r := a.edges.at(j)
			if r.deleted || (groupID{r.wl, r.peer, r.dir, r.proto}) != gk {
				t.Fatalf("group %+v chains edge %d (deleted %v) of group %+v", gk, j, r.deleted, groupID{r.wl, r.peer, r.dir, r.proto})
			}
			chained++
		}
	})
	if groups != a.groups.len() {
		t.Fatalf("group table counts %d groups, holds %d", a.groups.len(), groups)
	}
	if chained != live {
		t.Fatalf("groups chain %d edges, %d are live", chained, live)
	}
	for id, w := range a.wlByID {
		if w != nil && w.edges != wlEdges[uint32(id)] {
			t.Fatalf("workload %s counts %d edges, holds %d", w.key, w.edges, wlEdges[uint32(id)])
		}
	}
	for _, w := range a.workloads {
		if a.wlByID[w.id] != w {
			t.Fatalf("workload %s is not at its index %d", w.key, w.id)
		}
	}
	for key, id := range a.peerIdx {
		if p := a.peers[id]; p.key != key || p.edges != peerEdges[id] || p.edges == 0 {
			t.Fatalf("peer %q at %d: entry %q counts %d edges, holds %d", key, id, p.key, p.edges, peerEdges[id])
		}
	}
	if len(a.peerIdx) != len(peerEdges) {
		t.Fatalf("%d peers indexed, %d have edges", len(a.peerIdx), len(peerEdges))
	}
}

// treeEdges returns copies of the keys and values of the edge tree's chunks, without the
// journal.
func treeEdges(t testing.TB, tx *bolt.Tx) [][2][]byte {
	t.Helper()
	src := &edgeSource{j: tx.Bucket(bucketEdges).Cursor()}
	var kvs [][2][]byte
	for ok := src.seek(nil); ok; ok = src.next() {
		kvs = append(kvs, [2][]byte{bytes.Clone(src.key), bytes.Clone(src.val)})
	}
	if src.err != nil {
		t.Fatal(src.err)
	}
	return kvs
}
