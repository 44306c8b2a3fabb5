package k8stest

import (
	"net/http"
	"strings"
	"sync/atomic"

	"k8s.io/client-go/rest"
)

// Writes counts the requests that change objects (every method but GET) sent through the
// configs it wraps; Lease renewals are left out, so leader election does not count as writes.
type Writes struct{ n atomic.Int64 }

// Wrap returns a copy of cfg whose requests are counted.
func (w *Writes) Wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method != http.MethodGet && !strings.Contains(r.URL.Path, "/leases") {
				w.n.Add(1)
			}
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

// Count returns the writes counted since the last Reset.
func (w *Writes) Count() int64 { return w.n.Load() }

// Reset starts counting from zero.
func (w *Writes) Reset() { w.n.Store(0) }

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
