package flows_test

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replay"
)

// testNode is one replay server standing in for a node's Hubble server; want is what the
// node source delivers of it.
type testNode struct {
	name string
	addr string
	srv  *replay.Server
	want []*flows.Event
	// raw is every event the node's stream carries, folded ones too: what cursors cover.
	raw []*flows.Event
	// recs are the node's records.
	recs []*observerpb.GetFlowsResponse
}

// startNodes splits the bundled recordings by the node that observed each record and serves
// each node's records from its own replay server (Follow: node streams never end).
func startNodes(t *testing.T) []*testNode {
	t.Helper()
	byNode := map[string][]*observerpb.GetFlowsResponse{}
	for _, path := range recordings {
		rec, _, err := replay.Load(t.Context(), []string{path}, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rec.Responses() {
			byNode[r.GetNodeName()] = append(byNode[r.GetNodeName()], r)
		}
	}
	var out []*testNode
	for _, name := range slices.Sorted(maps.Keys(byNode)) {
		rec, err := replay.NewRecording(byNode[name])
		if err != nil {
			t.Fatal(err)
		}
		srv, addr := serve(t, rec, replay.Options{Follow: true}, "127.0.0.1:0")
		raw := expected(t, byNode[name])
		out = append(out, &testNode{name: name, addr: addr, srv: srv, want: folded(t, raw), raw: raw, recs: byNode[name]})
	}
	if len(out) < 6 {
		t.Fatalf("recordings hold %d nodes, the test needs 6", len(out))
	}
	return out
}

// sliceSource delivers events from memory.
type sliceSource []*flows.Event

func (s *sliceSource) Recv(context.Context) (*flows.Event, error) {
	if len(*s) == 0 {
		return nil, io.EOF
	}
	ev := (*s)[0]
	*s = (*s)[1:]
	return ev, nil
}

// folded is what a Folder over evs delivers: the node source folds each node's stream.
func folded(t *testing.T, evs []*flows.Event) []*flows.Event {
	t.Helper()
	src := sliceSource(evs)
	return readN(t, t.Context(), flows.NewFolder(&src, nil), -1)
}

func peerOf(n *testNode) replay.Peer { return replay.Peer{Name: n.name, Address: n.addr} }

func startPeers(t *testing.T, nodes ...*testNode) (*replay.PeerServer, string) {
	t.Helper()
	var peers []replay.Peer
	for _, n := range nodes {
		peers = append(peers, peerOf(n))
	}
	ps := replay.NewPeerServer(peers...)
	addr, err := ps.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ps.Stop)
	return ps, addr
}

func newNodes(t *testing.T, cfg flows.NodesConfig) *flows.NodesSource {
	t.Helper()
	cfg.Relay.BackoffInitial, cfg.Relay.BackoffMax = time.Millisecond, 5*time.Millisecond
	src, err := flows.NewNodesSource(cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// sameSet fails unless got and want hold the same events, each once, in any order: node
// streams are merged in arrival order.
func sameSet(t *testing.T, got, want []*flows.Event) {
	t.Helper()
	sortKeys := func(evs []*flows.Event) []evKey {
		k := evKeys(evs)
		slices.SortFunc(k, func(a, b evKey) int {
			if c := strings.Compare(a.node, b.node); c != 0 {
				return c
			}
			if c := a.time.Compare(b.time); c != 0 {
				return c
			}
			if c := cmp.Compare(a.kind, b.kind); c != 0 {
				return c
			}
			return cmp.Compare(a.id, b.id)
		})
		return k
	}
	g, w := sortKeys(got), sortKeys(want)
	if !slices.Equal(g, w) {
		sameEvents(t, g2e(g), g2e(w))
	}
}

// g2e turns keys back into events so sameEvents can name what differs.
func g2e(keys []evKey) []*flows.Event {
	out := make([]*flows.Event, len(keys))
	for i, k := range keys {
		out[i] = &flows.Event{Kind: k.kind, Node: k.node, Time: k.time, ID: k.id}
	}
	return out
}

func wantOf(nodes ...*testNode) []*flows.Event {
	var out []*flows.Event
	for _, n := range nodes {
		out = append(out, n.want...)
	}
	return out
}

func nodeNames(st []flows.NodeState, read bool) []string {
	var out []string
	for _, n := range st {
		if n.Read == read {
			out = append(out, n.Name)
		}
	}
	return out
}

// Ensure that the node source reads every announced node exactly once, follows the Peer
// service as nodes join and leave, and rolls the per-node counts up into its Stats.
func TestNodesSourceFollowsPeers(t *testing.T) {
	nodes := startNodes(t)
	a, b, c, d, e := nodes[0], nodes[1], nodes[2], nodes[3], nodes[4]
	ps, addr := startPeers(t, a, b)
	// starts are the positions another replica read nodes to, by name.
	var mu sync.Mutex
	starts := map[string]*flows.Cursor{}
	src := newNodes(t, flows.NodesConfig{Peers: addr, Start: func(node string) *flows.Cursor {
		mu.Lock()
		defer mu.Unlock()
		return starts[node]
	}})
	ctx := t.Context()

	got := readN(t, ctx, src, len(a.want)+len(b.want))
	sameSet(t, got, wantOf(a, b))

	// A node joining is read from its oldest flow.
	ps.Add(peerOf(c))
	got = readN(t, ctx, src, len(c.want))
	sameSet(t, got, wantOf(c))

	// A node leaving has its stream closed: once d's events (announced after b left) arrive,
	// b is no longer read.
	ps.Delete(b.name)
	ps.Add(peerOf(d))
	got = readN(t, ctx, src, len(d.want))
	sameSet(t, got, wantOf(d))
	st := src.Nodes()
	if g, w := nodeNames(st, true), []string{a.name, c.name, d.name}; !slices.Equal(g, w) {
		t.Fatalf("nodes read after %s left = %v, want %v", b.name, g, w)
	}

	// b returns and starts where this source stopped reading it; f, never read here, starts
	// where Start says another replica stopped: nothing of either again. e's events prove
	// both streams were opened before them (announcements are applied in order).
	f := nodes[5]
	cur := flows.NewCursor()
	for _, ev := range f.raw {
		cur.Advance(ev)
	}
	mu.Lock()
	starts[f.name] = cur
	mu.Unlock()
	ps.Add(peerOf(b))
	ps.Add(peerOf(f))
	ps.Add(peerOf(e))
	got = readN(t, ctx, src, len(e.want))
	sameSet(t, got, wantOf(e))

	// Stats count what the node streams carried (as a relay source's do); what the nodes'
	// Folders dropped is counted as skipped.
	rawOf := func(ns ...*testNode) (n, lost uint64) {
		for _, nd := range ns {
			for _, ev := range nd.raw {
				n++
				if ev.Kind == flows.KindLost {
					lost += ev.Lost.Count
				}
			}
		}
		return n, lost
	}
	events, lost := rawOf(a, b, c, d, e)
	folded := uint64(len(wantOf(a, b, c, d, e)))
	// A node's trailing records that its Folder drops as duplicates arrive after the last
	// event delivered: wait for them (polled, with a generous bound) before comparing.
	sum := src.Stats().Snapshot()
	for deadline := time.Now().Add(30 * time.Second); sum.Events < events && time.Now().Before(deadline); sum = src.Stats().Snapshot() {
		time.Sleep(10 * time.Millisecond)
	}
	if sum.Events != events || sum.Lost != lost || sum.SkippedBy[flows.SkipDuplicate] != events-folded {
		t.Errorf("stats: %d events, %d lost, %d duplicates; want %d, %d, %d", sum.Events, sum.Lost, sum.SkippedBy[flows.SkipDuplicate], events, lost, events-folded)
	}
	var perNode uint64
	for _, n := range src.Nodes() {
		if !n.Read || n.Relay.LastError != nil {
			t.Errorf("node %s: read %v, last error %v; want read without error", n.Name, n.Read, n.Relay.LastError)
		}
		perNode += n.Stats.Events
	}
	// b's second reader and f's delivered nothing; a, c, d, e's still count what they read.
	if w, _ := rawOf(a, c, d, e); perNode != w {
		t.Errorf("per-node events sum to %d, want %d", perNode, w)
	}
	if st := src.State(); !st.Connected || st.LastError != nil {
		t.Errorf("State() = %+v, want connected without error", st)
	}
}

// ownSet is an Assignment tests change between Reassign calls.
type ownSet struct {
	mu    sync.Mutex
	nodes map[string]bool
}

func (o *ownSet) Owns(node string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.nodes[node]
}

func (o *ownSet) set(nodes ...string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.nodes = map[string]bool{}
	for _, n := range nodes {
		o.nodes[n] = true
	}
}

// Ensure that only the assigned nodes are read, that Release closes the streams of nodes no
// longer given to this source, and that Reassign opens those of nodes given to it.
func TestNodesSourceAssignment(t *testing.T) {
	nodes := startNodes(t)
	a, b, c := nodes[0], nodes[1], nodes[2]
	_, addr := startPeers(t, a, b, c)
	own := &ownSet{}
	own.set(a.name)
	src := newNodes(t, flows.NodesConfig{Peers: addr, Assignment: own})
	ctx := t.Context()
	sameSet(t, readN(t, ctx, src, len(a.want)), wantOf(a))

	// Release closes a's stream and opens none; Reassign then opens b's.
	own.set(b.name)
	src.Release()
	if got := nodeNames(src.Nodes(), true); len(got) != 0 {
		t.Errorf("nodes read after Release = %v, want none until Reassign", got)
	}
	src.Reassign()
	sameSet(t, readN(t, ctx, src, len(b.want)), wantOf(b))
	st := src.Nodes()
	if g, w := nodeNames(st, true), []string{b.name}; !slices.Equal(g, w) {
		t.Errorf("nodes read = %v, want %v", g, w)
	}
	if g, w := nodeNames(st, false), []string{a.name, c.name}; !slices.Equal(g, w) {
		t.Errorf("nodes known but not read = %v, want %v", g, w)
	}
}

// Ensure that a node whose announcement cannot be read as Relay would (no address, TLS
// where the source has none) is listed with the reason and not read, while the others are.
func TestNodesSourceUnreadableAnnouncements(t *testing.T) {
	nodes := startNodes(t)
	a := nodes[0]
	ps, addr := startPeers(t, a)
	ps.Add(replay.Peer{Name: "no-address"})
	ps.Add(replay.Peer{Name: "tls-node", Address: nodes[1].addr, TLSServerName: "tls-node.default.hubble-grpc.cilium.io"})
	src := newNodes(t, flows.NodesConfig{Peers: addr})
	sameSet(t, readN(t, t.Context(), src, len(a.want)), wantOf(a))
	// The announcements arrived before a's last event was forwarded only if the Peer stream
	// delivered them; wait for the listing without sleeping: Notify sends in order, so a
	// marker peer after them settles it.
	ps.Add(peerOf(nodes[2]))
	readN(t, t.Context(), src, len(nodes[2].want))
	errs := map[string]string{}
	for _, n := range src.Nodes() {
		if n.Read != (n.Err == "") {
			t.Errorf("node %s: read %v with error %q", n.Name, n.Read, n.Err)
		}
		errs[n.Name] = n.Err
	}
	for _, name := range []string{"no-address", "tls-node"} {
		if errs[name] == "" {
			t.Errorf("node %s has no error, want the reason it is not read", name)
		}
	}
}

func TestNodesConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  flows.NodesConfig
		ok   bool
	}{
		{"host port", flows.NodesConfig{Peers: "hubble-peer.kube-system.svc:443"}, true},
		{"tls prefix", flows.NodesConfig{Peers: "tls://hubble-peer.kube-system.svc:443", Relay: flows.RelayConfig{TLSServerName: flows.PeerTLSServerName("")}}, true},
		{"unix socket", flows.NodesConfig{Peers: "unix:///var/run/cilium/hubble.sock"}, true},
		{"empty", flows.NodesConfig{}, false},
		{"no port", flows.NodesConfig{Peers: "hubble-peer"}, false},
		{"unix without path", flows.NodesConfig{Peers: "unix://"}, false},
		{"tls options without tls", flows.NodesConfig{Peers: "p:443", Relay: flows.RelayConfig{TLSServerName: "x"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok %v", err, tc.ok)
			}
		})
	}
	if g, w := flows.PeerTLSServerName("prod.eu"), "hubble-peer.prod-eu.hubble-grpc.cilium.io"; g != w {
		t.Errorf("PeerTLSServerName(prod.eu) = %s, want %s", g, w)
	}
}

// Ensure that Recv ends with ctx and fails after Close.
func TestNodesSourceClose(t *testing.T) {
	_, addr := startPeers(t)
	src := newNodes(t, flows.NodesConfig{Peers: addr})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := src.Recv(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Recv(canceled) = %v, want context.Canceled", err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Recv(t.Context()); !errors.Is(err, flows.ErrRelayClosed) {
		t.Errorf("Recv after Close = %v, want ErrRelayClosed", err)
	}
}

// Ensure that Positions covers open and closed node streams: after a node leaves, its
// position stays, so a replica can publish where the node's next reader starts.
func TestNodesSourcePositions(t *testing.T) {
	nodes := startNodes(t)
	a, b := nodes[0], nodes[1]
	ps, addr := startPeers(t, a, b)
	src := newNodes(t, flows.NodesConfig{Peers: addr})
	readN(t, t.Context(), src, len(a.want)+len(b.want))
	ps.Delete(b.name)
	ps.Add(peerOf(nodes[2]))
	readN(t, t.Context(), src, len(nodes[2].want))
	want := flows.NewCursor()
	for _, n := range []*testNode{a, b, nodes[2]} {
		for _, ev := range n.raw {
			want.Advance(ev)
		}
	}
	if got := src.Positions(); !got.Equal(want) {
		t.Errorf("Positions() covers %d nodes, want %d, or positions differ", got.Len(), want.Len())
	}
}
