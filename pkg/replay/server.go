package replay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"slices"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"github.com/recommender/recommender/pkg/flows"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Version is what ServerStatus and GetNodes report as the server version.
const Version = "recommender-replay"

// Options configures a Server.
type Options struct {
	// Rate releases records at this many per second from server start, as a live relay
	// would see them; 0 makes the whole recording available at once and sends as fast as
	// the client reads.
	Rate float64
	// Loop replays the recording forever: each pass is shifted forward by the recording's
	// span so flow time keeps increasing. Follow streams never end; a request without
	// follow gets what is available (one pass without Rate).
	Loop bool
	// Follow keeps follow streams open at the end of the recording, like a relay whose
	// cluster went quiet, until the client leaves. Without it a follow stream ends with the
	// recording, so `hubble observe -f` against a replay terminates.
	Follow bool
	// Now replaces time.Now for what Rate makes available (tests).
	Now func() time.Time
	// TLS, when set, serves TLS with this configuration (tests of TLS clients, as a node's
	// Hubble server with its certificate).
	TLS *tls.Config
}

// Validate checks the options.
func (o *Options) Validate() error {
	if o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0) {
		return fmt.Errorf("rate %v: want a positive number of flows per second, or 0 for unlimited", o.Rate)
	}
	return nil
}

// Server serves a Recording over the Observer gRPC API like Hubble Relay does. It can be
// started, stopped and started again (on the same address) any number of times; its clock
// for Rate and uptime starts at New.
type Server struct {
	observerpb.UnimplementedObserverServer

	rec   *Recording
	opts  Options
	log   *slog.Logger
	start time.Time
	// span is how far each Loop pass is shifted forward.
	span time.Duration

	srv restartable
	// mu guards passes (marshaled loop passes).
	mu     sync.Mutex
	passes map[uint64][][]byte
}

// New returns a Server for rec.
func New(rec *Recording, opts Options, log *slog.Logger) (*Server, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{rec: rec, opts: opts, log: log, start: opts.Now(), passes: make(map[uint64][][]byte)}
	if n := len(rec.entries); n > 0 {
		first, last := rec.entries[0].time, rec.entries[n-1].time
		for _, e := range rec.entries {
			first, last = minTime(first, e.time), maxTime(last, e.time)
		}
		gap := time.Second
		if n > 1 && last.After(first) {
			gap = max(last.Sub(first)/time.Duration(n-1), time.Microsecond)
		}
		s.span = last.Sub(first) + gap
	}
	return s, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Start listens on addr ("127.0.0.1:0" for any free port) and serves in the background. It
// returns the bound address.
func (s *Server) Start(addr string) (string, error) {
	bound, err := s.srv.listen(addr, s.newGRPC())
	if err != nil {
		return "", fmt.Errorf("replay server: %w", err)
	}
	s.log.Info("replay relay listening", "addr", bound, "records", len(s.rec.entries))
	return bound, nil
}

// Stop closes the listener and every open stream at once (clients see Unavailable, as when
// a relay pod dies). The server may be started again.
func (s *Server) Stop() { s.srv.stop() }

// Serve serves on lis until ctx ends, then stops.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	gs := s.newGRPC()
	if err := s.srv.take(gs, lis); err != nil {
		return fmt.Errorf("replay server: %w", err)
	}
	stop := context.AfterFunc(ctx, s.Stop)
	defer stop()
	s.log.Info("replay relay listening", "addr", lis.Addr().String(), "records", len(s.rec.entries))
	if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve %s: %w", lis.Addr(), err)
	}
	return nil
}

func (s *Server) newGRPC() *grpc.Server {
	opts := []grpc.ServerOption{grpc.ForceServerCodecV2(rawCodec{})}
	if s.opts.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.opts.TLS)))
	}
	gs := grpc.NewServer(opts...)
	observerpb.RegisterObserverServer(gs, s)
	return gs
}

// present is the number of records available now: all of one pass, or what Rate has
// released since start.
func (s *Server) present() uint64 {
	n := uint64(len(s.rec.entries))
	if s.opts.Rate == 0 {
		return n
	}
	released := uint64(s.opts.Now().Sub(s.start).Seconds() * s.opts.Rate)
	if !s.opts.Loop {
		return min(released, n)
	}
	return released
}

// releaseAt is when record i becomes available under Rate.
func (s *Server) releaseAt(i uint64) time.Time {
	return s.start.Add(time.Duration(float64(i+1) / s.opts.Rate * float64(time.Second)))
}

// wait blocks until record i is available, or returns false when no more records will come
// on this stream.
func (s *Server) wait(ctx context.Context, i uint64) bool {
	n := uint64(len(s.rec.entries))
	endless := s.opts.Loop && n > 0
	if !endless && i >= n {
		if !s.opts.Follow {
			return false
		}
		<-ctx.Done()
		return false
	}
	if s.opts.Rate == 0 {
		return true
	}
	d := s.releaseAt(i).Sub(s.opts.Now())
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// view is record i of the endless sequence (pass i/n, shifted by pass*span).
type view struct {
	e    *entry
	time time.Time
	raw  []byte
}

func (s *Server) at(i uint64) view {
	n := uint64(len(s.rec.entries))
	pass, idx := i/n, i%n
	e := &s.rec.entries[idx]
	if pass == 0 {
		return view{e: e, time: e.time, raw: e.raw}
	}
	shift := time.Duration(pass) * s.span
	return view{e: e, time: e.time.Add(shift)}
}

// marshaled returns the wire form of v, marshaling its loop pass on first use.
func (s *Server) marshaled(i uint64, v view) ([]byte, error) {
	if v.raw != nil {
		return v.raw, nil
	}
	n := uint64(len(s.rec.entries))
	raws, err := s.pass(i / n)
	if err != nil {
		return nil, err
	}
	return raws[i%n], nil
}

// pass returns the marshaled records of a loop pass, built once and shared by all streams;
// only the two newest passes are kept.
func (s *Server) pass(p uint64) ([][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if raws, ok := s.passes[p]; ok {
		return raws, nil
	}
	shift := time.Duration(p) * s.span
	raws := make([][]byte, len(s.rec.entries))
	for i, e := range s.rec.entries {
		r := proto.Clone(e.resp).(*observerpb.GetFlowsResponse)
		r.Time = timestamppb.New(e.time.Add(shift))
		if f := r.GetFlow(); f != nil && f.GetTime() != nil {
			f.Time = timestamppb.New(f.GetTime().AsTime().Add(shift))
		}
		b, err := proto.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("marshal record %d of loop pass %d: %w", i, p, err)
		}
		raws[i] = b
	}
	for k := range s.passes {
		if k+1 < p {
			delete(s.passes, k)
		}
	}
	s.passes[p] = raws
	return raws, nil
}

// GetFlows implements observerpb.ObserverServer with Hubble's request semantics: since
// takes precedence over number; first reads from the oldest record; follow without number
// starts at the newest; until ends the stream. Lost-events and other notices pass every
// filter and time bound and do not count towards number, as in Hubble.
func (s *Server) GetFlows(req *observerpb.GetFlowsRequest, stream grpc.ServerStreamingServer[observerpb.GetFlowsResponse]) error {
	white, err := compileFilters(req.GetWhitelist())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	black, err := compileFilters(req.GetBlacklist())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	var since, until time.Time
	if ts := req.GetSince(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return status.Errorf(codes.InvalidArgument, "since: %v", err)
		}
		since = ts.AsTime()
	}
	if ts := req.GetUntil(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return status.Errorf(codes.InvalidArgument, "until: %v", err)
		}
		until = ts.AsTime()
	}
	if len(s.rec.entries) == 0 {
		return nil
	}
	ctx := stream.Context()
	matches := func(v view) bool {
		return v.e.flow == nil || apply(white, black, v.e.flow)
	}

	avail := s.present()
	var start uint64
	switch {
	case !since.IsZero():
		start = s.firstSince(since, avail)
	case req.GetFirst():
		start = 0
	case req.GetFollow() && req.GetNumber() == 0:
		start = avail
	default:
		// The last Number matching records (all of them for 0), found walking back.
		start = avail
		for count := uint64(0); start > 0; {
			v := s.at(start - 1)
			if v.e.flow == nil || !matches(v) {
				start--
				continue
			}
			count++
			start--
			if count == req.GetNumber() {
				break
			}
		}
	}

	var sent uint64
	for i := start; ; i++ {
		if i >= avail {
			if !req.GetFollow() || !s.wait(ctx, i) {
				return nil
			}
			avail = max(s.present(), i+1)
		}
		v := s.at(i)
		if v.e.flow != nil {
			if !until.IsZero() && v.time.After(until) {
				return nil
			}
			if !since.IsZero() && v.time.Before(since) {
				continue
			}
			if !matches(v) {
				continue
			}
		}
		raw, err := s.marshaled(i, v)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if err := stream.SendMsg(rawMessage(raw)); err != nil {
			return err
		}
		if v.e.flow != nil {
			sent++
			if !req.GetFollow() && req.GetNumber() > 0 && sent >= req.GetNumber() {
				return nil
			}
		}
	}
}

// firstSince returns the index of the first flow at or after since among the first avail
// records (avail when there is none).
func (s *Server) firstSince(since time.Time, avail uint64) uint64 {
	n := uint64(len(s.rec.entries))
	var i uint64
	if s.opts.Loop && s.span > 0 {
		if d := since.Sub(s.rec.entries[0].time); d > 0 {
			// Passes before the one since falls in hold nothing at or after it.
			if p := uint64(d / s.span); p > 0 {
				i = (p - 1) * n
			}
		}
	}
	for ; i < avail; i++ {
		v := s.at(i)
		if v.e.flow != nil && !v.time.Before(since) {
			return i
		}
	}
	if !s.opts.Loop || s.rec.flows == 0 {
		return avail
	}
	// Since lies beyond what is available: a follow stream continues from there.
	for ; ; i++ {
		if v := s.at(i); v.e.flow != nil && !v.time.Before(since) {
			return i
		}
	}
}

// ServerStatus implements observerpb.ObserverServer.
func (s *Server) ServerStatus(context.Context, *observerpb.ServerStatusRequest) (*observerpb.ServerStatusResponse, error) {
	avail := s.present()
	flows := s.rec.flows
	if avail < uint64(len(s.rec.entries)) || s.opts.Loop {
		flows = 0
		for i := range avail {
			if s.at(i).e.flow != nil {
				flows++
			}
		}
	}
	return &observerpb.ServerStatusResponse{
		NumFlows:            flows,
		MaxFlows:            max(flows, s.rec.flows),
		SeenFlows:           flows,
		UptimeNs:            uint64(s.opts.Now().Sub(s.start).Nanoseconds()),
		NumConnectedNodes:   wrapperspb.UInt32(uint32(len(s.rec.nodes))),
		NumUnavailableNodes: wrapperspb.UInt32(0),
		Version:             Version,
		FlowsRate:           s.opts.Rate,
	}, nil
}

// GetNodes implements observerpb.ObserverServer: one connected node per node name in the
// recording.
func (s *Server) GetNodes(context.Context, *observerpb.GetNodesRequest) (*observerpb.GetNodesResponse, error) {
	addr := s.srv.addr()
	uptime := uint64(s.opts.Now().Sub(s.start).Nanoseconds())
	resp := &observerpb.GetNodesResponse{}
	for _, n := range s.rec.nodes {
		resp.Nodes = append(resp.Nodes, &observerpb.Node{
			Name:      n.name,
			Version:   Version,
			Address:   addr,
			State:     relaypb.NodeState_NODE_CONNECTED,
			UptimeNs:  uptime,
			NumFlows:  n.flows,
			MaxFlows:  n.flows,
			SeenFlows: n.flows,
		})
	}
	return resp, nil
}

// entry is one recorded response, decoded once and marshaled once.
type entry struct {
	resp *observerpb.GetFlowsResponse
	flow *flowpb.Flow // nil for lost-events and other notices
	time time.Time
	raw  []byte
}

type nodeCount struct {
	name  string
	flows uint64
}

// Recording is a sequence of GetFlows responses, decoded and marshaled once, that a Server
// replays. It is read-only after construction and shared by all streams.
type Recording struct {
	entries []entry
	nodes   []nodeCount
	flows   uint64
}

// NewRecording builds a Recording from responses, in the order given. Responses without a
// time take their flow's time.
func NewRecording(resps []*observerpb.GetFlowsResponse) (*Recording, error) {
	rec := &Recording{entries: make([]entry, 0, len(resps))}
	counts := map[string]uint64{}
	for i, r := range resps {
		if r.GetTime() == nil && r.GetFlow().GetTime() != nil {
			r.Time = r.GetFlow().GetTime()
		}
		raw, err := proto.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("record %d: marshal: %w", i, err)
		}
		e := entry{resp: r, flow: r.GetFlow(), time: r.GetTime().AsTime(), raw: raw}
		if e.flow != nil {
			rec.flows++
			counts[nodeOf(r)]++
		} else if _, ok := counts[nodeOf(r)]; !ok && nodeOf(r) != "" {
			counts[nodeOf(r)] = 0
		}
		rec.entries = append(rec.entries, e)
	}
	for _, n := range slices.Sorted(maps.Keys(counts)) {
		rec.nodes = append(rec.nodes, nodeCount{name: n, flows: counts[n]})
	}
	return rec, nil
}

func nodeOf(r *observerpb.GetFlowsResponse) string {
	if n := r.GetNodeName(); n != "" {
		return n
	}
	return r.GetFlow().GetNodeName()
}

// Load reads recorded flow files (`hubble observe -o jsonpb`, plain or gzip, "-" for stdin)
// into a Recording. Malformed lines are skipped and logged unless strict.
func Load(ctx context.Context, paths []string, strict bool, log *slog.Logger) (*Recording, flows.Summary, error) {
	src, err := flows.NewFileSource(flows.FileConfig{Paths: paths, Strict: strict}, nil, log)
	if err != nil {
		return nil, flows.Summary{}, err
	}
	defer src.Close()
	var resps []*observerpb.GetFlowsResponse
	for {
		r, err := src.RecvResponse(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, src.Stats().Snapshot(), fmt.Errorf("load recording: %w", err)
		}
		resps = append(resps, r)
	}
	rec, err := NewRecording(resps)
	sum := src.Stats().Snapshot()
	sum.Events = uint64(len(resps))
	return rec, sum, err
}

// Len returns the number of records (flows and notices).
func (r *Recording) Len() int { return len(r.entries) }

// Flows returns the number of flow records.
func (r *Recording) Flows() uint64 { return r.flows }

// Responses returns the recorded responses in order; callers must not modify them.
func (r *Recording) Responses() []*observerpb.GetFlowsResponse {
	out := make([]*observerpb.GetFlowsResponse, len(r.entries))
	for i := range r.entries {
		out[i] = r.entries[i].resp
	}
	return out
}
