package replay_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"slices"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/recommender/recommender/pkg/replay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func newRecording(t testing.TB, resps []*observerpb.GetFlowsResponse) *replay.Recording {
	t.Helper()
	rec, err := replay.NewRecording(resps)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// start serves rec on a free loopback port and returns a client connection to it.
func start(t testing.TB, rec *replay.Recording, opts replay.Options) (*replay.Server, *grpc.ClientConn, string) {
	t.Helper()
	srv, err := replay.New(rec, opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	addr, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return srv, conn, addr
}

// collect reads a GetFlows stream to its end, or max responses.
func collect(ctx context.Context, conn *grpc.ClientConn, req *observerpb.GetFlowsRequest, max int) ([]*observerpb.GetFlowsResponse, error) {
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []*observerpb.GetFlowsResponse
	for max <= 0 || len(out) < max {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func key(r *observerpb.GetFlowsResponse) string {
	if f := r.GetFlow(); f != nil {
		return f.GetUuid()
	}
	return "lost/" + r.GetNodeName() + "/" + r.GetTime().AsTime().Format(time.RFC3339Nano)
}

func keys(rs []*observerpb.GetFlowsResponse) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = key(r)
	}
	return out
}

// flowIndexes returns the indexes of flow records (not notices) in rs.
func flowIndexes(rs []*observerpb.GetFlowsResponse) []int {
	var idx []int
	for i, r := range rs {
		if r.GetFlow() != nil {
			idx = append(idx, i)
		}
	}
	return idx
}

func selectRecs(rs []*observerpb.GetFlowsResponse, keep func(*flowpb.Flow) bool) []*observerpb.GetFlowsResponse {
	var out []*observerpb.GetFlowsResponse
	for _, r := range rs {
		if f := r.GetFlow(); f == nil || keep(f) {
			out = append(out, r)
		}
	}
	return out
}

// Ensure that GetFlows honors number, first, since, until, follow and allow/deny filters with
// Hubble's semantics, lost-events notices passing every filter.
func TestGetFlows(t *testing.T) {
	recs := genFlows(100)
	_, conn, _ := start(t, newRecording(t, recs), replay.Options{})
	fi := flowIndexes(recs)
	sinceT := base.Add(20 * time.Millisecond)
	untilT := base.Add(10 * time.Millisecond)
	firstSince := slices.IndexFunc(recs, func(r *observerpb.GetFlowsResponse) bool {
		return r.GetFlow() != nil && !r.GetTime().AsTime().Before(sinceT)
	})
	firstAfterUntil := slices.IndexFunc(recs, func(r *observerpb.GetFlowsResponse) bool {
		return r.GetFlow() != nil && r.GetTime().AsTime().After(untilT)
	})

	tests := []struct {
		name string
		req  *observerpb.GetFlowsRequest
		want []*observerpb.GetFlowsResponse
	}{
		{"all", &observerpb.GetFlowsRequest{Number: math.MaxUint64}, recs},
		{"number zero is all", &observerpb.GetFlowsRequest{}, recs},
		{"last 5", &observerpb.GetFlowsRequest{Number: 5}, recs[fi[len(fi)-5] : fi[len(fi)-1]+1]},
		{"first 30", &observerpb.GetFlowsRequest{Number: 30, First: true}, recs[:fi[29]+1]},
		{"since", &observerpb.GetFlowsRequest{Since: timestamppb.New(sinceT)}, recs[firstSince:]},
		{"since beats number", &observerpb.GetFlowsRequest{Number: 3, Since: timestamppb.New(sinceT)}, recs[firstSince : fi[slices.Index(fi, firstSince)+2]+1]},
		{"until", &observerpb.GetFlowsRequest{Number: math.MaxUint64, Until: timestamppb.New(untilT)}, recs[:firstAfterUntil]},
		{"allow port", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{DestinationPort: []string{"5432"}}}},
			selectRecs(recs, func(f *flowpb.Flow) bool { return f.GetL4().GetTCP().GetDestinationPort() == 5432 })},
		{"deny drops", &observerpb.GetFlowsRequest{Blacklist: []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}},
			selectRecs(recs, func(f *flowpb.Flow) bool { return f.GetVerdict() != flowpb.Verdict_DROPPED })},
		{"allow node and label, deny replies", &observerpb.GetFlowsRequest{
			Whitelist: []*flowpb.FlowFilter{{NodeName: []string{"kind-worker2"}, SourceLabel: []string{"k8s:app=frontend"}}},
			Blacklist: []*flowpb.FlowFilter{{Reply: []bool{true}}},
		}, selectRecs(recs, func(f *flowpb.Flow) bool { return f.GetNodeName() == "kind-worker2" && !f.GetIsReply().GetValue() })},
		{"allow filters are ORed", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{
			{EventType: []*flowpb.EventTypeFilter{{Type: 1}}}, {SourcePod: []string{"shop/nomatch"}},
		}}, selectRecs(recs, func(f *flowpb.Flow) bool { return f.GetEventType().GetType() == 1 })},
		{"no match", &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{SourceIp: []string{"192.168.0.0/16"}}}},
			selectRecs(recs, func(*flowpb.Flow) bool { return false })},
		{"follow from the end ends with the recording", &observerpb.GetFlowsRequest{Follow: true}, nil},
		{"follow from first", &observerpb.GetFlowsRequest{Follow: true, First: true}, recs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := collect(t.Context(), conn, tt.req, 0)
			if err != nil {
				t.Fatal(err)
			}
			if g, w := keys(got), keys(tt.want); !slices.Equal(g, w) {
				t.Errorf("GetFlows(%v) = %d records %v, want %d %v", tt.req, len(g), g, len(w), w)
			}
		})
	}
}

// Ensure that records arrive unchanged: the pre-marshaled bytes decode to the recorded message.
func TestGetFlowsUnchanged(t *testing.T) {
	recs := genFlows(30)
	_, conn, _ := start(t, newRecording(t, recs), replay.Options{})
	got, err := collect(t.Context(), conn, &observerpb.GetFlowsRequest{Number: math.MaxUint64}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(recs) {
		t.Fatalf("got %d records, want %d", len(got), len(recs))
	}
	for i := range got {
		if !proto.Equal(got[i], recs[i]) {
			t.Fatalf("record %d = %v, want %v", i, got[i], recs[i])
		}
	}
}

// Ensure that invalid and unsupported filters are refused, not ignored.
func TestGetFlowsInvalidFilter(t *testing.T) {
	_, conn, _ := start(t, newRecording(t, genFlows(5)), replay.Options{})
	for _, ff := range []*flowpb.FlowFilter{
		{SourceWorkload: []*flowpb.Workload{{Name: "x"}}},
		{DestinationPort: []string{"http"}},
		{Protocol: []string{"gopher"}},
		{SourceIp: []string{"10.0.0.300"}},
	} {
		_, err := collect(t.Context(), conn, &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{ff}}, 0)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("GetFlows(whitelist %v) error = %v, want InvalidArgument", ff, err)
		}
	}
}

// Ensure that Loop keeps a follow stream going with flow time increasing pass after pass.
func TestLoop(t *testing.T) {
	recs := genFlows(10)
	_, conn, _ := start(t, newRecording(t, recs), replay.Options{Loop: true})
	n := len(recs)
	got, err := collect(t.Context(), conn, &observerpb.GetFlowsRequest{Follow: true, First: true}, 3*n)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3*n {
		t.Fatalf("got %d records, want %d", len(got), 3*n)
	}
	for i := n; i < len(got); i++ {
		prev, cur := got[i-n].GetTime().AsTime(), got[i].GetTime().AsTime()
		if !cur.After(prev) {
			t.Fatalf("record %d at %v, not after the same record one pass earlier at %v", i, cur, prev)
		}
		if f := got[i].GetFlow(); f != nil && !f.GetTime().AsTime().Equal(cur) {
			t.Fatalf("record %d: flow time %v differs from response time %v", i, f.GetTime().AsTime(), cur)
		}
	}
	last := got[len(got)-1].GetTime().AsTime()
	// A later request for flows since the last one seen continues in the right pass.
	more, err := collect(t.Context(), conn, &observerpb.GetFlowsRequest{Follow: true, Since: timestamppb.New(last)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(more) != 1 || more[0].GetTime().AsTime().Before(last) {
		t.Fatalf("since %v returned %v", last, more)
	}
	// Without follow, a request gets one pass.
	one, err := collect(t.Context(), conn, &observerpb.GetFlowsRequest{Number: math.MaxUint64}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(one) != n {
		t.Fatalf("non-follow request got %d records, want %d", len(one), n)
	}
}

// Ensure that Rate releases records over time from server start, on an injected clock.
func TestRate(t *testing.T) {
	recs := genFlows(40)
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	_, conn, _ := start(t, newRecording(t, recs), replay.Options{Rate: 10, Now: clock})
	for _, tt := range []struct {
		elapsed time.Duration
		want    int
	}{{0, 0}, {500 * time.Millisecond, 5}, {2 * time.Second, 20}, {time.Hour, len(recs)}} {
		now = time.Unix(1000, 0).Add(tt.elapsed)
		got, err := collect(t.Context(), conn, &observerpb.GetFlowsRequest{Number: math.MaxUint64}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tt.want {
			t.Errorf("after %v got %d records, want %d", tt.elapsed, len(got), tt.want)
		}
	}
}

// Ensure that with Follow the stream stays open after the recording until the client leaves.
func TestFollowStaysOpen(t *testing.T) {
	recs := genFlows(10)
	_, conn, _ := start(t, newRecording(t, recs), replay.Options{Follow: true})
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true, First: true})
	if err != nil {
		t.Fatal(err)
	}
	for range recs {
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := stream.Recv()
		done <- err
	}()
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("Recv after the recording = %v, want Canceled (the stream was open)", err)
	}
}

// Ensure that ServerStatus and GetNodes describe the recording.
func TestStatusAndNodes(t *testing.T) {
	recs := genFlows(30)
	_, conn, _ := start(t, newRecording(t, recs), replay.Options{})
	c := observerpb.NewObserverClient(conn)
	st, err := c.ServerStatus(t.Context(), &observerpb.ServerStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetNumFlows() != 30 || st.GetNumConnectedNodes().GetValue() != 3 {
		t.Errorf("ServerStatus = %v, want 30 flows on 3 nodes", st)
	}
	nodes, err := c.GetNodes(t.Context(), &observerpb.GetNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var total uint64
	for _, n := range nodes.GetNodes() {
		names = append(names, n.GetName())
		total += n.GetNumFlows()
	}
	if want := []string{"kind-control-plane", "kind-worker", "kind-worker2"}; !slices.Equal(names, want) || total != 30 {
		t.Errorf("GetNodes = %v (%d flows), want %v (30 flows)", names, total, want)
	}
}

// Ensure that a stopped server can start again on the same address and serve.
func TestRestartSameAddress(t *testing.T) {
	recs := genFlows(10)
	srv, _, addr := start(t, newRecording(t, recs), replay.Options{})
	srv.Stop()
	if _, err := srv.Start(addr); err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got, err := collect(t.Context(), conn, &observerpb.GetFlowsRequest{}, 0)
	if err != nil || len(got) != len(recs) {
		t.Fatalf("after restart got %d records, err %v; want %d", len(got), err, len(recs))
	}
}

// Ensure that Load keeps what hubble wrote, record for record.
func TestLoad(t *testing.T) {
	recs := genFlows(20)
	rec, sum, err := replay.Load(t.Context(), []string{writeJSONPB(t, recs)}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Len() != len(recs) || sum.Malformed != 0 {
		t.Fatalf("Load = %d records (%+v), want %d", rec.Len(), sum, len(recs))
	}
	for i, r := range rec.Responses() {
		if !proto.Equal(r, recs[i]) {
			t.Fatalf("record %d = %v, want %v", i, r, recs[i])
		}
	}
}

// Ensure that Drain, the reference consumer, receives every record.
func TestDrain(t *testing.T) {
	recs := genFlows(50)
	_, conn, _ := start(t, newRecording(t, recs), replay.Options{})
	n, err := replay.Drain(t.Context(), conn, &observerpb.GetFlowsRequest{Number: math.MaxUint64}, 0)
	if err != nil || n != uint64(len(recs)) {
		t.Fatalf("Drain = %d, %v; want %d", n, err, len(recs))
	}
}
