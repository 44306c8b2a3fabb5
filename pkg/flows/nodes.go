package flows

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	peerpb "github.com/cilium/cilium/api/v1/peer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Defaults of the node source, as in Cilium (pkg/hubble/defaults, pkg/hubble/relay/defaults).
const (
	// DefaultNodePort is the port of a node's Hubble server when the Peer service announces
	// an address without one.
	DefaultNodePort = 4244
	// DefaultNodeBuffer is how many events the node readers may have read ahead of Recv.
	DefaultNodeBuffer = 4096
	// unixPrefix names the local agent's socket as the Peer service (Relay's default,
	// unix:///var/run/cilium/hubble.sock); a local socket is never TLS.
	unixPrefix = "unix://"
)

// PeerTLSServerName is the name in the certificate of Hubble's Peer service of a cluster
// (empty: "default"), the name Hubble Relay checks: hubble-peer.<cluster>.hubble-grpc.cilium.io,
// dots in the cluster name replaced (cilium pkg/hubble/peer TLSServerName).
func PeerTLSServerName(cluster string) string {
	if cluster == "" {
		cluster = "default"
	}
	return "hubble-peer." + strings.ReplaceAll(cluster, ".", "-") + ".hubble-grpc.cilium.io"
}

// Assignment decides which of the discovered nodes this source reads: with several
// replicas, each node is read by exactly one (pkg/flows/assign.go has the rendezvous
// assignment). It must answer from memory.
type Assignment interface {
	Owns(node string) bool
}

// NodesConfig configures a NodesSource.
type NodesConfig struct {
	// Peers is the address of Hubble's Peer service (--hubble-peers): host:port, a "tls://"
	// prefix implies TLS, or unix:///path for the local agent's socket (never TLS).
	Peers string
	// Relay holds the TLS options (--tls, --tls-ca-cert-files, the client certificate, which
	// Hubble Relay also uses for both the Peer service and the nodes), the dial timeout and
	// the backoff. Its Server is ignored; TLSServerName is the Peer service's name, each node's
	// comes from its announcement. Follow is always on: a node stream does not end. Its
	// Namespaces shard every node's stream; Nodes and Cursor are ignored (see Start).
	Relay RelayConfig
	// Assignment picks the nodes this source reads; nil reads every node. After it changes
	// (a replica joined or left) call Reassign.
	Assignment Assignment
	// Start, when set, gives the cursor a node's read starts from when this source begins
	// reading it (nil: from the oldest flow the node holds). A node that moved from another
	// replica starts where that replica's store stopped, so nothing is counted twice. It is
	// called with the source's lock held: it must not call back into the source. A node
	// this source read before starts where it stopped, whatever Start says.
	Start func(node string) *Cursor
	// Buffer bounds the events read ahead of Recv (default DefaultNodeBuffer); a full
	// buffer stops the node streams (backpressure), it never drops.
	Buffer int
}

// Validate checks the configuration before anything connects.
func (c *NodesConfig) Validate() error {
	if c.Peers == "" {
		return errors.New("hubble peer service address is empty")
	}
	if c.Buffer < 0 {
		return fmt.Errorf("node buffer %d: must not be negative", c.Buffer)
	}
	pc := c.peerConfig()
	if strings.HasPrefix(c.Peers, unixPrefix) {
		if strings.TrimPrefix(c.Peers, unixPrefix) == "" {
			return fmt.Errorf("hubble peer service %q: no socket path", c.Peers)
		}
		pc.Server = DefaultServer // the socket needs no host:port; check the rest
	}
	if err := pc.Validate(); err != nil {
		return fmt.Errorf("hubble peer service: %w", err)
	}
	return nil
}

// peerConfig is the relay configuration the Peer service is dialed with.
func (c *NodesConfig) peerConfig() RelayConfig {
	pc := c.Relay
	pc.Server = c.Peers
	if strings.HasPrefix(c.Peers, tlsPrefix) {
		pc.TLS = true
	}
	return pc
}

// NodeState is what a NodesSource knows about one node.
type NodeState struct {
	// Name is the node's name as the Peer service announced it.
	Name string
	// Address is the node's Hubble server (host:port); empty when the announcement had none
	// that can be dialed.
	Address string
	// TLSServerName is the name checked in the node's certificate; empty: plain gRPC.
	TLSServerName string
	// Read reports whether this source reads the node (its Assignment owns it).
	Read bool
	// Relay is the node stream's state while it is read.
	Relay RelayState
	// Stats counts what was read from the node while this source read it.
	Stats Summary
	// Err says why an announced node is not read (no usable address, TLS mismatch).
	Err string
}

// NodesSource reads flows from every node's Hubble server directly, as Hubble Relay does:
// it discovers the nodes through Hubble's Peer service (observer.Peer/Notify: PEER_ADDED,
// PEER_UPDATED, PEER_DELETED), opens one Observer stream per node it is assigned (each a
// RelaySource with its own per-node cursor, reconnect with backoff and selective decoding)
// and merges them into one Source. A node the Peer service deletes, or that the Assignment
// gives to another replica, has its stream closed; an updated address or certificate name
// reopens it. Every node counts into the source's Stats and its own (Nodes).
//
// Each node's stream is folded on its own (a Folder per node, before the merge): the Folder
// needs its input in time order, which holds for one node's stream but not for streams
// merged in arrival order (nodes replay their buffers at different paces). The merged stream
// is in no order across nodes. A connection observed at both ends on two nodes is therefore
// counted once per node, where a folded relay stream counts it once: edges, first and last
// seen are the same, counts of such edges higher. In exchange what is counted does not
// depend on arrival order, nor on how replicas split the nodes. Do not fold the merged
// stream again.
//
// The first Recv starts the Peer service watch and the node readers, one goroutine each;
// Close stops them all and waits. Recv and Close must be called from one goroutine; State,
// Nodes, Reassign and Stats from any.
type NodesSource struct {
	cfg  NodesConfig
	norm *Normalizer
	log  *slog.Logger
	peer *grpc.ClientConn

	events chan *Event
	stats  Stats

	startOnce sync.Once
	wg        sync.WaitGroup
	// closed is set by Close; Recv and Close run on one goroutine.
	closed bool

	peerConnected  atomic.Bool
	peerReconnects atomic.Uint64

	// mu guards ctx, cancel, peers, readers, gone, peerErr and newest.
	mu sync.Mutex
	// ctx is the node readers' context, set by the first Recv and canceled by Close.
	ctx    context.Context
	cancel context.CancelFunc
	// peers are the nodes the Peer service announced, by name.
	peers map[string]announced
	// readers are the open node streams, by node name.
	readers map[string]*nodeReader
	// gone counts reconnects of node streams closed since, for State.
	gone    uint64
	peerErr error
	// newest is the flow time of the newest event of a closed node stream (UnixNano).
	newest int64
	// past holds where closed node streams stopped, for Positions.
	past *Cursor
}

// announced is one node of the Peer service's announcements.
type announced struct {
	addr, serverName string
	tls              bool
	// err says why the node cannot be read ("" when it can).
	err string
}

type nodeReader struct {
	node   announced
	src    *RelaySource
	fold   *Folder // over the reader itself (Recv below)
	cancel context.CancelFunc
	done   chan struct{}
	// mu guards pos, the records read from the node (folded ones too), advanced as src's own
	// cursor is (which only src's goroutine may read) so that Positions can read it from
	// any goroutine.
	mu  sync.Mutex
	pos *Cursor
}

func (r *nodeReader) position() *Cursor {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pos.Clone()
}

// Recv reads the node's stream for the node's Folder, keeping pos.
func (r *nodeReader) Recv(ctx context.Context) (*Event, error) {
	ev, err := r.src.Recv(ctx)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.pos.Advance(ev)
	r.mu.Unlock()
	return ev, nil
}

// NewNodesSource validates cfg and prepares the Peer service client; nothing connects
// before the first Recv. norm may be nil for the default label filter; log may be nil.
func NewNodesSource(cfg NodesConfig, norm *Normalizer, log *slog.Logger) (*NodesSource, error) {
	def := DefaultRelayConfig()
	if cfg.Relay.DialTimeout == 0 {
		cfg.Relay.DialTimeout = def.DialTimeout
	}
	if cfg.Relay.BackoffInitial == 0 {
		cfg.Relay.BackoffInitial = def.BackoffInitial
	}
	if cfg.Relay.BackoffMax == 0 {
		cfg.Relay.BackoffMax = max(def.BackoffMax, cfg.Relay.BackoffInitial)
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = DefaultNodeBuffer
	}
	cfg.Relay.Follow, cfg.Relay.Retries, cfg.Relay.Nodes, cfg.Relay.Cursor = true, 0, nil, nil
	// One TLS setting for the Peer service and the nodes, as in Relay: tls:// on the Peer
	// service's address turns it on for both.
	cfg.Relay.TLS = cfg.Relay.TLS || strings.HasPrefix(cfg.Peers, tlsPrefix)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if norm == nil {
		norm = NewNormalizer(nil)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opt := grpc.WithTransportCredentials(insecure.NewCredentials())
	target := cfg.Peers
	if !strings.HasPrefix(cfg.Peers, unixPrefix) {
		pc := cfg.peerConfig()
		creds, err := pc.transportCredentials()
		if err != nil {
			return nil, err
		}
		opt, target = grpc.WithTransportCredentials(creds), pc.Address()
	}
	conn, err := grpc.NewClient(target, opt)
	if err != nil {
		return nil, fmt.Errorf("hubble peer service %s: %w", cfg.Peers, err)
	}
	return &NodesSource{
		cfg: cfg, norm: norm, log: log.With("peers", cfg.Peers), peer: conn,
		events: make(chan *Event, cfg.Buffer),
		peers:  make(map[string]announced), readers: make(map[string]*nodeReader), past: NewCursor(),
	}, nil
}

// Stats returns the counters of every node read, summed.
func (s *NodesSource) Stats() *Stats { return &s.stats }

// Recv returns the next event of any node. It returns ctx.Err() when ctx ends and
// ErrRelayClosed after Close; node and Peer service errors are retried, never returned.
func (s *NodesSource) Recv(ctx context.Context) (*Event, error) {
	if s.closed {
		return nil, ErrRelayClosed
	}
	s.startOnce.Do(s.start)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case ev := <-s.events:
		return ev, nil
	}
}

// start runs the Peer service watch until Close.
func (s *NodesSource) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.ctx, s.cancel = ctx, cancel
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.watch(ctx)
	}()
}

// Close stops the Peer service watch and every node stream and waits for their goroutines.
func (s *NodesSource) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.mu.Lock()
	if s.cancel != nil {
		// After this no reader opens (reconcile checks ctx under mu).
		s.cancel()
	}
	readers := s.readers
	s.readers = make(map[string]*nodeReader)
	s.mu.Unlock()
	for _, r := range readers {
		s.stopReader(r)
	}
	s.wg.Wait()
	return s.peer.Close()
}

// Reassign applies the Assignment again to every known node: streams of nodes no longer
// owned close, newly owned nodes open.
func (s *NodesSource) Reassign() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(s.peers)) {
		s.reconcile(name, true)
	}
}

// Release closes the streams of nodes no longer owned and opens none: what a replica must do
// at once when the Assignment changed, while where to start the nodes it gained is still
// being found out (then Reassign opens them).
func (s *NodesSource) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(s.readers)) {
		s.reconcile(name, false)
	}
}

// State summarizes the source for readiness and metrics: Connected while the Peer service
// stream is open (one node down does not make the daemon unready; Nodes says which), the
// reconnects of the Peer service and of all node streams, the newest event of any node and
// the Peer service's last error.
func (s *NodesSource) State() RelayState {
	st := RelayState{Connected: s.peerConnected.Load(), Reconnects: s.peerReconnects.Load()}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Reconnects += s.gone
	newest := s.newest
	for _, r := range s.readers {
		rs := r.src.State()
		st.Reconnects += rs.Reconnects
		if ns := rs.LastEventTime.UnixNano(); !rs.LastEventTime.IsZero() && ns > newest {
			newest = ns
		}
	}
	if newest != 0 {
		st.LastEventTime = time.Unix(0, newest).UTC()
	}
	st.LastError = s.peerErr
	return st
}

// Positions returns how far every node this source read was delivered (open streams and
// closed ones): what a replica publishes so that a node's next reader starts after it.
func (s *NodesSource) Positions() *Cursor {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.past.Clone()
	for _, r := range s.readers {
		out.Merge(r.position())
	}
	return out
}

// Nodes returns every announced node, by name.
func (s *NodesSource) Nodes() []NodeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]NodeState, 0, len(s.peers))
	for _, name := range slices.Sorted(maps.Keys(s.peers)) {
		a := s.peers[name]
		ns := NodeState{Name: name, Address: a.addr, Err: a.err}
		if a.tls {
			ns.TLSServerName = a.serverName
		}
		if r, ok := s.readers[name]; ok {
			ns.Read, ns.Relay, ns.Stats = true, r.src.State(), r.src.Stats().Snapshot()
		}
		out = append(out, ns)
	}
	return out
}

// watch follows the Peer service until ctx ends, reconnecting with backoff. Cilium sends
// every known peer as PEER_ADDED on each new stream, so a reconnect re-announces them.
func (s *NodesSource) watch(ctx context.Context) {
	client := peerpb.NewPeerClient(s.peer)
	var backoff time.Duration
	for opened := false; ctx.Err() == nil; {
		err := s.notify(ctx, client, &opened)
		if ctx.Err() != nil {
			return
		}
		s.peerConnected.Store(false)
		werr := fmt.Errorf("hubble peer service %s: %w", s.cfg.Peers, err)
		s.mu.Lock()
		s.peerErr = werr
		s.mu.Unlock()
		if opened {
			backoff = 0 // it worked until now: retry soon
		}
		if backoff == 0 {
			backoff = s.cfg.Relay.BackoffInitial
		} else {
			backoff = min(2*backoff, s.cfg.Relay.BackoffMax)
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		s.log.Warn("hubble peer service stream failed, reconnecting", "err", err, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// notify opens one Notify stream and applies its announcements until it fails. opened is
// set once a stream delivered, and counts reconnects after that.
func (s *NodesSource) notify(ctx context.Context, client peerpb.PeerClient, opened *bool) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// As for a relay stream, the dial timeout covers connecting and opening, not the stream.
	timer := time.AfterFunc(s.cfg.Relay.DialTimeout, cancel)
	stream, err := client.Notify(sctx, &peerpb.NotifyRequest{}, grpc.WaitForReady(true))
	if !timer.Stop() {
		return fmt.Errorf("no answer within %s", s.cfg.Relay.DialTimeout)
	}
	if err != nil {
		return err
	}
	if *opened {
		s.peerReconnects.Add(1)
	}
	*opened = true
	s.peerConnected.Store(true)
	s.mu.Lock()
	s.peerErr = nil
	s.mu.Unlock()
	s.log.Info("hubble peer service connected")
	for {
		cn, err := stream.Recv()
		if err != nil {
			return err
		}
		s.apply(cn)
	}
}

// apply records one announcement and opens or closes the node's stream accordingly.
func (s *NodesSource) apply(cn *peerpb.ChangeNotification) {
	name := cn.GetName()
	if name == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch cn.GetType() {
	case peerpb.ChangeNotificationType_PEER_ADDED, peerpb.ChangeNotificationType_PEER_UPDATED:
		a := s.announcement(cn)
		if old, ok := s.peers[name]; ok && old == a {
			return
		}
		s.peers[name] = a
		s.log.Info("hubble node announced", "node", name, "address", a.addr, "tls_server_name", a.serverName, "err", a.err)
	case peerpb.ChangeNotificationType_PEER_DELETED:
		if _, ok := s.peers[name]; !ok {
			return
		}
		delete(s.peers, name)
		s.log.Info("hubble node left", "node", name)
	default:
		return
	}
	s.reconcile(name, true)
}

// announcement reads a notification as Hubble Relay does (cilium pkg/hubble/peer/types
// FromChangeNotification, pool.GRPCClientConnBuilder): host:port, or an address without a
// port on Hubble's port 4244; TLS when the tls field is set, with its server name, which
// must be present exactly when this source uses TLS.
func (s *NodesSource) announcement(cn *peerpb.ChangeNotification) announced {
	a := announced{tls: cn.GetTls() != nil, serverName: cn.GetTls().GetServerName()}
	addr := cn.GetAddress()
	switch {
	case addr == "":
		a.err = "announced without an address"
	case strings.HasPrefix(addr, unixPrefix) || strings.HasPrefix(addr, "/"):
		a.err = fmt.Sprintf("address %s is a local socket", addr)
	default:
		if _, _, err := net.SplitHostPort(addr); err != nil {
			if net.ParseIP(addr) == nil {
				a.err = fmt.Sprintf("address %s: want host:port", addr)
				break
			}
			addr = net.JoinHostPort(addr, strconv.Itoa(DefaultNodePort))
		}
		a.addr = addr
	}
	if a.err != "" {
		return a
	}
	switch tlsOn := s.cfg.Relay.TLSEnabled(); {
	case tlsOn && a.serverName == "":
		a.err = "no TLS server name announced but TLS is on (--tls): the node's server runs without TLS"
	case !tlsOn && a.tls:
		a.err = fmt.Sprintf("TLS server name %s announced but TLS is off: set --tls and the CA", a.serverName)
	}
	return a
}

// reconcile closes name's stream, or opens it when mayOpen, to match the announcements and
// the Assignment; s.mu is held.
func (s *NodesSource) reconcile(name string, mayOpen bool) {
	a, known := s.peers[name]
	want := known && a.err == "" && s.owns(name)
	r, open := s.readers[name]
	if open && (!want || r.node != a) {
		delete(s.readers, name)
		// The reader's goroutine never takes s.mu, so waiting for it here cannot deadlock.
		s.stopReader(r)
		rs := r.src.State()
		s.gone += rs.Reconnects
		if ns := rs.LastEventTime.UnixNano(); !rs.LastEventTime.IsZero() && ns > s.newest {
			s.newest = ns
		}
		s.past.Merge(r.position())
		s.log.Info("node stream closed", "node", name, "read", r.src.Stats().Snapshot().String())
		open = false
	}
	if !want || open || !mayOpen || s.ctx == nil || s.ctx.Err() != nil {
		return
	}
	if err := s.startReader(name, a); err != nil {
		a.err = err.Error()
		s.peers[name] = a
		s.log.Error("node not read", "node", name, "err", err)
	}
}

func (s *NodesSource) owns(name string) bool {
	return s.cfg.Assignment == nil || s.cfg.Assignment.Owns(name)
}

// startReader opens name's stream; s.mu is held.
func (s *NodesSource) startReader(name string, a announced) error {
	cfg := s.cfg.Relay
	cfg.Server, cfg.TLSServerName = a.addr, ""
	if a.tls {
		cfg.TLSServerName = a.serverName
	}
	// Where this source stopped reading the node before (it left and came back), or where
	// another replica did: the furthest of both.
	start := s.past.Node(name)
	if s.cfg.Start != nil {
		if c := s.cfg.Start(name); c != nil {
			start.Merge(c)
		}
	}
	if start.Len() > 0 {
		cfg.Cursor = start
	}
	src, err := NewRelaySource(cfg, s.norm, s.log.With("node", name))
	if err != nil {
		return err
	}
	src.stats.parent = &s.stats
	ctx, cancel := context.WithCancel(s.ctx)
	r := &nodeReader{node: a, src: src, cancel: cancel, done: make(chan struct{}), pos: src.Cursor()}
	r.fold = NewFolder(r, src.Stats())
	s.readers[name] = r
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(r.done)
		s.read(ctx, r)
	}()
	s.log.Info("node stream opened", "node", name, "address", a.addr)
	return nil
}

// read forwards one node's events until ctx ends. A follow RelaySource retries every
// transient error itself; what it returns is a refusal (a wrong certificate, a server that
// is no Hubble), retried at the longest backoff since an operator has to fix it.
func (s *NodesSource) read(ctx context.Context, r *nodeReader) {
	for {
		ev, err := r.fold.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Error("node refused the stream; retrying", "err", err, "wait", s.cfg.Relay.BackoffMax)
			t := time.NewTimer(s.cfg.Relay.BackoffMax)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		select {
		case s.events <- ev:
		case <-ctx.Done():
			return
		}
	}
}

// stopReader ends r's goroutine and closes its connection.
func (s *NodesSource) stopReader(r *nodeReader) {
	r.cancel()
	<-r.done
	r.src.Close() //nolint:errcheck // closing a client connection only reports it was closed
}
