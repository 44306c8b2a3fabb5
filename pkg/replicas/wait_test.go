package replicas_test

import (
	"context"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replicas"
)

// Ensure the first Snapshot waits only for the replicas whose Lease is live (Set.WaitFor):
// replica 1 is dead (nothing listens on its URL) and its Lease expired, so replica 0 starts
// with replica 2's summary instead of waiting the hour of Wait; and before the Leases were
// looked at, every replica is waited for.
func TestFirstSnapshotWaitsForLiveReplicas(t *testing.T) {
	positions := func() (*flows.Cursor, error) { return flows.NewCursor(), nil }
	served := &aggregate.Snapshot{Flows: 7}
	serving, err := replicas.New(replicas.Config{Self: 2, URLs: []string{"http://127.0.0.1:1", "http://127.0.0.1:1", "http://127.0.0.1:1"}},
		replicas.Local{Snapshot: func() *aggregate.Snapshot { return served }, Positions: positions}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(serving.Handler())
	t.Cleanup(srv.Close)

	pulling, err := replicas.New(replicas.Config{Self: 0, URLs: []string{"http://127.0.0.1:1", "http://127.0.0.1:1", srv.URL}, Wait: time.Hour},
		replicas.Local{Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{} }, Positions: positions}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The first answer says the Leases were not looked at yet, the next ones that only
	// replica 2 lives: the wait goes on past the first pull, then ends without replica 1.
	var asked atomic.Int32
	pulling.WaitFor(func() ([]int, bool) {
		if asked.Add(1) == 1 {
			return nil, false
		}
		return []int{2}, true
	})
	// Not a wait: a bound on a wait that should not happen, so that a regression fails here
	// instead of at the test binary's timeout.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	got := pulling.Snapshot(ctx)
	if ctx.Err() != nil {
		t.Fatal("the first Snapshot waited for replica 1, whose Lease expired")
	}
	if got.Flows != served.Flows {
		t.Errorf("first Snapshot holds %d flows, want replica 2's %d", got.Flows, served.Flows)
	}
	if n := asked.Load(); n < 2 {
		t.Errorf("live replicas asked %d times: the wait ended before the Leases were looked at", n)
	}
}
