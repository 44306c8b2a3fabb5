package replicas_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/replicas"
)

// keptServer is replica 1 of two serving snap, a cursor at one flow of node-7 and evidence;
// older makes it serve as a replica of an older version does (the JSON form, whatever the
// puller asks for).
func keptServer(t *testing.T, snap *aggregate.Snapshot, older bool) (*httptest.Server, *flows.Cursor, []lifecycle.Evidence) {
	t.Helper()
	pos := flows.NewCursor()
	pos.Advance(&flows.Event{Node: "node-7", Time: time.Date(2026, 12, 1, 0, 0, 5, 0, time.UTC), ID: 42})
	ev := []lifecycle.Evidence{{Workload: "team-1/k8s:app=a", State: lifecycle.Audit, Revision: "r1", WindowFlows: 3}}
	s, err := replicas.New(replicas.Config{Self: 1, URLs: []string{"http://127.0.0.1:1", "http://127.0.0.1:1"}},
		replicas.Local{Snapshot: func() *aggregate.Snapshot { return snap }, Positions: func() (*flows.Cursor, error) { return pos.Clone(), nil },
			Evidence: func() []lifecycle.Evidence { return ev }}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	if older {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Del("Accept")
			inner.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, pos, ev
}

// keptPuller is replica 0 of two, pulling from url, keeping summaries in store; its own
// aggregate holds nothing but its newest flow's time, to.
func keptPuller(t *testing.T, url string, store replicas.SummaryStore, cfg replicas.Config, to time.Time) (*replicas.Set, *prometheus.Registry) {
	t.Helper()
	cfg.Self, cfg.URLs = 0, []string{"http://127.0.0.1:1", url}
	if cfg.Wait == 0 {
		cfg.Wait = time.Millisecond
	}
	reg := prometheus.NewPedanticRegistry()
	s, err := replicas.New(cfg, replicas.Local{Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{To: to} },
		Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil }, Kept: store}, nil, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func counterValue(t *testing.T, reg prometheus.Gatherer, name, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 0 {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
			if m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s %s", name, result)
	return 0
}

func openKeptStore(t *testing.T) *aggregate.Store {
	t.Helper()
	st, err := aggregate.Open(filepath.Join(t.TempDir(), "replica-0.db"), aggregate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Ensure a replica keeps the other's summary in its store, the first pull at once, later ones
// every KeepEvery and after a change of the live set, and that after a restart with the
// other down the kept summary stands in: its edges in the merge, its positions where a
// moved node starts, its evidence listed but not as this sync's, and still waited for at
// start (a kept summary is older than what the replica serves). The same for the JSON form
// a replica of an older version serves.
func TestKeptSummaryStandsIn(t *testing.T) {
	snap := clusterSnapshot(t, 30, 4)
	want := aggregate.Merge(&aggregate.Snapshot{}, snap)
	for _, older := range []bool{false, true} {
		name := map[bool]string{false: "binary", true: "JSON from an older replica"}[older]
		t.Run(name, func(t *testing.T) {
			srv, pos, ev := keptServer(t, snap, older)
			store := openKeptStore(t)
			s, reg := keptPuller(t, srv.URL, store, replicas.Config{KeepEvery: time.Hour}, time.Time{})
			if got := s.Snapshot(t.Context()); !reflect.DeepEqual(got, want) {
				t.Fatalf("merged %d edges, want %d", got.EdgeCount(), want.EdgeCount())
			}
			s.Snapshot(t.Context())
			if n := counterValue(t, reg, "recommender_replica_keeps_total", "ok"); n != 1 {
				t.Errorf("two pulls within KeepEvery kept %.0f times, want once", n)
			}
			done := make(chan struct{})
			s.Handover(func() {}, func() { close(done) })()
			<-done
			if n := counterValue(t, reg, "recommender_replica_keeps_total", "ok"); n != 2 {
				t.Errorf("a pull after the live set changed: %.0f keeps, want 2", n)
			}
			if n := counterValue(t, reg, "recommender_replica_standins", ""); n != 0 {
				t.Errorf("%.0f stand-ins while replica 1 answers, want 0", n)
			}
			srv.Close()

			// This replica restarts on its store while replica 1 is down. The wait spans two
			// pulls (retried every second), so a kept summary that ended it shows.
			s, reg = keptPuller(t, srv.URL, store, replicas.Config{Wait: 1500 * time.Millisecond}, time.Time{})
			if n := s.StandIns(); n != 1 {
				t.Errorf("after a restart: %d stand-ins, want 1", n)
			}
			if got := s.Start("node-7"); got == nil || !got.Equal(pos) {
				t.Errorf("node-7 starts at %v, want replica 1's kept position %v", got, pos)
			}
			if got := s.Peers(); len(got) != 1 || got[0].Pulled || !reflect.DeepEqual(got[0].Evidence, ev) {
				t.Errorf("Peers = %+v, want replica 1's kept evidence, not pulled", got)
			}
			got := s.Snapshot(t.Context())
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("merged after a restart %d edges, want replica 1's kept %d", got.EdgeCount(), want.EdgeCount())
			}
			if n := counterValue(t, reg, "recommender_replica_pulls_total", "error"); n < 2 {
				t.Errorf("%.0f failed pulls at start: the kept summary ended the wait for replica 1's own", n)
			}
			if n := counterValue(t, reg, "recommender_replica_standins", ""); n != 1 {
				t.Errorf("gauge: %.0f stand-ins, want 1", n)
			}
		})
	}
}

// Ensure a stand-in's edges expire by Retention against this replica's newest flow, and that
// a stand-in left empty is dropped from the merge and from the store.
func TestKeptSummaryExpires(t *testing.T) {
	snap := clusterSnapshot(t, 30, 4)
	srv, _, _ := keptServer(t, snap, false)
	store := openKeptStore(t)
	s, _ := keptPuller(t, srv.URL, store, replicas.Config{}, time.Time{})
	s.Snapshot(t.Context())
	srv.Close()

	// The edges were last seen between 1 ms and 120 ms past midnight.
	midnight := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	for _, c := range []struct {
		name  string
		to    time.Time
		edges int
	}{
		{"no flow of its own yet", time.Time{}, snap.EdgeCount()},
		{"within the retention", midnight.Add(day), snap.EdgeCount()},
		{"half expired", midnight.Add(day + 60*time.Millisecond), -1},
		{"all expired", midnight.Add(day + time.Second), 0},
	} {
		s, _ := keptPuller(t, srv.URL, store, replicas.Config{Retention: day}, c.to)
		got := s.Snapshot(t.Context())
		switch n := got.EdgeCount(); {
		case c.edges >= 0 && n != c.edges:
			t.Errorf("%s: %d edges merged, want %d", c.name, n, c.edges)
		case c.edges < 0 && (n == 0 || n == snap.EdgeCount()):
			t.Errorf("%s: %d edges merged of %d, want some expired", c.name, n, snap.EdgeCount())
		}
		if c.edges == 0 && s.StandIns() != 0 {
			t.Errorf("%s: the empty stand-in is still merged", c.name)
		}
	}
	kept, err := store.Kept()
	if err != nil || len(kept) != 0 {
		t.Errorf("store keeps %d values (%v) after the stand-in expired, want none", len(kept), err)
	}
}

// Ensure a kept summary that cannot be used is left out with the others still standing in:
// one that does not decode, one whose snapshot fails the decoder's checks, and one of this
// replica's own index (its store was another replica's); and that a daemon alone takes every
// kept summary, its own index's included, since a replica never keeps its own.
func TestKeptSummaryLeftOut(t *testing.T) {
	snap := clusterSnapshot(t, 10, 2)
	srv, _, _ := keptServer(t, snap, false)
	store := openKeptStore(t)
	s, _ := keptPuller(t, srv.URL, store, replicas.Config{}, time.Time{})
	s.Snapshot(t.Context())
	srv.Close()
	kept, err := store.Kept()
	if err != nil || len(kept) != 1 {
		t.Fatalf("kept %d values (%v), want 1", len(kept), err)
	}
	var good []byte
	for _, v := range kept {
		good = v
	}
	var k struct {
		PulledAt time.Time        `json:"pulledAt"`
		Summary  replicas.Summary `json:"summary"`
	}
	if err := json.Unmarshal(good, &k); err != nil {
		t.Fatal(err)
	}
	k.Summary.Replica = 0
	own, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	k.Summary.Replica = 3
	k.Summary.SnapshotBinary = k.Summary.SnapshotBinary[:len(k.Summary.SnapshotBinary)/2]
	cut, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	for key, v := range map[string][]byte{
		"replica-summary-2": []byte("{not json"),
		"replica-summary-3": cut,
		"replica-summary-0": own,
		"unrelated":         []byte("x"),
	} {
		if err := store.Keep(map[string][]byte{key: v}); err != nil {
			t.Fatal(err)
		}
	}
	s, _ = keptPuller(t, srv.URL, store, replicas.Config{}, time.Time{})
	if n := s.StandIns(); n != 1 {
		t.Errorf("%d stand-ins, want 1: only replica 1's summary is usable", n)
	}
	if got := s.Snapshot(t.Context()); got.EdgeCount() != snap.EdgeCount() {
		t.Errorf("merged %d edges, want replica 1's %d", got.EdgeCount(), snap.EdgeCount())
	}

	if ok, err := replicas.HasKept(store, nil); !ok || err != nil {
		t.Fatalf("HasKept = %t, %v; want true", ok, err)
	}
	alone, err := replicas.New(replicas.Config{}, replicas.Local{Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{} },
		Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil }, Kept: store}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := alone.StandIns(); n != 2 {
		t.Errorf("alone: %d stand-ins, want 2 (indexes 0 and 1)", n)
	}
	if got := alone.Snapshot(t.Context()); got.Flows != 2*snap.Flows {
		t.Errorf("alone: merged %d flows, want both kept summaries' %d", got.Flows, 2*snap.Flows)
	}
	if got := alone.Peers(); len(got) != 0 {
		t.Errorf("alone: Peers = %+v, want none", got)
	}
	if ok, err := replicas.HasKept(openKeptStore(t), nil); ok || err != nil {
		t.Errorf("HasKept of a new store = %t, %v; want false", ok, err)
	}
}

// switchable is an HTTP server whose handler is set after the Set it serves is made.
type switchable struct {
	srv *httptest.Server
	h   atomic.Pointer[http.Handler]
	// copies counts the requests for a copy of another replica's summary (CopyParam).
	copies atomic.Int32
}

func newSwitchable(t *testing.T) *switchable {
	t.Helper()
	sw := &switchable{}
	sw.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has(replicas.CopyParam) {
			sw.copies.Add(1)
		}
		if h := sw.h.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "not serving", http.StatusServiceUnavailable)
	}))
	t.Cleanup(sw.srv.Close)
	return sw
}

func (sw *switchable) serve(h http.Handler) { sw.h.Store(&h) }

// Ensure replicas that each hold a stand-in for a replica gone converge on the newest copy:
// replica 0 pulled replica 2 before it served more, replica 1 after, then replica 2 went
// away; replica 0 takes replica 1's copy (edges and positions) and keeps it, and replica 1
// takes nothing back.
func TestStandInsConverge(t *testing.T) {
	sws := []*switchable{newSwitchable(t), newSwitchable(t), newSwitchable(t)}
	urls := []string{sws[0].srv.URL, sws[1].srv.URL, sws[2].srv.URL}
	empty := func() *aggregate.Snapshot { return &aggregate.Snapshot{} }
	newPos := func(sec int) *flows.Cursor {
		c := flows.NewCursor()
		c.Advance(&flows.Event{Node: "node-9", Time: time.Date(2026, 12, 1, 0, 0, sec, 0, time.UTC), ID: uint64(sec)})
		return c
	}

	// Replica 2 serves v1, then v2: more flows, read further.
	v1, v2 := clusterSnapshot(t, 10, 2), clusterSnapshot(t, 20, 2)
	var served atomic.Pointer[aggregate.Snapshot]
	var servedPos atomic.Pointer[flows.Cursor]
	served.Store(v1)
	servedPos.Store(newPos(5))
	two, err := replicas.New(replicas.Config{Self: 2, URLs: urls}, replicas.Local{Snapshot: func() *aggregate.Snapshot { return served.Load() },
		Positions: func() (*flows.Cursor, error) { return servedPos.Load().Clone(), nil }}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sws[2].serve(two.Handler())

	stores := []*aggregate.Store{openKeptStore(t), openKeptStore(t)}
	sets := make([]*replicas.Set, 2)
	for i := range sets {
		if sets[i], err = replicas.New(replicas.Config{Self: i, URLs: urls, Wait: time.Millisecond}, replicas.Local{Snapshot: empty,
			Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil }, Kept: stores[i]}, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
		sws[i].serve(sets[i].Handler())
	}

	if got := sets[0].Snapshot(t.Context()); got.Flows != v1.Flows {
		t.Fatalf("replica 0 merged %d flows, want replica 2's v1 %d", got.Flows, v1.Flows)
	}
	served.Store(v2)
	servedPos.Store(newPos(9))
	if got := sets[1].Snapshot(t.Context()); got.Flows != v2.Flows {
		t.Fatalf("replica 1 merged %d flows, want replica 2's v2 %d", got.Flows, v2.Flows)
	}
	// Replica 2 goes away; replica 1 notices first and lists its copy (v2).
	sws[2].serve(http.NotFoundHandler())
	if got := sets[1].Snapshot(t.Context()); got.Flows != v2.Flows {
		t.Fatalf("replica 1 merged %d flows with replica 2 gone, want its copy's %d", got.Flows, v2.Flows)
	}
	got := sets[0].Snapshot(t.Context())
	if got.Flows != v2.Flows || got.EdgeCount() != v2.EdgeCount() {
		t.Fatalf("replica 0 merged %d flows, %d edges with replica 2 gone; want replica 1's newer copy's %d, %d",
			got.Flows, got.EdgeCount(), v2.Flows, v2.EdgeCount())
	}
	if at, ok := sets[0].Start("node-9").Position("node-9"); !ok || at.Second() != 9 {
		t.Errorf("replica 0 starts node-9 at %v (%t), want the newer copy's position (second 9)", at, ok)
	}
	// Replica 0's copy is now as new as replica 1's: replica 1 keeps its own.
	if got := sets[1].Snapshot(t.Context()); got.Flows != v2.Flows {
		t.Errorf("replica 1 merged %d flows, want %d", got.Flows, v2.Flows)
	}
	if n := sws[0].copies.Load(); n != 0 {
		t.Errorf("replica 1 asked replica 0 for %d copies, want none: replica 0's never reached further", n)
	}
	if n := sws[1].copies.Load(); n != 1 {
		t.Errorf("replica 0 asked replica 1 for %d copies, want 1", n)
	}
	// The copy taken is kept: replica 0 restarted with both others down stands it in.
	sws[1].srv.Close()
	again, err := replicas.New(replicas.Config{Self: 0, URLs: urls, Wait: time.Millisecond}, replicas.Local{Snapshot: empty,
		Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil }, Kept: stores[0]}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := again.Snapshot(t.Context()); got.Flows != v2.Flows {
		// Replica 1's own summary (empty) is kept too, and adds no flow.
		t.Errorf("replica 0 restarted merges %d flows, want the kept copy's %d", got.Flows, v2.Flows)
	}
}

// Ensure replicas of a set that shrank converge on the newest copy of the departed replica
// (an index outside the set) that each loaded from its store, and that a copy that would
// expire whole by the retention is not fetched at all.
func TestStandInsConvergeDeparted(t *testing.T) {
	v1, v2 := clusterSnapshot(t, 10, 2), clusterSnapshot(t, 20, 2)
	stores := []*aggregate.Store{openKeptStore(t), openKeptStore(t)}
	// While the set had three replicas, replica 0 kept replica 2 at v1, replica 1 at v2.
	for i, v := range []*aggregate.Snapshot{v1, v2} {
		two, err := replicas.New(replicas.Config{Self: 2, URLs: []string{"http://127.0.0.1:1", "http://127.0.0.1:1", "http://127.0.0.1:1"}},
			replicas.Local{Snapshot: func() *aggregate.Snapshot { return v }, Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil }}, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(two.Handler())
		urls := []string{"http://127.0.0.1:1", "http://127.0.0.1:1", srv.URL}
		puller, err := replicas.New(replicas.Config{Self: i, URLs: urls, Wait: time.Millisecond}, replicas.Local{
			Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{} }, Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil },
			Kept: stores[i]}, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		puller.Snapshot(t.Context())
		srv.Close()
	}

	for _, c := range []struct {
		name      string
		retention time.Duration
		to        time.Time // replica 0's newest flow
		wantFlows uint64
		copies    int32
	}{
		{"newest copy taken", 0, time.Time{}, v2.Flows, 1},
		// A day past v2's last flow with a retention of an hour: replica 0's own v1 expires
		// whole, and v2 would too.
		{"expired copy not fetched", time.Hour, v2.To.Add(24 * time.Hour), 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			sws := []*switchable{newSwitchable(t), newSwitchable(t)}
			urls := []string{sws[0].srv.URL, sws[1].srv.URL}
			sets := make([]*replicas.Set, 2)
			for i := range sets {
				to := time.Time{}
				if i == 0 {
					to = c.to
				}
				var err error
				if sets[i], err = replicas.New(replicas.Config{Self: i, URLs: urls, Wait: time.Millisecond, Retention: c.retention}, replicas.Local{
					Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{To: to} }, Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil },
					Kept: stores[i]}, nil, nil, nil); err != nil {
					t.Fatal(err)
				}
				sws[i].serve(sets[i].Handler())
			}
			sets[0].Snapshot(t.Context()) // the first sync sets the retention cutoff
			got := sets[0].Snapshot(t.Context())
			if got.Flows != c.wantFlows {
				t.Errorf("replica 0 merged %d flows, want %d", got.Flows, c.wantFlows)
			}
			if n := sws[1].copies.Load(); n != c.copies {
				t.Errorf("replica 0 asked for %d copies, want %d", n, c.copies)
			}
		})
	}
}

// Ensure that when another replica's store is replaced (a lost volume: it serves another
// store's summary), what it held before stands in beside what it serves now, across a
// restart of this replica too; and that the same store serving fewer flows (a crash lost its
// last batch) replaces the summary as usual.
func TestReplacedStoreStandsIn(t *testing.T) {
	big, small := clusterSnapshot(t, 20, 2), clusterSnapshot(t, 10, 3)
	type serving struct {
		snap  *aggregate.Snapshot
		store string
	}
	var now atomic.Pointer[serving]
	sw := newSwitchable(t)
	urls := []string{"http://127.0.0.1:1", sw.srv.URL}
	// One serving Set per store: Local.Store is fixed when the Set is made.
	servers := map[string]http.Handler{}
	for _, id := range []string{"store-a", "store-b"} {
		one, err := replicas.New(replicas.Config{Self: 1, URLs: urls}, replicas.Local{Snapshot: func() *aggregate.Snapshot { return now.Load().snap },
			Positions: func() (*flows.Cursor, error) { return flows.NewCursor(), nil }, Store: id}, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		servers[id] = one.Handler()
	}
	serve := func(snap *aggregate.Snapshot, store string) {
		now.Store(&serving{snap, store})
		sw.serve(servers[store])
	}

	for _, c := range []struct {
		name      string
		store     string
		wantFlows uint64
		standIns  int
	}{
		{"a crash lost the last batch", "store-a", small.Flows, 0},
		{"the volume was lost", "store-b", big.Flows + small.Flows, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			store := openKeptStore(t)
			// Every pull kept: the restart below stands in the last one.
			s, reg := keptPuller(t, sw.srv.URL, store, replicas.Config{KeepEvery: time.Nanosecond}, time.Time{})
			serve(big, "store-a")
			s.Snapshot(t.Context())
			serve(small, c.store)
			if got := s.Snapshot(t.Context()); got.Flows != c.wantFlows {
				t.Errorf("merged %d flows, want %d", got.Flows, c.wantFlows)
			}
			if n := s.StandIns(); n != c.standIns {
				t.Errorf("%d stand-ins, want %d", n, c.standIns)
			}
			if n := counterValue(t, reg, "recommender_replica_store_replacements_total", ""); n != float64(c.standIns) {
				t.Errorf("%.0f store replacements counted, want %d", n, c.standIns)
			}
			// This replica restarts while replica 1 is down: both stand in from the store.
			sw.serve(http.NotFoundHandler())
			again, _ := keptPuller(t, sw.srv.URL, store, replicas.Config{}, time.Time{})
			if got := again.Snapshot(t.Context()); got.Flows != c.wantFlows {
				t.Errorf("after a restart: merged %d flows, want %d", got.Flows, c.wantFlows)
			}
			// Read offline (recommend --db, status): the same summaries, retired last.
			kept, err := replicas.ReadKept(store, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, k := range kept {
				got = append(got, fmt.Sprintf("%d retired=%t flows=%d", k.Replica, k.Retired, k.Snapshot.Flows))
			}
			want := []string{fmt.Sprintf("1 retired=false flows=%d", small.Flows)}
			if c.standIns > 0 {
				want = append(want, fmt.Sprintf("1 retired=true flows=%d", big.Flows))
			}
			if !slices.Equal(got, want) {
				t.Errorf("ReadKept = %q, want %q", got, want)
			}
			if merged, _ := replicas.MergeKept(&aggregate.Snapshot{}, "", kept, nil); merged.Flows != c.wantFlows {
				t.Errorf("MergeKept merged %d flows, want %d", merged.Flows, c.wantFlows)
			}
			// Read on the replaced store's own volume, its retired summary is its own edges.
			if merged, used := replicas.MergeKept(&aggregate.Snapshot{}, "store-a", kept, nil); c.standIns > 0 && (merged.Flows != small.Flows || len(used) != 1) {
				t.Errorf("MergeKept on store-a merged %d flows from %d summaries, want %d from the new store's alone", merged.Flows, len(used), small.Flows)
			}
		})
	}
}
