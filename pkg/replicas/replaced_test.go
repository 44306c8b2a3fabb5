package replicas_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replicas"
)

// Store identities as aggregate.Store.Identity writes them: the older store, lost, and the
// one that replaced it.
const (
	oldStore = "2026-12-01T08:00:00.000000001Z"
	newStore = "2026-12-02T09:30:00.000000002Z"
)

func noPositions() (*flows.Cursor, error) { return flows.NewCursor(), nil }

// serveReplica serves, on sw, replica self of urls with snap from the store id.
func serveReplica(t *testing.T, sw *switchable, self int, urls []string, snap *aggregate.Snapshot, id string) {
	t.Helper()
	s, err := replicas.New(replicas.Config{Self: self, URLs: urls}, replicas.Local{Snapshot: func() *aggregate.Snapshot { return snap },
		Positions: noPositions, Store: id}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sw.serve(s.Handler())
}

// gatedStore holds the first write of a retired summary until release is closed.
type gatedStore struct {
	*aggregate.Store
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) Keep(vals map[string][]byte) error {
	for k := range vals {
		if strings.HasPrefix(k, "replica-retired-") {
			g.once.Do(func() {
				close(g.entered)
				<-g.release
			})
			break
		}
	}
	return g.Store.Keep(vals)
}

// Ensure a replaced store is retired once when two pulls of its replica run at once (a
// handover's beside a sync's, as when the replica comes back with a new volume): the
// second pull, answered while the first still writes the retired summary, must not retire
// the old summary again, which would count it twice until it expires, in the store too.
func TestReplacedStoreRetiredOnce(t *testing.T) {
	big, small := clusterSnapshot(t, 20, 2), clusterSnapshot(t, 10, 3)
	sw := newSwitchable(t)
	urls := []string{"http://127.0.0.1:1", sw.srv.URL}
	store := &gatedStore{Store: openKeptStore(t), entered: make(chan struct{}), release: make(chan struct{})}
	s, reg := keptPuller(t, sw.srv.URL, store, replicas.Config{}, time.Time{})
	serveReplica(t, sw, 1, urls, big, oldStore)
	s.Snapshot(t.Context())

	// The volume is lost: replica 1 serves a new store's summary. Every request it answers
	// is signalled once answered.
	answered := make(chan struct{}, 4)
	one, err := replicas.New(replicas.Config{Self: 1, URLs: urls}, replicas.Local{Snapshot: func() *aggregate.Snapshot { return small },
		Positions: noPositions, Store: newStore}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := one.Handler()
	sw.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		answered <- struct{}{}
	}))
	synced := make(chan struct{})
	go func() {
		defer close(synced)
		s.Snapshot(t.Context())
	}()
	<-store.entered // the sync retired the old summary and is writing it
	<-answered
	handedOver := make(chan struct{})
	s.Handover(func() {}, func() { close(handedOver) })()
	<-answered // the handover's pull was answered while the sync still writes
	close(store.release)
	<-synced
	<-handedOver

	want := big.Flows + small.Flows
	if got := s.Snapshot(t.Context()); got.Flows != want {
		t.Errorf("merged %d flows, want %d: the old store once and the new one", got.Flows, want)
	}
	if n := counterValue(t, reg, "recommender_replica_store_replacements_total", ""); n != 1 {
		t.Errorf("%.0f store replacements counted, want 1", n)
	}
	sw.serve(http.NotFoundHandler())
	again, _ := keptPuller(t, sw.srv.URL, store.Store, replicas.Config{}, time.Time{})
	if got := again.Snapshot(t.Context()); got.Flows != want {
		t.Errorf("after a restart: merged %d flows, want %d", got.Flows, want)
	}
}

// Ensure what a replaced store held reaches every replica's merge, and only once: replica 0
// and 1 each hold a stand-in for replica 2, which lost its volume and is down again.
//   - Replica 0 held the old store's summary, replica 1 the new one's: replica 0 takes
//     replica 1's copy of the newer store and keeps the old one standing in beside it.
//   - Replica 0 retired the old store itself, replica 1 held only the old one: replica 0
//     does not take replica 1's copy of the old store, which it has retired already, even
//     though it reaches further.
//   - A replica starting afresh while replica 2 is down takes another's stand-in of it and
//     its retired copy in one sync.
//   - Replica 2 comes back on its new store, and a replica 1 with a fresh store of its own
//     starts: both take replica 0's retired copy, so whichever leads proposes from the old
//     store's edges too. Replica 2 keeps it across a restart.
func TestReplacedStoreAcrossTheSet(t *testing.T) {
	empty := func() *aggregate.Snapshot { return &aggregate.Snapshot{} }
	newSet := func(urls []string, self int, store *aggregate.Store, id string, snap func() *aggregate.Snapshot) *replicas.Set {
		t.Helper()
		s, err := replicas.New(replicas.Config{Self: self, URLs: urls, Wait: time.Millisecond, KeepEvery: time.Nanosecond},
			replicas.Local{Snapshot: snap, Positions: noPositions, Store: id, Kept: store}, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// ids of replicas 0 and 1's own stores.
	ids := []string{"2026-11-20T00:00:00.000000000Z", "2026-11-21T00:00:00.000000000Z"}
	// start serves replicas 0 and 1, each with a store of its own and nothing observed;
	// replica 2's server is set by each case.
	start := func(t *testing.T) ([]*switchable, []string, []*aggregate.Store, []*replicas.Set) {
		sws := []*switchable{newSwitchable(t), newSwitchable(t), newSwitchable(t)}
		urls := []string{sws[0].srv.URL, sws[1].srv.URL, sws[2].srv.URL}
		stores := []*aggregate.Store{openKeptStore(t), openKeptStore(t)}
		sets := []*replicas.Set{newSet(urls, 0, stores[0], ids[0], empty), newSet(urls, 1, stores[1], ids[1], empty)}
		for i, s := range sets {
			sws[i].serve(s.Handler())
		}
		return sws, urls, stores, sets
	}

	t.Run("a copy of the newer store retires the older one", func(t *testing.T) {
		before, after := clusterSnapshot(t, 10, 2), clusterSnapshot(t, 20, 2)
		sws, urls, stores, sets := start(t)
		serveReplica(t, sws[2], 2, urls, before, oldStore)
		sets[0].Snapshot(t.Context())
		serveReplica(t, sws[2], 2, urls, after, newStore)
		sets[1].Snapshot(t.Context())
		sws[2].serve(http.NotFoundHandler())
		sets[1].Snapshot(t.Context())
		want := before.Flows + after.Flows
		if got := sets[0].Snapshot(t.Context()); got.Flows != want {
			t.Errorf("replica 0 merged %d flows, want %d: the old store's and the newer copy's", got.Flows, want)
		}
		sws[1].serve(http.NotFoundHandler())
		restarted := newSet(urls, 0, stores[0], ids[0], empty)
		if got := restarted.Snapshot(t.Context()); got.Flows != want {
			t.Errorf("replica 0 restarted merged %d flows, want %d", got.Flows, want)
		}
	})

	t.Run("a fresh replica takes the stand-in and the retired copy at once", func(t *testing.T) {
		before, after := clusterSnapshot(t, 20, 2), clusterSnapshot(t, 10, 2)
		sws, urls, _, sets := start(t)
		serveReplica(t, sws[2], 2, urls, before, oldStore)
		sets[1].Snapshot(t.Context())
		serveReplica(t, sws[2], 2, urls, after, newStore)
		sets[1].Snapshot(t.Context())
		sws[2].serve(http.NotFoundHandler())
		sets[1].Snapshot(t.Context())
		// Replica 0 starts afresh with replica 2 down: its one Snapshot (only replica 1 is
		// waited for) merges replica 1's stand-in of the new store and its retired old one.
		fresh := newSet(urls, 0, openKeptStore(t), "2026-12-03T00:00:00Z", empty)
		fresh.WaitFor(func() ([]int, bool) { return []int{1}, true })
		if got, want := fresh.Snapshot(t.Context()).Flows, before.Flows+after.Flows; got != want {
			t.Errorf("a fresh replica 0 merged %d flows, want %d: the new store's stand-in and the old store retired", got, want)
		}
	})

	t.Run("a retired store is not taken again", func(t *testing.T) {
		before, after := clusterSnapshot(t, 20, 2), clusterSnapshot(t, 10, 2)
		sws, urls, stores, sets := start(t)
		serveReplica(t, sws[2], 2, urls, before, oldStore)
		sets[0].Snapshot(t.Context())
		sets[1].Snapshot(t.Context())
		// Replica 2 comes back on a new store, still catching up, and only replica 0 sees it.
		serveReplica(t, sws[2], 2, urls, after, newStore)
		sets[0].Snapshot(t.Context())
		sws[2].serve(http.NotFoundHandler())
		sets[1].Snapshot(t.Context())
		want := before.Flows + after.Flows
		if got := sets[0].Snapshot(t.Context()); got.Flows != want {
			t.Errorf("replica 0 merged %d flows, want %d: the old store once and the new one", got.Flows, want)
		}

		// Replica 2 comes back on its new store, which holds nothing of the old one.
		twoStore := openKeptStore(t)
		two := newSet(urls, 2, twoStore, newStore, func() *aggregate.Snapshot { return after })
		sws[2].serve(two.Handler())
		if got := two.Snapshot(t.Context()); got.Flows != want {
			t.Errorf("replica 2 on its new store merged %d flows, want %d: its own and replica 0's retired copy of its old store", got.Flows, want)
		}
		// A replica 1 that lost its store too, starting afresh.
		fresh := newSet(urls, 1, openKeptStore(t), "2026-12-03T00:00:00Z", empty)
		sws[1].serve(fresh.Handler())
		if got := fresh.Snapshot(t.Context()); got.Flows != want {
			t.Errorf("a fresh replica 1 merged %d flows, want %d", got.Flows, want)
		}
		if got := sets[0].Snapshot(t.Context()); got.Flows != want {
			t.Errorf("replica 0 merged %d flows with replica 2 back, want %d", got.Flows, want)
		}
		// Replica 2 restarts with the others down: its kept retired copy still stands in.
		sws[0].serve(http.NotFoundHandler())
		sws[1].serve(http.NotFoundHandler())
		restarted := newSet(urls, 2, twoStore, newStore, func() *aggregate.Snapshot { return after })
		if got := restarted.Snapshot(t.Context()); got.Flows != want {
			t.Errorf("replica 2 restarted merged %d flows, want %d", got.Flows, want)
		}
		// So does replica 0's, beside replica 2's new summary, which it pulls again.
		sws[2].serve(restarted.Handler())
		zero := newSet(urls, 0, stores[0], ids[0], empty)
		if got := zero.Snapshot(t.Context()); got.Flows != want {
			t.Errorf("replica 0 restarted merged %d flows, want %d", got.Flows, want)
		}
		// Replica 0 loses its volume too, with replica 1 down: replica 2 itself hands on its
		// retired summary of its old store.
		fresh0 := newSet(urls, 0, openKeptStore(t), "2026-12-03T01:00:00Z", empty)
		if got := fresh0.Snapshot(t.Context()); got.Flows != want {
			t.Errorf("a fresh replica 0 merged %d flows, want %d: replica 2's and its retired summary of its old store", got.Flows, want)
		}
	})
}
