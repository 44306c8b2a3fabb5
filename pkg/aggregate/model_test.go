package aggregate

import (
	"bytes"
	"cmp"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// The tests of this file drive an Aggregator with random flows from small pools, so that
// groups collapse, CIDR peers overflow to entity:world, edges expire and their slots are
// reused, and DNS and HTTP extras ride along, and then check that what reached the store
// (or a model of it) is exactly what the Aggregator holds. They guard the batch machinery of
// issue 19.2 (copied records, handed-on buffers, per-batch ranks), whose mistakes would show
// as a stored edge that is stale, missing or in the wrong place, not as an error.

// randomFlow is a flow between a dozen workloads in three namespaces, CIDRs and entities.
func randomFlow(r *rand.Rand, sec int) *flows.Event {
	wl := func() flows.Peer {
		i := r.IntN(12)
		return workload(fmt.Sprintf("ns%d", i%3), fmt.Sprintf("k8s:app=a%c", 'a'+i))
	}
	src := wl()
	var dst flows.Peer
	switch r.IntN(5) {
	case 0:
		dst = world(fmt.Sprintf("203.0.113.%d", r.IntN(40)))
	case 1:
		dst = entity([]string{"host", "kube-apiserver"}[r.IntN(2)])
	default:
		dst = wl()
	}
	if r.IntN(6) == 0 {
		src, dst = world(fmt.Sprintf("198.51.100.%d", r.IntN(30))), wl()
	}
	ev := flow(sec, src, dst, []flows.Protocol{flows.ProtoTCP, flows.ProtoUDP}[r.IntN(2)], uint16(1+r.IntN(12)))
	switch r.IntN(20) {
	case 0:
		ev.Type, ev.L7 = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: "GET", Path: fmt.Sprintf("/v%d/x", r.IntN(4))}}
	case 1:
		ev.Proto, ev.Port = flows.ProtoUDP, 53
		ev.Type, ev.L7 = flows.EventL7, &flows.L7{DNS: &flows.DNS{Query: fmt.Sprintf("q%d.example.com", r.IntN(5))}}
	}
	return ev
}

// churnyFlow is mostly randomFlow, and now and then a flow of a workload whose pods carry a
// label with a value per pod, so that the label is found churning and its variants folded.
func churnyFlow(r *rand.Rand, sec int) *flows.Event {
	if r.IntN(8) != 0 {
		return randomFlow(r, sec)
	}
	web := workload("ns0", "k8s:app=web", fmt.Sprintf("k8s:pod=p%d", r.IntN(10)))
	web.Workload = "web"
	other := workload("ns1", "k8s:app=ab")
	if r.IntN(2) == 0 {
		return flow(sec, web, other, flows.ProtoTCP, uint16(1+r.IntN(6)))
	}
	return flow(sec, other, web, flows.ProtoTCP, uint16(1+r.IntN(6)))
}

// modelClock is far enough past every generated flow that none is refused as from the future.
func modelClock() time.Time { return t0.Add(100 * time.Hour) }

// compareEdges fails t when got and want (key -> value) differ, listing the first few keys.
func compareEdges(t *testing.T, seed uint64, got, want map[string][]byte) {
	t.Helper()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	bad := 0
	for _, k := range keys {
		if !bytes.Equal(got[k], want[k]) {
			if bad++; bad <= 5 {
				t.Errorf("seed %d: edge %q: stored %x, aggregator %x", seed, k, got[k], want[k])
			}
		}
	}
	if bad > 0 {
		t.Fatalf("seed %d: %d of %d edges differ", seed, bad, len(keys))
	}
}

// compareStore fails t unless s holds exactly a's edges.
func compareStore(t *testing.T, seed uint64, s *Store, a *Aggregator) {
	t.Helper()
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	compareEdges(t, seed, encodedEdgesOf(snap.Edges), encodedEdgesOf(a.Snapshot().Edges))
}

// checkEncoded fails t unless every entry of b decodes to an edge of its key, and an ordered
// batch's keys strictly rise.
func checkEncoded(t *testing.T, b *Batch) {
	t.Helper()
	x := &b.edges
	for i := range x.len() {
		e, err := decodeEdge(x.value(i))
		if err != nil {
			t.Fatalf("batch edge %d: %v", i, err)
		}
		if k := edgeKey(&e.EdgeKey); !bytes.Equal(k, x.key(i)) {
			t.Fatalf("batch edge %d: key %q holds the value of %q", i, x.key(i), k)
		}
		if x.ordered && i > 0 && bytes.Compare(x.key(i-1), x.key(i)) >= 0 {
			t.Fatalf("batch says it is ordered, but key %d %q is not below key %d %q", i-1, x.key(i-1), i, x.key(i))
		}
	}
}

// Ensure that batches, applied in turn to a map standing for the store, leave it holding
// exactly the Aggregator's edges: with a batch encoded only after later changes, a batch
// never recycled, and expiries in between.
func TestBatchesRebuildAggregator(t *testing.T) {
	for seed := range uint64(10) {
		r := rand.New(rand.NewPCG(seed, 7))
		a := newAgg(t, Config{MaxPorts: 4, MaxWorldPeers: 5})
		a.SetClock(modelClock)
		stored := map[string][]byte{}
		apply := func(b *Batch) {
			b.encode()
			checkEncoded(t, b)
			x := &b.edges
			written := map[string]bool{}
			for i := range x.len() {
				written[string(x.key(i))] = true
			}
			for i := range b.DeletedEdges {
				if k := string(edgeKey(&b.DeletedEdges[i])); !written[k] {
					delete(stored, k)
				}
			}
			for i := range x.len() {
				stored[string(x.key(i))] = bytes.Clone(x.value(i))
			}
		}
		sec := 0
		var held *Batch
		for range 200 {
			for range r.IntN(300) {
				sec++
				a.Add(randomFlow(r, sec))
			}
			if r.IntN(5) == 0 {
				a.Expire(at(sec - r.IntN(400)))
			}
			if held != nil {
				apply(held) // encoded after the changes made since it was taken
				a.recycle(held)
				held = nil
			}
			b := a.TakeBatch()
			if r.IntN(2) == 0 {
				held = b
				continue
			}
			apply(b)
			if r.IntN(4) != 0 {
				a.recycle(b)
			}
			checkTables(t, a)
		}
		if held != nil {
			apply(held)
			a.recycle(held)
		}
		apply(a.TakeBatch())
		compareEdges(t, seed, stored, encodedEdgesOf(a.Snapshot().Edges))
	}
}

// Ensure that a store committed on one goroutine while another adds and expires flows ends up
// holding exactly the Aggregator's edges (run with -race: the batch's buffers change hands
// between the two).
func TestStoreMatchesAggregatorWhileIngesting(t *testing.T) {
	for seed := range uint64(4) {
		s, err := Open(filepath.Join(t.TempDir(), "store.db"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		a := newAgg(t, Config{MaxPorts: 4, MaxWorldPeers: 5})
		a.SetClock(modelClock)
		done := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			defer close(done)
			r := rand.New(rand.NewPCG(seed, 9))
			for sec := 1; sec < 40000; sec++ {
				a.Add(randomFlow(r, sec))
				if sec%3000 == 0 {
					a.Expire(at(sec - 1500))
				}
			}
		})
		commit := func() {
			b := a.TakeBatch()
			if err := s.Commit(b, nil); err != nil {
				t.Fatal(err)
			}
			a.recycle(b)
		}
	loop:
		for {
			select {
			case <-done:
				break loop
			default:
				commit()
			}
		}
		wg.Wait()
		commit()
		compareStore(t, seed, s, a)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Ensure that a store reopened and loaded into a new Aggregator now and then, with churning
// labels folded along the way, keeps holding exactly the Aggregator's edges.
func TestStoreMatchesAggregatorAcrossReloads(t *testing.T) {
	cfg := Config{MaxPorts: 4, MaxWorldPeers: 5, MaxLabelValues: 3}
	for seed := range uint64(4) {
		path := filepath.Join(t.TempDir(), "store.db")
		s, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		a := newAgg(t, cfg)
		a.SetClock(modelClock)
		r := rand.New(rand.NewPCG(seed, 11))
		sec := 0
		for round := range 150 {
			for range r.IntN(400) {
				sec++
				a.Add(churnyFlow(r, sec))
			}
			if r.IntN(6) == 0 {
				a.Expire(at(sec - r.IntN(600)))
			}
			b := a.TakeBatch()
			if err := s.Commit(b, nil); err != nil {
				t.Fatal(err)
			}
			a.recycle(b)
			checkTables(t, a)
			if round%25 == 24 {
				compareStore(t, seed, s, a)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if s, err = Open(path, Options{}); err != nil {
					t.Fatal(err)
				}
				a = newAgg(t, cfg)
				a.SetClock(modelClock)
				if _, err := s.Load(a); err != nil {
					t.Fatal(err)
				}
				checkTables(t, a)
				compareStore(t, seed, s, a)
			}
		}
		if len(a.Snapshot().Churning) == 0 {
			t.Errorf("seed %d: no label was found churning; the test no longer folds variants", seed)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Ensure that radixSortKeyed sorts as a stable sort does, for every key width and for sizes
// around the point where it stops deferring to slices.SortFunc.
func TestRadixSortKeyed(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for width := 1; width <= 64; width++ {
		for _, n := range []int{0, 1, 2, 255, 256, 257, 1000, 5000} {
			ks := make([]keyedEdge, n)
			for i := range ks {
				k := r.Uint64()
				if width < 64 {
					k &= 1<<width - 1
				}
				if i > 0 && r.IntN(3) == 0 {
					k = ks[r.IntN(i)].key
				}
				ks[i] = keyedEdge{k, uint32(i)}
			}
			want := slices.Clone(ks)
			slices.SortStableFunc(want, func(x, y keyedEdge) int { return cmp.Compare(x.key, y.key) })
			radixSortKeyed(ks, width)
			for i := range ks {
				// Below 256 keys slices.SortFunc is not stable: only the keys must match.
				if ks[i].key != want[i].key || (n >= 256 && ks[i].i != want[i].i) {
					t.Fatalf("width %d, %d keys: at %d got %v, want %v", width, n, i, ks[i], want[i])
				}
			}
		}
	}
}
