package flows_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replay"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var recordings = []string{"../../testdata/flows/boutique.jsonl", "../../testdata/flows/starwars.jsonl"}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// genRecords builds n flow records from three nodes in time order, every pair of records
// sharing a timestamp so that resume boundaries fall between records of the same instant,
// with a reply every 7th, a debug event every 11th (filtered by the relay source) and a
// lost-events notice after every 25th.
func genRecords(n int) []*observerpb.GetFlowsResponse {
	nodes := []string{"kind-worker", "kind-worker2", "kind-control-plane"}
	var out []*observerpb.GetFlowsResponse
	for i := range n {
		ts := timestamppb.New(t0.Add(time.Duration(i/2) * time.Millisecond))
		node := nodes[(i/2)%len(nodes)]
		evType := int32(4)
		if i%11 == 10 {
			evType = 2 // debug: not policy-relevant
		}
		f := &flowpb.Flow{
			Time: ts, Uuid: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), NodeName: node,
			Verdict: flowpb.Verdict_FORWARDED,
			IP:      &flowpb.IP{Source: "10.244.1.10", Destination: "10.244.2.20", IpVersion: flowpb.IPVersion_IPv4},
			L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
				SourcePort: uint32(40000 + i%20000), DestinationPort: 8080, Flags: &flowpb.TCPFlags{SYN: true},
			}}},
			Source: &flowpb.Endpoint{Identity: 1234, Namespace: "shop", PodName: "frontend-1",
				Labels: []string{"k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=shop"}},
			Destination: &flowpb.Endpoint{Identity: 5678, Namespace: "shop", PodName: "cart-1",
				Labels: []string{"k8s:app=cart", "k8s:io.kubernetes.pod.namespace=shop"}},
			Type:                  flowpb.FlowType_L3_L4,
			EventType:             &flowpb.CiliumEventType{Type: evType},
			TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT,
			IsReply:               wrapperspb.Bool(i%7 == 6),
		}
		out = append(out, &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}, NodeName: node, Time: ts})
		if i%25 == 24 {
			out = append(out, &observerpb.GetFlowsResponse{
				ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
					Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 3, Cpu: wrapperspb.Int32(int32(i % 4)),
				}},
				NodeName: node, Time: ts,
			})
		}
	}
	return out
}

// expected normalizes records the way a file source would, minus what the relay source
// filters server-side: the events a relay read must deliver, in order.
func expected(t *testing.T, recs []*observerpb.GetFlowsResponse) []*flows.Event {
	t.Helper()
	norm := flows.NewNormalizer(nil)
	var out []*flows.Event
	for _, r := range recs {
		if et := r.GetFlow().GetEventType(); et != nil && !slices.Contains([]int32{1, 4, 5, 129}, et.GetType()) {
			continue
		}
		if ev, skip := norm.Response(r); skip == flows.SkipNone {
			out = append(out, ev)
		}
	}
	return out
}

func serve(t *testing.T, rec *replay.Recording, opts replay.Options, addr string) (*replay.Server, string) {
	t.Helper()
	srv, err := replay.New(rec, opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	got, err := srv.Start(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv, got
}

func testRelayConfig(addr string) flows.RelayConfig {
	return flows.RelayConfig{Server: addr, BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond, Retries: 3}
}

func newRelay(t *testing.T, cfg flows.RelayConfig, log *slog.Logger) *flows.RelaySource {
	t.Helper()
	src, err := flows.NewRelaySource(cfg, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// readN reads n events (n < 0: until io.EOF).
func readN(t *testing.T, ctx context.Context, src flows.Source, n int) []*flows.Event {
	t.Helper()
	var out []*flows.Event
	for n < 0 || len(out) < n {
		ev, err := src.Recv(ctx)
		if errors.Is(err, io.EOF) && n < 0 {
			return out
		}
		if err != nil {
			t.Fatalf("Recv after %d events: %v", len(out), err)
		}
		out = append(out, ev)
	}
	return out
}

type evKey struct {
	kind flows.Kind
	node string
	time time.Time
	id   uint64
}

func evKeys(evs []*flows.Event) []evKey {
	out := make([]evKey, len(evs))
	for i, e := range evs {
		out[i] = evKey{e.Kind, e.Node, e.Time, e.ID}
	}
	return out
}

func sameEvents(t *testing.T, got, want []*flows.Event) {
	t.Helper()
	g, w := evKeys(got), evKeys(want)
	if slices.Equal(g, w) {
		return
	}
	seen := map[evKey]int{}
	for _, k := range g {
		seen[k]++
	}
	for k, c := range seen {
		if c > 1 {
			t.Errorf("event %v delivered %d times", k, c)
		}
	}
	for _, k := range w {
		if seen[k] == 0 {
			t.Errorf("event %v missing", k)
		}
	}
	t.Fatalf("got %d events, want %d in recorded order", len(g), len(w))
}

// Ensure that a relay read delivers every recorded event exactly once, in order, and the
// same events a file read of the recording gives.
func TestRelayRoundTrip(t *testing.T) {
	for _, path := range recordings {
		t.Run(path[strings.LastIndexByte(path, '/')+1:], func(t *testing.T) {
			rec, _, err := replay.Load(t.Context(), []string{path}, true, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, addr := serve(t, rec, replay.Options{}, "127.0.0.1:0")
			src := newRelay(t, testRelayConfig(addr), nil)
			got := readN(t, t.Context(), src, -1)

			fsrc, err := flows.NewFileSource(flows.FileConfig{Paths: []string{path}, Strict: true}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := readN(t, t.Context(), fsrc, -1)
			sameEvents(t, got, want)
			if g, w := src.Stats().Snapshot(), fsrc.Stats().Snapshot(); g.Events != w.Events || g.Lost != w.Lost {
				t.Errorf("relay stats %+v, file stats %+v: events and lost differ", g, w)
			}
			if _, err := src.Recv(t.Context()); !errors.Is(err, io.EOF) {
				t.Errorf("Recv after the end = %v, want io.EOF", err)
			}
		})
	}
}

// Ensure that lost-events notices arrive as KindLost events and are counted, and that the
// server-side filter keeps non-policy events off the wire.
func TestRelayLostAndFiltered(t *testing.T) {
	recs := genRecords(100)
	rec, err := replay.NewRecording(recs)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := serve(t, rec, replay.Options{}, "127.0.0.1:0")
	src := newRelay(t, testRelayConfig(addr), nil)
	got := readN(t, t.Context(), src, -1)
	sameEvents(t, got, expected(t, recs))
	var lost int
	for _, ev := range got {
		if ev.Kind == flows.KindLost {
			lost++
		}
	}
	st := src.Stats().Snapshot()
	if lost != 4 || st.Lost != 12 {
		t.Errorf("got %d lost notices, %d lost events; want 4 and 12", lost, st.Lost)
	}
	// Debug events never leave the relay; replies arrive and are skipped.
	var replies uint64
	for i := range 100 {
		if i%7 == 6 && i%11 != 10 {
			replies++
		}
	}
	if st.Skipped != replies {
		t.Errorf("skipped = %d, want the %d replies", st.Skipped, replies)
	}
}

// Ensure that when the relay dies mid-stream and comes back on the same address, the source
// resumes with no duplicate and no missing event. A non-follow read may have everything
// buffered before the cut; a follow stream never ends by itself, so it must reconnect.
func TestRelayReconnect(t *testing.T) {
	recs := genRecords(500)
	rec, err := replay.NewRecording(recs)
	if err != nil {
		t.Fatal(err)
	}
	want := expected(t, recs)
	for _, follow := range []bool{false, true} {
		for _, cut := range []int{1, 2, 101, 333, len(want) - 1} {
			t.Run(fmt.Sprintf("follow=%v/cut=%d", follow, cut), func(t *testing.T) {
				opts := replay.Options{Follow: follow}
				srv, addr := serve(t, rec, opts, "127.0.0.1:0")
				cfg := testRelayConfig(addr)
				cfg.Follow = follow
				sig := logSignal{msgs: make(chan string, 64)}
				src := newRelay(t, cfg, slog.New(sig))
				got := readN(t, t.Context(), src, cut)
				srv.Stop()
				serve(t, rec, opts, addr)
				rest := -1
				if follow {
					rest = len(want) - cut
				}
				got = append(got, readN(t, t.Context(), src, rest)...)
				sameEvents(t, got, want)
				if !follow {
					return
				}
				// The stream may have held everything before the cut; the next Recv then
				// reconnects and must wait for new flows rather than deliver an old one.
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() {
					ev, err := src.Recv(ctx)
					if ev != nil {
						err = fmt.Errorf("unexpected event %v at %v", ev.ID, ev.Time)
					}
					done <- err
				}()
				for src.State().Reconnects == 0 {
					if m := <-sig.msgs; m == "reconnected to hubble relay" {
						break
					}
				}
				cancel()
				if err := <-done; !errors.Is(err, context.Canceled) {
					t.Errorf("Recv after all events = %v, want context.Canceled", err)
				}
				if st := src.State(); st.Reconnects != 1 {
					t.Errorf("State().Reconnects = %d, want 1", st.Reconnects)
				}
			})
		}
	}
}

// Ensure that a cursor persisted (binary form) and passed to a new source resumes exactly
// after the last delivered event.
func TestRelayResumeFromCursor(t *testing.T) {
	recs := genRecords(300)
	rec, err := replay.NewRecording(recs)
	if err != nil {
		t.Fatal(err)
	}
	want := expected(t, recs)
	_, addr := serve(t, rec, replay.Options{}, "127.0.0.1:0")
	first := newRelay(t, testRelayConfig(addr), nil)
	got := readN(t, t.Context(), first, 151)
	data, err := first.Cursor().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	first.Close()

	cur := flows.NewCursor()
	if err := cur.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	cfg := testRelayConfig(addr)
	cfg.Cursor = cur
	second := newRelay(t, cfg, nil)
	got = append(got, readN(t, t.Context(), second, -1)...)
	sameEvents(t, got, want)
}

// Ensure that an unreachable relay gives an error naming the address when not following.
func TestRelayUnreachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	cfg := testRelayConfig(addr)
	cfg.DialTimeout = 100 * time.Millisecond // each attempt waits this long for the connection
	src := newRelay(t, cfg, nil)
	_, err = src.Recv(t.Context())
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Recv from a closed port = %v, want an error naming %s", err, addr)
	}
	if st := src.State(); st.Connected || st.LastError == nil {
		t.Errorf("State() = %+v, want disconnected with an error", st)
	}
}

// logSignal is a slog handler that reports each message on a channel.
type logSignal struct{ msgs chan string }

func (h logSignal) Enabled(context.Context, slog.Level) bool { return true }
func (h logSignal) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.msgs <- r.Message:
	default:
	}
	return nil
}
func (h logSignal) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h logSignal) WithGroup(string) slog.Handler      { return h }

// Ensure that a follow source keeps retrying while the relay is down, reports it in State,
// and delivers once the relay is up; cancelling ends Recv with ctx.Err().
func TestRelayFollowRetries(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()

	sig := logSignal{msgs: make(chan string, 64)}
	cfg := testRelayConfig(addr)
	cfg.Follow = true
	cfg.DialTimeout = 50 * time.Millisecond // each attempt waits this long for the connection
	src := newRelay(t, cfg, slog.New(sig))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type result struct {
		ev  *flows.Event
		err error
	}
	res := make(chan result, 1)
	go func() {
		ev, err := src.Recv(ctx)
		res <- result{ev, err}
	}()
	// More failed attempts than Retries: a follow source does not give up.
	for range 2 * cfg.Retries {
		if m := <-sig.msgs; m != "hubble relay stream failed, reconnecting" {
			t.Fatalf("log %q, want reconnect warnings", m)
		}
	}
	if st := src.State(); st.Connected || st.LastError == nil || !strings.Contains(st.LastError.Error(), addr) {
		t.Errorf("State() while down = %+v, want disconnected with an error naming %s", st, addr)
	}

	recs := genRecords(10)
	rec, err := replay.NewRecording(recs)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, rec, replay.Options{Follow: true}, addr)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if want := expected(t, recs)[0]; r.ev.ID != want.ID {
		t.Errorf("first event %v, want %v", r.ev.ID, want.ID)
	}
	rest := readN(t, ctx, src, len(expected(t, recs))-1)
	st := src.State()
	if !st.Connected || st.LastError != nil || !st.LastEventTime.Equal(rest[len(rest)-1].Time) {
		t.Errorf("State() while streaming = %+v, want connected, no error, last event time %v", st, rest[len(rest)-1].Time)
	}
	go func() {
		ev, err := src.Recv(ctx)
		res <- result{ev, err}
	}()
	cancel()
	if r := <-res; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Recv after cancel = %v, %v; want context.Canceled", r.ev, r.err)
	}
}

func TestRelayConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  flows.RelayConfig
		want string // substring of the error; "" for valid
	}{
		{"default", flows.DefaultRelayConfig(), ""},
		{"tls prefix", flows.RelayConfig{Server: "tls://relay.example:443", TLSServerName: "relay"}, ""},
		{"no port", flows.RelayConfig{Server: "localhost"}, "host:port"},
		{"other scheme", flows.RelayConfig{Server: "unix:///run/hubble.sock"}, "tls://"},
		{"empty", flows.RelayConfig{}, "empty"},
		{"cert without key", flows.RelayConfig{Server: "a:1", TLS: true, TLSClientCertFile: "c.pem"}, "together"},
		{"tls options without tls", flows.RelayConfig{Server: "a:1", TLSCACertFiles: []string{"ca.pem"}}, "tls is off"},
		{"backoff", flows.RelayConfig{Server: "a:1", BackoffInitial: time.Minute, BackoffMax: time.Second}, "backoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

// Ensure that a relay which refuses the first connection and starts listening later, within
// the dial timeout, is waited for instead of given up on after one refused connect.
func TestRelayWaitsForLateServer(t *testing.T) {
	early, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := early.Addr().String()
	tried := make(chan struct{})
	go func() {
		c, err := early.Accept() // the client's first attempt: drop it, like a relay not yet up
		if err == nil {
			c.Close()
			close(tried)
		}
	}()
	cfg := testRelayConfig(addr)
	cfg.Retries = 1 // one attempt: only waiting within it can succeed
	cfg.DialTimeout = time.Minute
	src := newRelay(t, cfg, nil)
	type result struct {
		ev  *flows.Event
		err error
	}
	got := make(chan result, 1)
	go func() {
		ev, err := src.Recv(t.Context())
		got <- result{ev, err}
	}()
	select {
	case <-tried:
	case r := <-got:
		t.Fatalf("Recv returned %v before the relay was up", r.err)
	}
	early.Close()
	recs := genRecords(3)
	rec, err := replay.NewRecording(recs)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, rec, replay.Options{}, addr)
	if r := <-got; r.err != nil {
		t.Fatalf("Recv = %v, want the first flow once the relay listens", r.err)
	}
}

// uncomparableCtx is a context whose values cannot be compared (==), as a caller's own
// context type may be, and wrappedCtx a comparable type whose comparison panics when it holds
// one: Recv must not compare contexts. pooledCtx is one context value whose Done channel
// changes when it is reused, as pooled request contexts do.
type uncomparableCtx struct {
	context.Context
	_ []int
}

type wrappedCtx struct{ context.Context }

type pooledCtx struct {
	mu    sync.Mutex
	inner context.Context
}

func (p *pooledCtx) ctx() context.Context {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inner
}

func (p *pooledCtx) reuse(c context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inner = c
}

func (p *pooledCtx) Deadline() (time.Time, bool) { return p.ctx().Deadline() }
func (p *pooledCtx) Done() <-chan struct{}       { return p.ctx().Done() }
func (p *pooledCtx) Err() error                  { return p.ctx().Err() }
func (p *pooledCtx) Value(k any) any             { return p.ctx().Value(k) }

// Ensure that Recv's watch of its context holds per call: a context that ends after its Recv
// returned does not abort the stream for the next Recv (no reconnect, nothing lost or
// repeated), and one that ends during a blocking Recv ends it with ctx.Err(), whether it is a
// plain context, one of a type that cannot be compared, or a pooled one reused.
func TestRelayRecvContextPerCall(t *testing.T) {
	// More records than the stream's flow-control window holds: an aborted stream fails a
	// later Recv instead of draining what it buffered.
	recs := genRecords(3000)
	rec, err := replay.NewRecording(recs)
	if err != nil {
		t.Fatal(err)
	}
	want := expected(t, recs)
	_, addr := serve(t, rec, replay.Options{Follow: true}, "127.0.0.1:0")
	cfg := testRelayConfig(addr)
	cfg.Follow = true
	src := newRelay(t, cfg, nil)
	var got []*flows.Event
	for i := range want {
		c, cancel := context.WithCancel(t.Context())
		ctx := []context.Context{c, uncomparableCtx{Context: c}, wrappedCtx{uncomparableCtx{Context: c}}}[i%3]
		ev, err := src.Recv(ctx)
		cancel() // after the call: the stream must stay
		if err != nil {
			t.Fatalf("Recv %d: %v", i, err)
		}
		got = append(got, ev)
	}
	sameEvents(t, got, want)
	if st := src.State(); st.Reconnects != 0 {
		t.Errorf("State().Reconnects = %d, want 0: a context ended between calls aborted the stream", st.Reconnects)
	}

	// Everything was read: each next Recv blocks on the follow stream until its context ends.
	blocked := func(what string, ctx context.Context, cancel context.CancelFunc) {
		t.Helper()
		done := make(chan error, 1)
		go func() {
			_, err := src.Recv(ctx)
			done <- err
		}()
		for deadline := time.Now().Add(time.Minute); !src.Receiving(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: Recv never started", what)
			}
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: Recv cancelled while blocked = %v, want context.Canceled", what, err)
			}
		case <-time.After(time.Minute): // a bound on a hang, not a wait
			t.Fatalf("%s: Recv still blocked after its context ended", what)
		}
	}
	c, cancel := context.WithCancel(t.Context())
	blocked("plain context", c, cancel)
	c, cancel = context.WithCancel(t.Context())
	blocked("context that cannot be compared", uncomparableCtx{Context: c}, cancel)
	c, cancel = context.WithCancel(t.Context())
	pooled := &pooledCtx{inner: c}
	blocked("pooled context", pooled, cancel)
	c, cancel = context.WithCancel(t.Context())
	pooled.reuse(c)
	blocked("pooled context reused", pooled, cancel)
}
