package replay

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc"
)

// restartable runs one gRPC server at a time: the stand-ins are started, stopped (clients
// see Unavailable, as when a relay pod or an agent dies) and started again on the same
// address any number of times. Safe for concurrent use.
type restartable struct {
	mu   sync.Mutex
	grpc *grpc.Server
	lis  net.Listener
}

// listen listens on addr ("127.0.0.1:0" for any free port) and serves gs there in the
// background; it returns the bound address.
func (r *restartable) listen(addr string, gs *grpc.Server) (string, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen %s: %w", addr, err)
	}
	if err := r.take(gs, lis); err != nil {
		lis.Close()
		return "", err
	}
	go gs.Serve(lis) //nolint:errcheck // returns when stop closes the listener
	return lis.Addr().String(), nil
}

// take makes gs on lis the running server, unless one runs already.
func (r *restartable) take(gs *grpc.Server, lis net.Listener) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.grpc != nil {
		return errors.New("already running on " + r.lis.Addr().String())
	}
	r.grpc, r.lis = gs, lis
	return nil
}

// stop closes the listener and every open stream at once. Nothing happens when none runs.
func (r *restartable) stop() {
	r.mu.Lock()
	gs, lis := r.grpc, r.lis
	r.grpc, r.lis = nil, nil
	r.mu.Unlock()
	if gs != nil {
		gs.Stop()
		// Serve may not have taken the listener yet; the address must be free on return.
		lis.Close()
	}
}

// addr is the running server's address, "" when none runs.
func (r *restartable) addr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lis == nil {
		return ""
	}
	return r.lis.Addr().String()
}
