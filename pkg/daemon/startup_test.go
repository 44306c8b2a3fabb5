package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/cluster"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// forbiddenElector is an Elector whose service account may not use the Lease.
type forbiddenElector struct{ calls atomic.Int64 }

func (e *forbiddenElector) Run(ctx context.Context, _ func(context.Context)) error {
	e.calls.Add(1)
	return fmt.Errorf("%w: lease kube-system/recommender: forbidden", cluster.ErrLeaseForbidden)
}

func (e *forbiddenElector) IsLeader() bool { return false }

// Ensure a replica that may not use the Lease says so on /readyz instead of retrying quietly
// (issue 20), and keeps serving.
func TestReadyzLeaseForbidden(t *testing.T) {
	d := fileDeps(t, t.TempDir(), nil, "starwars.jsonl")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.MetricsListener = ln
	el := &forbiddenElector{}
	d.Elector = el
	dm, err := New(Config{SyncInterval: time.Hour, Lifecycle: lifecycle.DefaultConfig(), Synth: synth.DefaultConfig()}, d)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- dm.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	url := "http://" + ln.Addr().String() + "/readyz"
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "leader election") &&
				strings.Contains(string(body), "forbidden") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never reported the forbidden lease (last: %v)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := el.calls.Load(); n != 1 {
		t.Errorf("campaigned %d times right away, want 1 (then a long backoff)", n)
	}
}

// Ensure a New that fails (a store holding an undecodable lifecycle record) registers no
// metric, so the caller may build another daemon on the same registry (issue 17).
func TestNewFailsWithoutRegistering(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewPedanticRegistry()
	d := fileDeps(t, dir, reg, "starwars.jsonl")
	in, err := aggregate.NewIngester(d.Store, d.Aggregator, aggregate.IngesterConfig{Hooks: aggregate.IngestHooks{
		BeforeCommit: func(l *aggregate.Lifecycle) error { return l.Put("~node-totals", []byte("not json")) },
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The daemon loads the store into its own aggregator.
	if d.Aggregator, err = aggregate.NewAggregator(aggregate.Config{}, nil, nil); err != nil {
		t.Fatal(err)
	}
	before, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{SyncInterval: time.Hour, Lifecycle: lifecycle.DefaultConfig(), Synth: synth.DefaultConfig()}, d); err == nil {
		t.Fatal("New over an undecodable record = nil error")
	}
	after, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("a failed New registered %d metric families", len(after)-len(before))
	}
}
