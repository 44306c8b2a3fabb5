package daemon

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// Ensure a listener the daemon cannot serve on stops the daemon with an error naming it,
// instead of the daemon running on unwatched (no /metrics, no /readyz).
func TestRunFailsWhenHTTPCannotServe(t *testing.T) {
	for _, which := range []string{"metrics", "pprof"} {
		t.Run(which, func(t *testing.T) {
			d := fileDeps(t, t.TempDir(), nil, "starwars.jsonl")
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close() // handed over unusable: Serve fails at its first Accept
			if which == "metrics" {
				d.MetricsListener = ln
			} else {
				d.PprofListener = ln
			}
			dm, err := New(Config{SyncInterval: time.Hour, Lifecycle: lifecycle.DefaultConfig(), Synth: synth.DefaultConfig()}, d)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- dm.Run(t.Context()) }() // never cancelled: only the failure ends it
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "serve http on "+addr) {
					t.Fatalf("Run = %v, want the serve error of %s", err, addr)
				}
			case <-time.After(time.Minute): // generous: without the fix Run never returns
				t.Fatal("Run still running a minute after its HTTP listener failed")
			}
		})
	}
}
