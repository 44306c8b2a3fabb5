package flows_test

import (
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/recommender/recommender/pkg/flows"
)

// refusingObserver is a real Observer server whose GetFlows always fails with code; with
// code OK it does not implement GetFlows at all (grpc answers Unimplemented).
type refusingObserver struct {
	observerpb.UnimplementedObserverServer
	code  codes.Code
	calls atomic.Int32
}

func (o *refusingObserver) GetFlows(req *observerpb.GetFlowsRequest, srv observerpb.Observer_GetFlowsServer) error {
	o.calls.Add(1)
	if o.code == codes.OK {
		return o.UnimplementedObserverServer.GetFlows(req, srv)
	}
	return status.Error(o.code, "refused by the test server")
}

func serveRefusing(t *testing.T, obs *refusingObserver) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0") // listening before the client dials
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	observerpb.RegisterObserverServer(srv, obs)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// Ensure a relay answer that retrying cannot heal stops the source after one attempt with
// ErrRelayRefused naming the code, also when following (which retries anything else
// forever), while a transient code is still retried.
func TestRelayRefusedStopsRetrying(t *testing.T) {
	tests := []struct {
		name      string
		code      codes.Code
		follow    bool
		wantCalls int32
		refused   bool
	}{
		{"unauthenticated", codes.Unauthenticated, true, 1, true},
		{"permission denied", codes.PermissionDenied, true, 1, true},
		{"invalid argument", codes.InvalidArgument, false, 1, true},
		{"not a relay (unimplemented)", codes.OK, true, 1, true},
		{"transient is retried", codes.Unavailable, false, 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := &refusingObserver{code: tt.code}
			cfg := testRelayConfig(serveRefusing(t, obs))
			cfg.Follow = tt.follow
			src := newRelay(t, cfg, slog.New(slog.DiscardHandler))
			_, err := src.Recv(t.Context())
			if err == nil {
				t.Fatal("Recv: nil error, want the server's refusal")
			}
			if got := errors.Is(err, flows.ErrRelayRefused); got != tt.refused {
				t.Errorf("Recv error %v: ErrRelayRefused %t, want %t", err, got, tt.refused)
			}
			want := tt.code
			if want == codes.OK {
				want = codes.Unimplemented
			}
			if status.Code(err) != want {
				t.Errorf("Recv error %v: code %s, want %s", err, status.Code(err), want)
			}
			if got := obs.calls.Load(); got != tt.wantCalls {
				t.Errorf("server saw %d GetFlows calls, want %d", got, tt.wantCalls)
			}
		})
	}
}
