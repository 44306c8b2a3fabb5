package flows

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// sliceSource is a Source over fixed events.
type sliceSource struct{ events []*Event }

func (s *sliceSource) Recv(ctx context.Context) (*Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(s.events) == 0 {
		return nil, io.EOF
	}
	ev := s.events[0]
	s.events = s.events[1:]
	return ev, nil
}

// rec normalizes a trace record of web -> api:8080 at time t0+at, modified by mod.
func rec(t *testing.T, at time.Duration, mod ...func(*flowpb.Flow)) *Event {
	t.Helper()
	f := trace(web(), api(), tcp(43210, 8080, syn), mod...)
	f.Time = timestamppb.New(t0.Add(at))
	ev, skip := NewNormalizer(nil).Flow(f)
	if skip != SkipNone {
		t.Fatalf("test record skipped: %s", skip)
	}
	return ev
}

func dropped(f *flowpb.Flow) {
	f.Verdict, f.DropReasonDesc = flowpb.Verdict_DROPPED, flowpb.DropReason_POLICY_DENIED
	f.EventType = &flowpb.CiliumEventType{Type: 1, SubType: 133}
	f.TraceObservationPoint, f.TrafficDirection = flowpb.TraceObservationPoint_UNKNOWN_POINT, flowpb.TrafficDirection_INGRESS
	f.IsReply = nil
	f.NodeName = "node-b"
}

func policyVerdict(v flowpb.Verdict) func(*flowpb.Flow) {
	return func(f *flowpb.Flow) {
		f.Verdict = v
		if v == flowpb.Verdict_DROPPED {
			f.DropReasonDesc = flowpb.DropReason_POLICY_DENIED
		}
		f.EventType = &flowpb.CiliumEventType{Type: 5}
		f.TraceObservationPoint, f.TrafficDirection = flowpb.TraceObservationPoint_UNKNOWN_POINT, flowpb.TrafficDirection_INGRESS
		f.NodeName = "node-b"
	}
}

func ack(f *flowpb.Flow) { f.L4 = tcp(43210, 8080, &flowpb.TCPFlags{ACK: true}) }

func otherPort(f *flowpb.Flow) { f.L4 = tcp(43211, 8080, syn) }

func lostAt(at time.Duration) *Event {
	return &Event{Kind: KindLost, Time: t0.Add(at), Node: "node-b", Lost: &Lost{Source: "HUBBLE_RING_BUFFER", Count: 10}}
}

func TestFolder(t *testing.T) {
	cases := []struct {
		name   string
		events func(t *testing.T) []*Event
		want   int
	}{
		{"one connection seen at both ends counts once", func(t *testing.T) []*Event {
			return []*Event{rec(t, 0), rec(t, 300*time.Microsecond, atServer)}
		}, 1},
		{"both ends reported as EGRESS count once", func(t *testing.T) []*Event {
			return []*Event{rec(t, 0), rec(t, 300*time.Microsecond, atServer, func(f *flowpb.Flow) { f.TrafficDirection = flowpb.TrafficDirection_EGRESS })}
		}, 1},
		{"SYN, ACK and the policy verdict of one connection count once", func(t *testing.T) []*Event {
			return []*Event{rec(t, 0), rec(t, time.Millisecond, policyVerdict(flowpb.Verdict_FORWARDED)), rec(t, 2*time.Millisecond, ack)}
		}, 1},
		{"forwarded egress and dropped ingress both kept", func(t *testing.T) []*Event {
			return []*Event{rec(t, 0), rec(t, 300*time.Microsecond, dropped)}
		}, 2},
		{"policy verdict and drop notification of one dropped packet count once", func(t *testing.T) []*Event {
			return []*Event{rec(t, 0, policyVerdict(flowpb.Verdict_DROPPED)), rec(t, 10*time.Microsecond, dropped)}
		}, 1},
		{"same connection again after FoldWindow counts again", func(t *testing.T) []*Event {
			return []*Event{rec(t, 0), rec(t, FoldWindow+time.Second)}
		}, 2},
		{"a busy connection stays one observation while records keep coming", func(t *testing.T) []*Event {
			var evs []*Event
			for i := range 6 {
				evs = append(evs, rec(t, time.Duration(i)*time.Second, ack))
			}
			return evs
		}, 1},
		{"another client port is another connection", func(t *testing.T) []*Event {
			return []*Event{rec(t, 0), rec(t, time.Millisecond, otherPort)}
		}, 2},
		{"records slightly out of order across nodes still fold", func(t *testing.T) []*Event {
			return []*Event{rec(t, time.Millisecond, atServer), rec(t, 0)}
		}, 1},
		{"lost-events notices pass through", func(t *testing.T) []*Event {
			return []*Event{lostAt(0), lostAt(0), rec(t, 0)}
		}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			evs := tc.events(t)
			var stats Stats
			f := NewFolder(&sliceSource{events: evs}, &stats)
			got := 0
			for {
				_, err := f.Recv(t.Context())
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got++
			}
			if got != tc.want {
				t.Errorf("Folder delivered %d events, want %d", got, tc.want)
			}
			if skipped := stats.Skipped.Load(); int(skipped) != len(evs)-got {
				t.Errorf("Skipped = %d, want %d", skipped, len(evs)-got)
			}
		})
	}
}

// Ensure the folder forgets connections as flow time moves on, so its memory follows the
// connection rate and not the history.
func TestFolderSweeps(t *testing.T) {
	var evs []*Event
	for i := range 1000 {
		port := uint32(33000 + i)
		evs = append(evs, rec(t, time.Duration(i)*time.Second, func(f *flowpb.Flow) { f.L4 = tcp(port, 8080, syn) }))
	}
	f := NewFolder(&sliceSource{events: evs}, nil)
	for {
		if _, err := f.Recv(t.Context()); err != nil {
			break
		}
	}
	if n := len(f.seen); n > 10 {
		t.Errorf("folder remembers %d connections after 1000 s of one connection per second, want a few", n)
	}
}

// Ensure the folder stops when its context is done.
func TestFolderContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := NewFolder(&sliceSource{events: []*Event{rec(t, 0)}}, nil).Recv(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Recv on a canceled context = %v, want context.Canceled", err)
	}
}
