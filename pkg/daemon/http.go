package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadinessCheck reports why the daemon is not ready ("" when it is).
type ReadinessCheck func() string

// newMux serves /metrics from gatherer, /healthz (the process serves HTTP: alive) and /readyz
// (every check passes), the read-only status page at / when status is set, and the pprof
// handlers when withPprof is set.
func newMux(gatherer prometheus.Gatherer, ready []ReadinessCheck, withPprof bool, status http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	if status != nil {
		mux.Handle("GET /{$}", status)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		var reasons []string
		for _, c := range ready {
			if r := c(); r != "" {
				reasons = append(reasons, r)
			}
		}
		if len(reasons) > 0 {
			http.Error(w, "not ready: "+strings.Join(reasons, "; "), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// serveHTTP serves h on ln until ctx is done, then shuts down within shutdownTimeout.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down http on %s: %w", ln.Addr(), err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	}
	return nil
}

// httpServer is one listener of the daemon and what it serves.
type httpServer struct {
	ln net.Listener
	h  http.Handler
}

// serveAll serves every listener until ctx ends. A server that stops before then (its
// listener was closed or fails to accept) is sent on failed at once: the daemon must stop
// rather than run on without /metrics and /readyz, which is how it is watched. wait, called
// after ctx ended, returns the errors of the servers' shutdowns.
func serveAll(ctx context.Context, servers []httpServer) (failed <-chan error, wait func() error) {
	fail := make(chan error, len(servers))
	done := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			err := serveHTTP(ctx, s.ln, s.h)
			if err != nil && ctx.Err() == nil {
				fail <- err
				err = nil
			}
			done <- err
		}()
	}
	return fail, func() error {
		var errs []error
		for range servers {
			errs = append(errs, <-done)
		}
		return errors.Join(errs...)
	}
}

// shutdownTimeout bounds the HTTP server's graceful shutdown.
const shutdownTimeout = 5 * time.Second
