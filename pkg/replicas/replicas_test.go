package replicas_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/daemon"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/replay"
	"github.com/recommender/recommender/pkg/replicas"
	"github.com/recommender/recommender/pkg/synth"
)

// cluster is a set of replay servers standing in for nodes, announced by a Peer service.
type cluster struct {
	peers string
	nodes []string
	// raw is how many events each node's stream delivers, folded.
	raw map[string]int
}

// startCluster serves each node's records of the recordings from its own replay server.
func startCluster(t *testing.T, recordings ...string) *cluster {
	t.Helper()
	rec, _, err := replay.Load(t.Context(), recordings, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	byNode := map[string][]*observerpb.GetFlowsResponse{}
	for _, r := range rec.Responses() {
		byNode[r.GetNodeName()] = append(byNode[r.GetNodeName()], r)
	}
	c := &cluster{raw: map[string]int{}}
	ps := replay.NewPeerServer()
	for _, name := range slices.Sorted(maps.Keys(byNode)) {
		nrec, err := replay.NewRecording(byNode[name])
		if err != nil {
			t.Fatal(err)
		}
		srv, err := replay.New(nrec, replay.Options{Follow: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		addr, err := srv.Start("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Stop)
		ps.Add(replay.Peer{Name: name, Address: addr})
		c.nodes = append(c.nodes, name)
		c.raw[name] = countRaw(t, addr)
	}
	if c.peers, err = ps.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ps.Stop)
	return c
}

// countRaw reads what a node holds now as the node source delivers it (folded per node).
func countRaw(t *testing.T, addr string) int {
	t.Helper()
	rsrc, err := flows.NewRelaySource(flows.RelayConfig{Server: addr}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rsrc.Close()
	src := flows.NewFolder(rsrc, nil)
	for n := 0; ; n++ {
		if _, err := src.Recv(t.Context()); errors.Is(err, io.EOF) {
			return n
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// drained wraps a node source and says when the events the test expects were delivered to
// the daemon (the Ingester may still be applying them).
type drained struct {
	src       flows.Source
	want      int
	delivered atomic.Int64
	once      sync.Once
	done      chan struct{}
}

func (d *drained) Recv(ctx context.Context) (*flows.Event, error) {
	if d.delivered.Load() >= int64(d.want) {
		d.once.Do(func() { close(d.done) })
	}
	ev, err := d.src.Recv(ctx)
	if err == nil {
		d.delivered.Add(1)
	}
	return ev, err
}

// replica is one in-process daemon reading the nodes it is assigned.
type replica struct {
	db    string
	port  *port
	urls  []string
	index int
	store *aggregate.Store
	agg   *aggregate.Aggregator
	set   *replicas.Set
	src   *drained
	nodes *flows.NodesSource
	// readNone starts the replica reading no node, as --replica-membership=lease does until
	// its Membership looked at the Leases.
	readNone bool
	// replicaWait is Config.Wait: how long its first Snapshot waits for the others (0: the
	// default).
	replicaWait time.Duration
	stop        context.CancelFunc
	err         chan error
}

// start runs the daemon as `run --hubble-peers` wires it (cmd/recommender run.go): urls
// nil is a single daemon reading every node. want is how many events its node streams
// must deliver.
func (r *replica) start(t *testing.T, c *cluster, want int) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewPedanticRegistry()
	store, err := aggregate.Open(r.db, aggregate.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	agg, err := aggregate.NewAggregator(aggregate.Config{}, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	var lis net.Listener
	if r.port != nil {
		lis = r.port.take()
	}
	cfg := flows.NodesConfig{Peers: c.peers, Relay: flows.RelayConfig{BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond}}
	var positions func() (*flows.Cursor, error)
	var evidence func() []lifecycle.Evidence
	// Alone on the store of a replica of a larger set, it merges the kept summaries.
	alone := false
	if r.urls == nil {
		if alone, err = replicas.HasKept(store, nil); err != nil {
			t.Fatal(err)
		}
	}
	if r.urls != nil || alone {
		id, err := store.Identity()
		if err != nil {
			t.Fatal(err)
		}
		local := replicas.Local{Snapshot: agg.Snapshot, Positions: func() (*flows.Cursor, error) { return positions() },
			Evidence: func() []lifecycle.Evidence { return evidence() }, Store: id, Kept: store}
		// Every pull kept (KeepEvery), so that what stands in for a replica after a restart
		// is its last summary.
		r.set, err = replicas.New(replicas.Config{Self: r.index, URLs: r.urls, Wait: r.replicaWait, KeepEvery: time.Nanosecond}, local, nil, log, reg)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Assignment, cfg.Start = r.set.Assignment(), r.set.Start
		if r.readNone {
			_ = r.set.Assignment().SetMembers(nil)
		}
	}
	nodes, err := flows.NewNodesSource(cfg, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	r.nodes = nodes
	r.src = &drained{src: nodes, want: want, done: make(chan struct{})}
	deps := daemon.Deps{
		Log: log, Registry: reg, Source: r.src, Stats: nodes.Stats(),
		Store: store, Aggregator: agg, MetricsListener: lis, Relay: nodes,
	}
	if r.set != nil {
		positions = replicas.StorePositions(store, nodes)
		deps.Snapshot, deps.Peers = r.set.Snapshot, r.set.Peers
		if !alone {
			deps.Routes = map[string]http.Handler{"GET " + replicas.SummaryPath: r.set.Handler()}
		}
	}
	dm, err := daemon.New(daemon.Config{
		SyncInterval: time.Hour, Lifecycle: lifecycle.DefaultConfig(), Synth: synth.DefaultConfig(),
		Ingest: aggregate.IngesterConfig{BatchSize: 50, BatchInterval: time.Hour},
	}, deps)
	if err != nil {
		t.Fatal(err)
	}
	evidence = dm.Evidence
	ctx, cancel := context.WithCancel(t.Context())
	r.store, r.agg, r.stop, r.err = store, agg, cancel, make(chan error, 1)
	go func() {
		err := dm.Run(ctx)
		r.err <- errors.Join(err, nodes.Close(), store.Close())
	}()
}

// kill stops the daemon (its final commit included) and checks that its streams delivered
// exactly what the test expected, no event more.
func (r *replica) kill(t *testing.T) {
	t.Helper()
	r.stop()
	if err := <-r.err; err != nil {
		t.Fatalf("replica %d: %v", r.index, err)
	}
	if got := r.src.delivered.Load(); got != int64(r.src.want) {
		t.Errorf("replica %d: node streams delivered %d events, want %d", r.index, got, r.src.want)
	}
}

func (r *replica) wait(t *testing.T) {
	t.Helper()
	select {
	case <-r.src.done:
	case err := <-r.err:
		t.Fatalf("replica %d stopped before its nodes were read: %v", r.index, err)
	case <-t.Context().Done():
		t.Fatalf("replica %d: %d of %d events delivered when the test ended", r.index, r.src.delivered.Load(), r.src.want)
	}
}

// port is a loopback address that stays bound for the whole test: each daemon started on
// it gets a listener of its own (take), closed with the daemon, so a replica restarts on
// the address the others pull from without racing for the port.
type port struct {
	lis net.Listener
	// mu guards cur, the listener of the daemon now serving.
	mu  sync.Mutex
	cur *child
}

func newPort(t *testing.T) *port {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &port{lis: lis}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			c := p.cur
			p.mu.Unlock()
			if c == nil || !c.offer(conn) {
				conn.Close() // no daemon serving: as a refused connection
			}
		}
	}()
	return p
}

func (p *port) take() net.Listener {
	c := &child{addr: p.lis.Addr(), conns: make(chan net.Conn), closed: make(chan struct{})}
	p.mu.Lock()
	p.cur = c
	p.mu.Unlock()
	return c
}

// child is one daemon's listener on a port.
type child struct {
	addr   net.Addr
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *child) offer(conn net.Conn) bool {
	select {
	case c.conns <- conn:
		return true
	case <-c.closed:
		return false
	}
}

func (c *child) Accept() (net.Conn, error) {
	select {
	case conn := <-c.conns:
		return conn, nil
	case <-c.closed:
		return nil, net.ErrClosed
	}
}

func (c *child) Close() error   { c.once.Do(func() { close(c.closed) }); return nil }
func (c *child) Addr() net.Addr { return c.addr }

func ports(t *testing.T, n int) []*port {
	t.Helper()
	out := make([]*port, n)
	for i := range out {
		out[i] = newPort(t)
	}
	return out
}

// replicaSet makes n replicas over the given stores (made in dir when missing).
func replicaSet(dir string, dbs []string, ps []*port) []*replica {
	urls := make([]string, len(ps))
	for i, p := range ps {
		urls[i] = "http://" + p.lis.Addr().String()
	}
	out := make([]*replica, len(ps))
	for i := range out {
		db := filepath.Join(dir, "replica-"+strconv.Itoa(i)+".db")
		if i < len(dbs) {
			db = dbs[i]
		}
		out[i] = &replica{db: db, port: ps[i], urls: urls, index: i}
	}
	return out
}

// owners maps each node to its replica's index in a set of n.
func owners(t *testing.T, c *cluster, n int) map[string]int {
	t.Helper()
	r, err := flows.NewRendezvous("0", flows.StaticReplicas(n))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, node := range c.nodes {
		out[node], _ = strconv.Atoi(r.Owner(node))
	}
	return out
}

// storeSnapshot reads a stopped replica's store.
func storeSnapshot(t *testing.T, db string) *aggregate.Snapshot {
	t.Helper()
	st, err := aggregate.Open(db, aggregate.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// merged is what r synthesizes from once the replicas applied what they were delivered: it
// pulls until the merge holds as many flows as want (a merge counting something twice
// holds more, and sameTotals says so).
func merged(t *testing.T, r *replica, want *aggregate.Snapshot) *aggregate.Snapshot {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		got := r.set.Snapshot(t.Context())
		if got.Flows >= want.Flows {
			return got
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("replica %d merges %d flows of %d when the test ended", r.index, got.Flows, want.Flows)
		case <-tick.C:
		}
	}
}

// sameTotals compares what synthesis reads from the merge with the single daemon's store.
func sameTotals(t *testing.T, what string, got, want *aggregate.Snapshot) {
	t.Helper()
	if got.Flows != want.Flows || got.EdgeCount() != want.EdgeCount() || len(got.Workloads) != len(want.Workloads) {
		t.Fatalf("%s: %d flows, %d edges, %d workloads; one daemon: %d, %d, %d", what,
			got.Flows, got.EdgeCount(), len(got.Workloads), want.Flows, want.EdgeCount(), len(want.Workloads))
	}
	for k, es := range want.Edges {
		if !reflect.DeepEqual(got.Edges[k], es) {
			t.Fatalf("%s: edges of %s differ:\nmerged     %+v\none daemon %+v", what, k, got.Edges[k], es)
		}
	}
	if !reflect.DeepEqual(got.Workloads, want.Workloads) || !reflect.DeepEqual(got.Lost, want.Lost) ||
		!got.From.Equal(want.From) || !got.To.Equal(want.To) {
		t.Fatalf("%s: workloads, lost events or time range differ from one daemon's", what)
	}
}

// oneDaemon serves six nodes (the boutique and starwars recordings) and returns them, a
// directory for the stores, and what one daemon reading every node stores: the totals the
// replicas must match. Each node's stream is folded on its own, so they must match exactly.
func oneDaemon(t *testing.T) (*cluster, string, *aggregate.Snapshot) {
	t.Helper()
	c := startCluster(t, "../../testdata/flows/boutique.jsonl", "../../testdata/flows/starwars.jsonl")
	dir := t.TempDir()
	total := 0
	for _, n := range c.raw {
		total += n
	}
	one := &replica{db: filepath.Join(dir, "one.db")}
	one.start(t, c, total)
	one.wait(t)
	one.kill(t)
	want := storeSnapshot(t, one.db)
	if want.Flows == 0 || want.EdgeCount() == 0 {
		t.Fatalf("one daemon stored %d flows, %d edges: the recording did not arrive", want.Flows, want.EdgeCount())
	}
	return c, dir, want
}

// Ensure that replicas splitting the nodes synthesize from the same totals as one daemon
// reading them all: with every replica up, while one is down (its last summary stands in),
// when another restarts meanwhile (the summary it kept in its store stands in), after the
// down one restarts, after the set grows from 2 to 3 replicas so that nodes move (the new
// owner starts where the old one stopped: nothing is counted twice), and after it shrinks
// back to 2 and to one daemon alone (the departed replicas' kept summaries stand in).
func TestReplicasMatchOneDaemon(t *testing.T) {
	c, dir, want := oneDaemon(t)

	// Two replicas; each reads its nodes from the oldest flow.
	own2 := owners(t, c, 2)
	two := replicaSet(dir, nil, ports(t, 2))
	for i, r := range two {
		n := 0
		for node, o := range own2 {
			if o == i {
				n += c.raw[node]
			}
		}
		r.start(t, c, n)
	}
	for _, r := range two {
		r.wait(t)
	}
	sameTotals(t, "two replicas", merged(t, two[0], want), want)

	// Replica 1 goes away: replica 0 merges its last summary.
	two[1].kill(t)
	sameTotals(t, "replica 1 down", two[0].set.Snapshot(t.Context()), want)

	// Replica 0 restarts while replica 1 is still down: the summary of replica 1 it kept in
	// its store stands in (without it, replica 1's edges would be missing until it returns).
	two[0].kill(t)
	two[0].replicaWait = time.Millisecond // replica 1 does not answer: do not wait for it
	two[0].start(t, c, two[0].src.want)
	two[0].replicaWait = 0
	two[0].wait(t)
	sameTotals(t, "replica 0 restarted while replica 1 is down", two[0].set.Snapshot(t.Context()), want)
	if n := two[0].set.StandIns(); n != 1 {
		t.Errorf("replica 0 counts %d stand-ins, want 1 (replica 1's kept summary)", n)
	}

	// Replica 1 comes back on its store: it reads its nodes again and stores nothing twice.
	two[1].start(t, c, two[1].src.want)
	two[1].wait(t)
	sameTotals(t, "replica 1 restarted", merged(t, two[0], want), want)
	for _, r := range two {
		r.kill(t)
	}

	// Three replicas over the two stores and a new one: a node that moved starts where its
	// old owner stopped (nothing delivered); one that stayed is read again and dropped by
	// its store's cursor.
	own3 := owners(t, c, 3)
	moved := 0
	three := replicaSet(dir, []string{two[0].db, two[1].db}, ports(t, 3))
	for i, r := range three {
		n := 0
		for node, o := range own3 {
			if o != i {
				continue
			}
			if own2[node] == i {
				n += c.raw[node]
			} else {
				moved++
			}
		}
		r.start(t, c, n)
	}
	if moved == 0 {
		t.Fatalf("no node moved from 2 to 3 replicas (%v, %v): the handover is untested", own2, own3)
	}
	for _, r := range three {
		r.wait(t)
	}
	for i, r := range three {
		sameTotals(t, fmt.Sprintf("three replicas, merged by replica %d", i), merged(t, r, want), want)
	}
	var stores []*aggregate.Snapshot
	for _, r := range three {
		r.kill(t)
		stores = append(stores, storeSnapshot(t, r.db))
	}
	// Everything committed: what the stores hold together is what one daemon stored.
	sameTotals(t, "three stores", aggregate.Merge(stores...), want)

	// The set shrinks back to two over the first two stores: replica 2 is gone for good.
	// The summary of it each kept stands in for its edges, and a node it read starts where
	// it stopped (nothing delivered): without the kept summary its edges would be lost and
	// its nodes read again from their oldest flow.
	shrunk := replicaSet(dir, []string{three[0].db, three[1].db}, ports(t, 2))
	for i, r := range shrunk {
		n := 0
		for node, o := range own2 {
			if o == i && own3[node] == i {
				n += c.raw[node]
			}
		}
		r.start(t, c, n)
	}
	for _, r := range shrunk {
		r.wait(t)
	}
	for i, r := range shrunk {
		sameTotals(t, fmt.Sprintf("shrunk to two, merged by replica %d", i), merged(t, r, want), want)
		if n := r.set.StandIns(); n != 1 {
			t.Errorf("shrunk to two: replica %d counts %d stand-ins, want 1 (replica 2's)", i, n)
		}
	}
	for _, r := range shrunk {
		r.kill(t)
	}

	// And to one daemon alone (--replicas 1) on replica 0's store: it reads every node, those
	// another replica read from where its kept summary says (nothing delivered), and merges
	// those summaries. Only the nodes no other replica read are read again, and dropped by
	// the store's cursor.
	alone := &replica{db: shrunk[0].db}
	n := 0
	for node, o := range own2 {
		if o == 0 && own3[node] == 0 {
			n += c.raw[node]
		}
	}
	alone.start(t, c, n)
	alone.wait(t)
	sameTotals(t, "alone on replica 0's store", alone.set.Snapshot(t.Context()), want)
	if n := alone.set.StandIns(); n != 2 {
		t.Errorf("alone: %d stand-ins, want 2 (replicas 1 and 2)", n)
	}
	alone.kill(t)
}
