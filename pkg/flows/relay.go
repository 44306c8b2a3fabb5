package flows

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Defaults for RelayConfig, matching the hubble CLI where it has the same setting.
const (
	DefaultServer         = "localhost:4245"
	DefaultDialTimeout    = 5 * time.Second
	DefaultBackoffInitial = time.Second
	DefaultBackoffMax     = 30 * time.Second
	// DefaultRetries bounds consecutive failed attempts of a non-follow read; a follow
	// stream retries forever.
	DefaultRetries = 3
)

// tlsPrefix on a server address turns TLS on, as in the hubble CLI.
const tlsPrefix = "tls://"

// ErrRelayClosed is returned by Recv after Close.
var ErrRelayClosed = errors.New("relay source closed")

// ErrRelayRefused is returned by Recv, at once and also when following, when Hubble Relay
// answers with a code retrying cannot heal (see refused): a wrong token or certificate, a
// server that is no Relay, a request it cannot take. Retrying would only hide it in logs.
var ErrRelayRefused = errors.New("hubble relay refused the request")

// refused reports whether err carries a gRPC code that no retry can heal.
func refused(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.Unimplemented, codes.InvalidArgument:
		return true
	}
	return false
}

// RelayConfig configures a RelaySource. Field names follow the hubble CLI flags.
type RelayConfig struct {
	// Server is host:port of Hubble Relay (--hubble-server); a "tls://" prefix implies TLS.
	Server string
	// TLS enables TLS (--tls).
	TLS bool
	// TLSAllowInsecure skips server certificate verification (--tls-allow-insecure).
	TLSAllowInsecure bool
	// TLSCACertFiles verify the server; empty means the system pool (--tls-ca-cert-files).
	TLSCACertFiles []string
	// TLSClientCertFile and TLSClientKeyFile enable mTLS (--tls-client-cert-file, --tls-client-key-file).
	TLSClientCertFile string
	TLSClientKeyFile  string
	// TLSServerName overrides the name checked in the server certificate (--tls-server-name).
	TLSServerName string
	// DialTimeout bounds connecting and opening one stream (--timeout).
	DialTimeout time.Duration
	// Follow keeps the stream open for new flows (daemon). Without it the source reads what
	// Relay holds now, like `hubble observe --all`, and Recv returns io.EOF at the end.
	Follow bool
	// Cursor resumes a previous read: the first request asks for flows since Cursor.Since()
	// and drops those already delivered. Nil starts at the oldest flow Relay holds.
	Cursor *Cursor
	// BackoffInitial and BackoffMax bound the wait between reconnect attempts; it doubles
	// after each failure, with jitter so that many clients do not reconnect in step.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// Namespaces and Nodes shard the stream server-side (--namespace, --node-name): only
	// flows from or to pods of these namespaces, observed on these nodes, travel. Empty: all.
	Namespaces []string
	Nodes      []string
	// Retries is the number of consecutive failed attempts after which Recv returns the
	// error; 0 means retry forever. A follow source always retries forever.
	Retries int
}

// DefaultRelayConfig returns the hubble CLI defaults.
func DefaultRelayConfig() RelayConfig {
	return RelayConfig{
		Server:         DefaultServer,
		DialTimeout:    DefaultDialTimeout,
		BackoffInitial: DefaultBackoffInitial,
		BackoffMax:     DefaultBackoffMax,
		Retries:        DefaultRetries,
	}
}

// Address returns the server address without its "tls://" prefix.
func (c *RelayConfig) Address() string { return strings.TrimPrefix(c.Server, tlsPrefix) }

// TLSEnabled reports whether the connection uses TLS (--tls or a "tls://" server).
func (c *RelayConfig) TLSEnabled() bool { return c.TLS || strings.HasPrefix(c.Server, tlsPrefix) }

// Validate checks the configuration before anything connects.
func (c *RelayConfig) Validate() error {
	addr := c.Address()
	if addr == "" {
		return errors.New("hubble server address is empty")
	}
	if strings.Contains(addr, "://") {
		return fmt.Errorf("hubble server %q: only the tls:// scheme is supported", c.Server)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("hubble server %q: want host:port: %w", c.Server, err)
	}
	if (c.TLSClientCertFile == "") != (c.TLSClientKeyFile == "") {
		return errors.New("tls client certificate and key must be given together")
	}
	if !c.TLSEnabled() && (c.TLSAllowInsecure || len(c.TLSCACertFiles) > 0 || c.TLSClientCertFile != "" || c.TLSServerName != "") {
		return errors.New("tls options given but tls is off (set --tls or use a tls:// server)")
	}
	if c.DialTimeout < 0 || c.BackoffInitial < 0 || c.BackoffMax < 0 || c.Retries < 0 {
		return errors.New("relay timeouts, backoff and retries must not be negative")
	}
	if c.BackoffMax > 0 && c.BackoffInitial > c.BackoffMax {
		return fmt.Errorf("backoff initial %s exceeds backoff max %s", c.BackoffInitial, c.BackoffMax)
	}
	return nil
}

// RelayState is the observable state of a RelaySource, for metrics and status.
type RelayState struct {
	// Connected is true while a stream is open.
	Connected bool
	// Reconnects counts streams opened after a previous one failed.
	Reconnects uint64
	// LastEventTime is the flow time of the newest event delivered; now minus it is the lag.
	LastEventTime time.Time
	// LastError is the last stream or connection error, nil once a stream delivers again.
	LastError error
}

// policyEventTypes are the monitor event types the source asks Relay for: drops, L3/L4
// traces, policy verdicts and L7 access logs (DNS, HTTP). Everything else (debug, capture,
// sock traces) never leaves Relay. Lost-events notices pass any filter.
var policyEventTypes = []int32{monitorDrop, monitorTrace, monitorPolicyVerdict, monitorAccessLog}

// PolicyEventFilter returns the whitelist the relay source sends without a shard.
func PolicyEventFilter() []*flowpb.FlowFilter {
	f := &flowpb.FlowFilter{}
	for _, t := range policyEventTypes {
		f.EventType = append(f.EventType, &flowpb.EventTypeFilter{Type: t})
	}
	return []*flowpb.FlowFilter{f}
}

// Whitelist returns the server-side filters of the request: the policy-relevant event types,
// narrowed to the shard's namespaces (a flow from or to a pod in one of them; filters are
// ORed, fields within one ANDed, as in Hubble) and nodes.
func (c *RelayConfig) Whitelist() []*flowpb.FlowFilter {
	base := PolicyEventFilter()[0]
	base.NodeName = c.Nodes
	if len(c.Namespaces) == 0 {
		return []*flowpb.FlowFilter{base}
	}
	pods := make([]string, len(c.Namespaces))
	for i, ns := range c.Namespaces {
		pods[i] = ns + "/"
	}
	from := proto.Clone(base).(*flowpb.FlowFilter)
	from.SourcePod = pods
	to := proto.Clone(base).(*flowpb.FlowFilter)
	to.DestinationPod = pods
	return []*flowpb.FlowFilter{from, to}
}

// RelaySource reads flows from Hubble Relay's Observer API (GetFlows). It implements Source.
//
// On any stream error it reconnects with exponential backoff and asks for flows since its
// cursor; records at the boundary that were already delivered are dropped, so a reconnect
// neither repeats nor loses a flow that Relay still buffers.
//
// Recv, Cursor and Close must be called from one goroutine; State and Stats may be read
// from any goroutine.
type RelaySource struct {
	cfg  RelayConfig
	addr string
	norm *Normalizer
	log  *slog.Logger

	conn *grpc.ClientConn

	// stream is a GetFlows stream decoded by wireCodec into wire (issue 19).
	stream grpc.ClientStream
	wire   wireResponse
	// watched is the Done channel of the context Recv was last called with, and unwatch
	// stops the AfterFunc that aborts the stream when that context ends during a Recv with
	// it (receiving): registered once per context, not per call, which cost an allocation
	// and a lock of the context's parent for every event (issue 19). Keyed on the channel,
	// not the context: channels compare without panicking, and a context value reused with
	// a new Done channel (pooled request contexts) is registered anew.
	watched <-chan struct{}
	unwatch func() bool
	// streamMu guards cancelStream and receiving, which ctx's AfterFunc reads from another
	// goroutine.
	streamMu     sync.Mutex
	cancelStream context.CancelFunc
	receiving    <-chan struct{} // the Done channel of the Recv under way, nil between calls
	eof          bool
	closed       bool
	opened       uint64 // streams opened so far
	failures     int    // consecutive failed attempts
	backoff      time.Duration

	// cursor is what has been delivered; resume is the cursor as it was when the current
	// stream was requested, the set the stream's boundary records are checked against.
	cursor *Cursor
	resume *Cursor

	stats      Stats
	connected  atomic.Bool
	reconnects atomic.Uint64
	lastEvent  atomic.Int64 // UnixNano of the newest delivered event
	// errMu guards lastErr.
	errMu   sync.Mutex
	lastErr error
}

// NewRelaySource validates cfg and prepares a client; it does not connect yet (the first
// Recv does). norm may be nil for the default label filter; log may be nil.
func NewRelaySource(cfg RelayConfig, norm *Normalizer, log *slog.Logger) (*RelaySource, error) {
	def := DefaultRelayConfig()
	if cfg.Server == "" {
		cfg.Server = def.Server
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = def.DialTimeout
	}
	if cfg.BackoffInitial == 0 {
		cfg.BackoffInitial = def.BackoffInitial
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = max(def.BackoffMax, cfg.BackoffInitial)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if norm == nil {
		norm = NewNormalizer(nil)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	creds, err := cfg.transportCredentials()
	if err != nil {
		return nil, err
	}
	addr := cfg.Address()
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(creds),
		// Hubble Relay runs grpc-go's default keepalive enforcement (pings no more often than
		// every 5 minutes, else GOAWAY too_many_pings); this only catches a dead peer on an
		// idle follow stream.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5*time.Minute + 10*time.Second, Timeout: 20 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxLineBytes)),
	)
	if err != nil {
		return nil, fmt.Errorf("hubble relay %s: %w", addr, err)
	}
	s := &RelaySource{
		cfg: cfg, addr: addr, norm: norm, log: log.With("relay", addr),
		conn:   conn,
		cursor: NewCursor(), wire: wireResponse{dec: newWireDecoder()},
	}
	if cfg.Cursor != nil {
		s.cursor = cfg.Cursor.Clone()
	}
	return s, nil
}

func (c *RelayConfig) transportCredentials() (credentials.TransportCredentials, error) {
	if !c.TLSEnabled() {
		return insecure.NewCredentials(), nil
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.TLSServerName,
		InsecureSkipVerify: c.TLSAllowInsecure, //nolint:gosec // the user asked for it with --tls-allow-insecure
	}
	if len(c.TLSCACertFiles) > 0 {
		pool := x509.NewCertPool()
		for _, f := range c.TLSCACertFiles {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read tls ca cert: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tls ca cert %s: no PEM certificate found", f)
			}
		}
		tc.RootCAs = pool
	}
	if c.TLSClientCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSClientCertFile, c.TLSClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("load tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(tc), nil
}

// Stats returns the source's counters. Boundary records dropped after a reconnect count as
// skipped.
func (s *RelaySource) Stats() *Stats { return &s.stats }

// Cursor returns a copy of the delivery position, to be persisted with the data it covers.
func (s *RelaySource) Cursor() *Cursor { return s.cursor.Clone() }

// State returns the connection state.
func (s *RelaySource) State() RelayState {
	st := RelayState{Connected: s.connected.Load(), Reconnects: s.reconnects.Load()}
	if ns := s.lastEvent.Load(); ns != 0 {
		st.LastEventTime = time.Unix(0, ns).UTC()
	}
	s.errMu.Lock()
	st.LastError = s.lastErr
	s.errMu.Unlock()
	return st
}

// Close ends the stream and the connection.
func (s *RelaySource) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.stopWatch()
	s.closeStream()
	return s.conn.Close()
}

// Recv returns the next event. Without Follow it returns io.EOF once Relay has sent all it
// held; it returns ctx.Err() when ctx ends, and an error naming the server when Retries
// consecutive attempts failed.
func (s *RelaySource) Recv(ctx context.Context) (*Event, error) {
	if s.closed {
		return nil, ErrRelayClosed
	}
	// The stream outlives one Recv call; ctx may end while a receive blocks. From here on
	// its end aborts the stream; before, it is caught by the checks of ctx.Err() below.
	s.watch(ctx)
	defer s.endRecv()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for {
		if s.eof {
			return nil, io.EOF
		}
		if s.stream == nil {
			if err := s.open(); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if err := s.fail(ctx, err); err != nil {
					return nil, err
				}
				continue
			}
		}
		err := s.stream.RecvMsg(&s.wire)
		if err != nil {
			s.closeStream()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, io.EOF) && !s.cfg.Follow {
				s.eof = true
				return nil, io.EOF
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("server ended the follow stream")
			}
			if err := s.fail(ctx, err); err != nil {
				return nil, err
			}
			continue
		}
		if s.failures > 0 {
			s.failures, s.backoff = 0, 0
			s.setErr(nil)
		}
		if s.wire.err != nil {
			s.stats.malformed(fmt.Sprintf("%s: %v", s.addr, s.wire.err))
			continue
		}
		ev, skip := s.norm.Response(s.wire.resp)
		if skip != SkipNone {
			s.stats.Skip(skip)
			continue
		}
		if s.resume != nil && s.resume.Seen(ev) {
			s.stats.Skip(SkipResumed)
			continue
		}
		s.cursor.Advance(ev)
		if ev.Kind == KindLost {
			s.stats.lost(ev.Lost.Count)
		}
		s.stats.event()
		if ns := ev.Time.UnixNano(); ns > s.lastEvent.Load() {
			s.lastEvent.Store(ns)
		}
		return ev, nil
	}
}

// open requests a stream: everything Relay holds (like `hubble observe --all`), or what it
// holds since the cursor. A stream that grpc opened has a ready transport behind it.
func (s *RelaySource) open() error {
	req := &observerpb.GetFlowsRequest{
		Number:    math.MaxUint64,
		Follow:    s.cfg.Follow,
		Whitelist: s.cfg.Whitelist(),
	}
	s.resume = nil
	if s.cursor.Len() > 0 {
		req.Since = timestamppb.New(s.cursor.Since())
		s.resume = s.cursor.Clone()
	}
	sctx, cancel := context.WithCancel(context.Background())
	s.streamMu.Lock()
	s.cancelStream = cancel
	// The Recv's context may have ended before there was a stream to abort (watch).
	if s.receiving != nil {
		select {
		case <-s.receiving:
			cancel()
		default:
		}
	}
	s.streamMu.Unlock()
	// The dial timeout covers connecting and opening the stream, not the stream's life. The
	// call waits for the connection that long (WaitForReady): without it grpc fails the call
	// on the first refused connect, and a Relay still starting was given up on in about two
	// seconds whatever --timeout said (issue 15.8).
	timer := time.AfterFunc(s.cfg.DialTimeout, cancel)
	stream, err := s.getFlows(sctx, req)
	if !timer.Stop() {
		if err == nil {
			err = fmt.Errorf("no answer within %s", s.cfg.DialTimeout)
		} else {
			err = fmt.Errorf("no answer within %s: %w", s.cfg.DialTimeout, err)
		}
	}
	if err != nil {
		s.closeStream()
		return err
	}
	s.stream = stream
	if s.opened > 0 {
		s.reconnects.Add(1)
		s.log.Info("reconnected to hubble relay", "since", req.GetSince().AsTime())
	}
	s.opened++
	s.connected.Store(true)
	return nil
}

// getFlows opens GetFlows as the generated client does, with the selective decoder's codec.
func (s *RelaySource) getFlows(ctx context.Context, req *observerpb.GetFlowsRequest) (grpc.ClientStream, error) {
	stream, err := s.conn.NewStream(ctx, getFlowsStream, observerpb.Observer_GetFlows_FullMethodName,
		grpc.StaticMethod(), grpc.WaitForReady(true), grpc.ForceCodecV2(wireCodec{}))
	if err != nil {
		return nil, err
	}
	if err := stream.SendMsg(req); err != nil {
		return nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	return stream, nil
}

// watch makes ctx's end abort the stream until endRecv. The AfterFunc is registered once
// per context and stays for the next calls with it; ending the context between calls aborts
// nothing. A context that never ends is not watched.
func (s *RelaySource) watch(ctx context.Context) {
	done := ctx.Done()
	if done == nil {
		return
	}
	if s.unwatch == nil || s.watched != done {
		s.stopWatch()
		s.watched, s.unwatch = done, context.AfterFunc(ctx, func() {
			s.streamMu.Lock()
			defer s.streamMu.Unlock()
			if s.receiving == done && s.cancelStream != nil {
				s.cancelStream()
			}
		})
	}
	s.streamMu.Lock()
	s.receiving = done
	s.streamMu.Unlock()
}

// endRecv ends watch's watch for the Recv returning.
func (s *RelaySource) endRecv() {
	s.streamMu.Lock()
	s.receiving = nil
	s.streamMu.Unlock()
}

// stopWatch stops the watch of the last context.
func (s *RelaySource) stopWatch() {
	if s.unwatch != nil {
		s.unwatch()
	}
	s.watched, s.unwatch = nil, nil
}

// abort cancels the current stream; Recv notices on its next receive.
func (s *RelaySource) abort() {
	s.streamMu.Lock()
	if s.cancelStream != nil {
		s.cancelStream()
	}
	s.streamMu.Unlock()
}

// closeStream cancels and forgets the current stream.
func (s *RelaySource) closeStream() {
	s.abort()
	s.streamMu.Lock()
	s.cancelStream = nil
	s.streamMu.Unlock()
	s.stream = nil
	s.connected.Store(false)
}

// fail records a failed attempt and waits before the next, or returns the error when the
// attempts are used up.
func (s *RelaySource) fail(ctx context.Context, err error) error {
	s.closeStream()
	s.failures++
	werr := fmt.Errorf("hubble relay %s: %w", s.addr, err)
	if refused(err) {
		werr = fmt.Errorf("hubble relay %s: %w: %w", s.addr, ErrRelayRefused, err)
		s.setErr(werr)
		return werr
	}
	s.setErr(werr)
	if !s.cfg.Follow && s.cfg.Retries > 0 && s.failures >= s.cfg.Retries {
		return werr
	}
	if s.backoff == 0 {
		s.backoff = s.cfg.BackoffInitial
	} else {
		s.backoff = min(2*s.backoff, s.cfg.BackoffMax)
	}
	// Jitter: wait between half and all of the backoff.
	wait := s.backoff/2 + rand.N(s.backoff/2+1)
	s.log.Warn("hubble relay stream failed, reconnecting", "err", err, "attempt", s.failures, "wait", wait)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (s *RelaySource) setErr(err error) {
	s.errMu.Lock()
	s.lastErr = err
	s.errMu.Unlock()
}
