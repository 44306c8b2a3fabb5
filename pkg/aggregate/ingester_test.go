package aggregate

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/google/go-cmp/cmp"

	"github.com/recommender/recommender/pkg/flows"
)

func newIngester(t testing.TB, s *Store, cfg IngesterConfig) *Ingester {
	t.Helper()
	in, err := NewIngester(s, newAgg(t, Config{}), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// Ensure that Run commits in batches of at least the configured size (more when a batch grew
// while the previous commit was written) plus a final one, stores the cursor, and that a
// second run over the same input adds nothing.
func TestIngesterRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s := openStore(t, path, Options{})
	evs := mixedEvents()
	var commits []uint64
	in := newIngester(t, s, IngesterConfig{BatchSize: 4, BatchInterval: time.Hour,
		Hooks: IngestHooks{AfterCommit: func(c CommitInfo) { commits = append(commits, c.Events) }}})
	if err := in.Run(t.Context(), &sliceSource{evs: evs}); err != nil {
		t.Fatal(err)
	}
	if len(commits) < 2 || commits[0] != 4 || commits[len(commits)-1] != uint64(len(evs)) {
		t.Errorf("commits after events %v, want the first after 4, the last after %d", commits, len(evs))
	}
	for i := 1; i < len(commits)-1; i++ {
		if d := commits[i] - commits[i-1]; d < 4 || d > maxPending*4 {
			t.Errorf("commits after events %v: batch %d holds %d events, want 4 to %d", commits, i, d, maxPending*4)
		}
	}
	ref := newAgg(t, Config{})
	for _, ev := range evs {
		ref.Add(ev)
	}
	got, _ := s.Snapshot()
	if d := cmp.Diff(ref.Snapshot(), got, snapshotOpts); d != "" {
		t.Errorf("store after Run (-want +got):\n%s", d)
	}
	if st := in.Stats(); st.Events != uint64(len(evs)) || st.Commits != uint64(len(commits)) || st.Rate() <= 0 {
		t.Errorf("Stats() = %+v", st)
	}

	again := newIngester(t, s, IngesterConfig{})
	if err := again.Run(t.Context(), &sliceSource{evs: evs}); err != nil {
		t.Fatal(err)
	}
	if st := again.Stats(); st.Events != 0 || st.Skipped != uint64(len(evs)) {
		t.Errorf("second run Stats() = %+v, want every event skipped", st)
	}
	got2, _ := s.Snapshot()
	if d := cmp.Diff(got, got2, snapshotOpts); d != "" {
		t.Errorf("second run changed the store:\n%s", d)
	}
}

// Ensure that the loop goes on aggregating while a commit is written (issue 19.2): the events
// that arrive meanwhile go out together in the next commit, instead of the loop waiting for
// the commit at each BatchSize.
func TestIngesterGrowsBatchWhileCommitting(t *testing.T) {
	s := openStore(t, "", Options{})
	evs := mixedEvents()
	applied, all := 0, make(chan struct{})
	first := true
	var commits []uint64
	in := newIngester(t, s, IngesterConfig{BatchSize: 4, BatchInterval: time.Hour, Hooks: IngestHooks{
		Observe: func(*flows.Event) {
			if applied++; applied == len(evs) {
				close(all)
			}
		},
		BeforeCommit: func(*Lifecycle) error {
			if first { // hold the first commit until every event was applied
				first = false
				<-all
			}
			return nil
		},
		AfterCommit: func(c CommitInfo) { commits = append(commits, c.Events) },
	}})
	if err := in.Run(t.Context(), &sliceSource{evs: evs}); err != nil {
		t.Fatal(err)
	}
	// The final commit may follow with nothing new.
	if len(commits) < 2 || commits[0] != 4 || commits[1] != uint64(len(evs)) {
		t.Errorf("commits after events %v, want [4 %d] (and possibly a final empty one)", commits, len(evs))
	}
	if got, _ := s.Snapshot(); got.Flows != uint64(len(evs)-1) { // one lost notice
		t.Errorf("flows committed = %d, want %d", got.Flows, len(evs)-1)
	}
}

// cancelSource delivers its events, then cancels the run's context and blocks like a live
// stream until the cancellation arrives.
type cancelSource struct {
	evs    []*flows.Event
	cancel context.CancelFunc
}

func (s *cancelSource) Recv(ctx context.Context) (*flows.Event, error) {
	if len(s.evs) > 0 {
		ev := s.evs[0]
		s.evs = s.evs[1:]
		return ev, nil
	}
	s.cancel()
	<-ctx.Done()
	return nil, ctx.Err()
}

// Ensure that cancelling Run is a clean stop that commits everything received.
func TestIngesterCancelFlushes(t *testing.T) {
	s := openStore(t, "", Options{})
	in := newIngester(t, s, IngesterConfig{BatchSize: 1000, BatchInterval: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	evs := mixedEvents()
	if err := in.Run(ctx, &cancelSource{evs: evs, cancel: cancel}); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	got, _ := s.Snapshot()
	if got.Flows != uint64(len(evs)-1) { // one lost notice
		t.Errorf("flows committed = %d, want %d", got.Flows, len(evs)-1)
	}
	cur, _ := s.Cursor()
	if cur.Len() != 1 {
		t.Errorf("cursor nodes = %d, want 1", cur.Len())
	}
}

// errSource fails after its events.
type errSource struct{ sliceSource }

func (s *errSource) Recv(ctx context.Context) (*flows.Event, error) {
	ev, err := s.sliceSource.Recv(ctx)
	if err == io.EOF {
		return nil, errors.New("stream reset")
	}
	return ev, err
}

// Ensure that a source error is returned after what was received is committed.
func TestIngesterSourceError(t *testing.T) {
	s := openStore(t, "", Options{})
	in := newIngester(t, s, IngesterConfig{})
	err := in.Run(t.Context(), &errSource{sliceSource{evs: mixedEvents()[:3]}})
	if err == nil || !strings.Contains(err.Error(), "stream reset") {
		t.Errorf("Run = %v, want the source error", err)
	}
	if got, _ := s.Snapshot(); got.Flows != 3 {
		t.Errorf("flows committed = %d, want 3", got.Flows)
	}
}

// Ensure that retention expires edges older than the window at the start of Run, measured
// against the injected clock, and commits the removal.
func TestIngesterRetention(t *testing.T) {
	s := openStore(t, "", Options{})
	first := newIngester(t, s, IngesterConfig{})
	if err := first.Run(t.Context(), &sliceSource{evs: []*flows.Event{
		flow(0, web, api, flows.ProtoTCP, 80), flow(3600, web, api, flows.ProtoTCP, 81),
	}}); err != nil {
		t.Fatal(err)
	}
	in := newIngester(t, s, IngesterConfig{Retention: time.Hour,
		Hooks: IngestHooks{Clock: func() time.Time { return at(3600 + 1800) }}})
	if err := in.Run(t.Context(), &sliceSource{}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Snapshot()
	want := []string{
		"workloads=2 flows=2 overflow=0",
		"shop/k8s:app=api ingress workload:shop/k8s:app=web 81/TCP fwd=1",
		"shop/k8s:app=web egress workload:shop/k8s:app=api 81/TCP fwd=1",
	}
	if g := render(got); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("after retention:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(want, "\n"))
	}
}

// durabilityInput generates a recording of n distinct connections over a few nodes, with
// one client scanning enough ports to collapse, as `hubble observe -o jsonpb` writes it.
func durabilityInput(t testing.TB, dir string, n int) string {
	rng := rand.New(rand.NewPCG(1, 2))
	var recs []*observerpb.GetFlowsResponse
	for i := range n {
		src, dst := rng.IntN(12), rng.IntN(12)
		p := pbFlow{
			sec: i / 10, nanos: i % 10 * 1000, node: fmt.Sprintf("node-%d", i%3), uuid: fmt.Sprintf("flow-%d", i),
			srcNS: "ns", dstNS: "ns",
			srcLabels: []string{fmt.Sprintf("k8s:app=a%d", src)}, dstLabels: []string{fmt.Sprintf("k8s:app=a%d", dst)},
			srcIP: fmt.Sprintf("10.0.%d.%d", src, i%200+1), dstIP: fmt.Sprintf("10.1.%d.1", dst),
			sport: uint32(33000 + i%20000), dport: uint32(80 + rng.IntN(4)),
		}
		switch {
		case i%7 == 0:
			p.dport = uint32(1000 + i%50) // a scanner: collapses
			p.srcLabels = []string{"k8s:app=scanner"}
		case i%11 == 0:
			p.dstWorld, p.dstIP, p.dport = true, fmt.Sprintf("203.0.113.%d", rng.IntN(5)), 443
		case i%13 == 0:
			p.verdict, p.point = flowpb.Verdict_DROPPED, flowpb.TraceObservationPoint_TO_ENDPOINT
		}
		recs = append(recs, response(p.build()))
	}
	return writeJSONPB(t, dir, recs)
}

// TestDurabilityChild is the child process of TestDurabilityKill: it ingests a recording into a
// store and reports each commit on stdout. It does nothing in a normal test run.
func TestDurabilityChild(t *testing.T) {
	db, input := os.Getenv("AGGREGATE_CHILD_DB"), os.Getenv("AGGREGATE_CHILD_INPUT")
	if db == "" {
		t.Skip("child process of TestDurabilityKill")
	}
	s, err := Open(db, Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := newIngester(t, s, IngesterConfig{BatchSize: 40, BatchInterval: time.Hour,
		Hooks: IngestHooks{AfterCommit: func(c CommitInfo) { fmt.Printf("committed %d\n", c.Events) }}})
	if err := in.Run(t.Context(), fileSource(t, input)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Println("done")
}

// Ensure that SIGKILL at random points never corrupts the store, that the store always holds
// exactly a prefix of the input no shorter than the last reported commit, and that resuming
// from the stored cursor ends with exactly the totals of an uninterrupted run.
func TestDurabilityKill(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	const n = 3000
	input := durabilityInput(t, dir, n)

	// The input as the store sees it, for prefix comparisons.
	var events []*flows.Event
	src := fileSource(t, input)
	for {
		ev, err := src.Recv(t.Context())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, ev)
	}
	prefix := func(k int) (*Snapshot, *flows.Cursor) {
		a := newAgg(t, Config{})
		c := flows.NewCursor()
		for _, ev := range events[:k] {
			a.Add(ev)
			c.Advance(ev)
		}
		return a.Snapshot(), c
	}

	db := filepath.Join(dir, "store.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	var stored uint64
	for round := 0; ; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestDurabilityChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "AGGREGATE_CHILD_DB="+db, "AGGREGATE_CHILD_INPUT="+input)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill after a random number of commits in the first rounds; let the last one finish.
		killAfter := -1
		if round < 4 {
			killAfter = 1 + rng.IntN(10)
		}
		var reported uint64
		done, killed := false, false
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "committed "); ok {
				reported, _ = strconv.ParseUint(v, 10, 64)
				if killAfter--; killAfter == 0 {
					cmd.Process.Signal(syscall.SIGKILL)
					killed = true
					break
				}
			}
			done = done || line == "done"
		}
		io.Copy(io.Discard, out)
		werr := cmd.Wait()
		if !killed && (werr != nil || !done) {
			t.Fatalf("round %d: child failed: %v", round, werr)
		}

		s, err := Open(db, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("round %d: check: %v", round, err)
		}
		got, err := s.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		cur, err := s.Cursor()
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if got.Flows < stored+reported || got.Flows > n {
			t.Fatalf("round %d: store holds %d flows; want between %d (committed) and %d", round, got.Flows, stored+reported, n)
		}
		want, wantCur := prefix(int(got.Flows))
		if d := cmp.Diff(want, got, snapshotOpts); d != "" {
			t.Fatalf("round %d: store is not the first %d flows of the input:\n%s", round, got.Flows, d)
		}
		if !cur.Equal(wantCur) {
			t.Fatalf("round %d: cursor does not match the first %d flows", round, got.Flows)
		}
		t.Logf("round %d: killed=%v, store holds %d of %d flows", round, killed, got.Flows, n)
		stored = got.Flows
		if !killed {
			if got.Flows != n {
				t.Fatalf("uninterrupted end: %d flows, want %d", got.Flows, n)
			}
			return
		}
	}
}

// Ensure that events out of time order within one run (recordings given newest first, or
// Hubble's loose per-node order) are all applied, and all skipped by the next run.
func TestIngesterOutOfOrder(t *testing.T) {
	s := openStore(t, "", Options{})
	evs := []*flows.Event{flow(50, web, api, flows.ProtoTCP, 80), flow(10, web, api, flows.ProtoTCP, 80), flow(30, web, api, flows.ProtoTCP, 81)}
	in := newIngester(t, s, IngesterConfig{})
	if err := in.Run(t.Context(), &sliceSource{evs: evs}); err != nil {
		t.Fatal(err)
	}
	if st := in.Stats(); st.Events != 3 || st.Skipped != 0 {
		t.Errorf("Stats() = %+v, want 3 applied", st)
	}
	again := newIngester(t, s, IngesterConfig{})
	if err := again.Run(t.Context(), &sliceSource{evs: evs}); err != nil {
		t.Fatal(err)
	}
	if st := again.Stats(); st.Events != 0 || st.Skipped != 3 {
		t.Errorf("second run Stats() = %+v, want 3 skipped", st)
	}
}

// connRecords are n connections, each observed at both ends (client node egress, server node
// ingress), ten per second of flow time.
func connRecords(from, n int) []*observerpb.GetFlowsResponse {
	var recs []*observerpb.GetFlowsResponse
	for i := from; i < from+n; i++ {
		base := pbFlow{sec: i / 10, nanos: i % 10 * 1e8, uuid: fmt.Sprintf("c%d", i), srcNS: "shop", dstNS: "shop",
			srcLabels: []string{"k8s:app=web"}, dstLabels: []string{"k8s:app=api"}, srcIP: "10.0.0.1", dstIP: "10.0.0.2",
			sport: 30000 + uint32(i%30000), dport: 8000 + uint32(i%7)}
		egress, ingress := base, base
		egress.node, egress.point = "n1", flowpb.TraceObservationPoint_TO_STACK
		ingress.node, ingress.point, ingress.uuid, ingress.nanos = "n2", flowpb.TraceObservationPoint_TO_ENDPOINT, base.uuid+"i", base.nanos+1000
		recs = append(recs, response(egress.build()), response(ingress.build()))
	}
	return recs
}

// countingSource counts the events its source delivers.
type countingSource struct {
	flows.Source
	n int
}

func (c *countingSource) Recv(ctx context.Context) (*flows.Event, error) {
	ev, err := c.Source.Recv(ctx)
	if err == nil {
		c.n++
	}
	return ev, err
}

func (c *countingSource) Position() (flows.FilePos, bool) {
	return c.Source.(flows.Positioner).Position()
}

// Ensure that an ingest resumed at the store's file mark reads only the tail of a grown file,
// and ends with exactly the counts of one ingest of the whole file: nothing lost at the mark,
// no connection counted twice although its two observations straddle the mark (issue 15.7).
// A file rewritten under the same name is read from its start.
func TestIngesterResumeFromFileMark(t *testing.T) {
	dir := t.TempDir()
	first, second := connRecords(0, 3000), connRecords(3000, 3000)
	ingest := func(t *testing.T, s *Store, path string) int {
		t.Helper()
		in := newIngester(t, s, IngesterConfig{BatchSize: 500})
		src := fileSource(t, path)
		src.(interface{ ResumeFrom([]flows.FileMark) }).ResumeFrom(in.FileMarks())
		cs := &countingSource{Source: src}
		if err := in.Run(t.Context(), cs); err != nil {
			t.Fatal(err)
		}
		return cs.n
	}

	refDir := filepath.Join(dir, "ref")
	os.Mkdir(refDir, 0o700)
	ref := openStore(t, filepath.Join(dir, "ref.db"), Options{})
	ingest(t, ref, writeJSONPB(t, refDir, append(slices.Clone(first), second...)))
	want, err := ref.Snapshot()
	if err != nil {
		t.Fatal(err)
	}

	s := openStore(t, filepath.Join(dir, "store.db"), Options{})
	path := writeJSONPB(t, dir, first)
	if n := ingest(t, s, path); n != 3000 {
		t.Fatalf("first ingest read %d events, want 3000", n)
	}
	marks, err := s.FileMarks()
	if err != nil || len(marks) != 1 || marks[0].Offset == 0 {
		t.Fatalf("FileMarks = %v, %v; want one mark inside the file", marks, err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	grown := writeJSONPB(t, t.TempDir(), second)
	tail, _ := os.ReadFile(grown)
	f.Write(tail)
	f.Close()

	// One minute of flow time (600 connections) before the mark is read again, not 3000.
	if n := ingest(t, s, path); n >= 3000+1000 || n < 3000 {
		t.Errorf("resumed ingest read %d events, want the 3000 new ones plus at most a minute before the mark", n)
	}
	got, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got, snapshotOpts); d != "" {
		t.Errorf("resumed store differs from one ingest of the whole file (-want +got):\n%s", d)
	}

	// The same name, other content: the mark does not match and the file is read whole.
	other := connRecords(100_000, 3000)
	writeJSONPB(t, dir, other)
	if n := ingest(t, s, path); n != 3000 {
		t.Errorf("ingest of a rewritten file read %d events, want all 3000", n)
	}
}

// quietSource hands out its events, then blocks as a live stream with no traffic does.
type quietSource struct{ evs []*flows.Event }

func (s *quietSource) Recv(ctx context.Context) (*flows.Event, error) {
	if len(s.evs) == 0 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	ev := s.evs[0]
	s.evs = s.evs[1:]
	return ev, nil
}

// Ensure that Commit persists what a quiet stream applied without waiting for a batch, with
// the before-commit hook's writes in the same transaction, and that the hook is never run by
// two commits at once: while Run runs, Run's committer serves Commit; before and after, Commit
// commits itself.
func TestIngesterCommit(t *testing.T) {
	s := openStore(t, "", Options{})
	evs := mixedEvents()
	var inHook, overlaps, hookRuns atomic.Int64
	applied := make(chan struct{})
	var seen int
	hooks := IngestHooks{
		Observe: func(*flows.Event) {
			if seen++; seen == len(evs) {
				close(applied)
			}
		},
		BeforeCommit: func(l *Lifecycle) error {
			if inHook.Add(1) > 1 {
				overlaps.Add(1)
			}
			defer inHook.Add(-1)
			return l.Put("runs", []byte(fmt.Sprint(hookRuns.Add(1))))
		},
	}
	in := newIngester(t, s, IngesterConfig{BatchSize: 1 << 20, BatchInterval: time.Hour, Hooks: hooks})
	if err := in.Commit(t.Context()); err != nil {
		t.Fatalf("Commit before Run: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx, &quietSource{evs: evs}) }()
	<-applied
	// Commits from several goroutines at once, as a sync loop and a new leader's sync may.
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- in.Commit(t.Context()) }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("Commit while running: %v", err)
		}
	}
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Workloads) == 0 {
		t.Fatal("Commit returned before the applied events were on disk")
	}
	if v, err := s.Lifecycle("runs"); err != nil || string(v) != fmt.Sprint(hookRuns.Load()) {
		t.Errorf("hook state on disk = %q (%v), want the last run %d", v, err, hookRuns.Load())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	before := hookRuns.Load()
	if err := in.Commit(t.Context()); err != nil {
		t.Fatalf("Commit after Run: %v", err)
	}
	if hookRuns.Load() != before+1 {
		t.Errorf("Commit after Run ran the hook %d times, want once", hookRuns.Load()-before)
	}
	if n := overlaps.Load(); n > 0 {
		t.Errorf("before-commit hook ran concurrently %d times", n)
	}
}

// Ensure a failed commit stops all later ones, Commit after Run included: the failed batch is
// gone from memory, so committing on would store a cursor past events the store never got. A
// new Ingester over the store then applies every event after the last good commit again.
func TestIngesterCommitFailureIsFinal(t *testing.T) {
	s := openStore(t, "", Options{})
	events := func() []*flows.Event {
		var evs []*flows.Event
		for i := range 13 {
			evs = append(evs, with(flow(i, web, api, flows.ProtoTCP, uint16(8000+i%7)), func(e *flows.Event) { e.ID = uint64(i + 1) }))
		}
		return evs
	}
	evs := events()
	failed := errors.New("disk full")
	var calls atomic.Int64
	in := newIngester(t, s, IngesterConfig{BatchSize: 4, BatchInterval: time.Hour, Hooks: IngestHooks{
		BeforeCommit: func(*Lifecycle) error {
			if calls.Add(1) == 2 {
				return failed
			}
			return nil
		},
	}})
	if err := in.Run(t.Context(), &sliceSource{evs: evs}); !errors.Is(err, failed) {
		t.Fatalf("Run = %v, want the failed commit", err)
	}
	if err := in.Commit(t.Context()); !errors.Is(err, failed) {
		t.Fatalf("Commit after a failed commit = %v, want that failure", err)
	}
	again := newIngester(t, s, IngesterConfig{})
	if err := again.Run(t.Context(), &sliceSource{evs: events()}); err != nil {
		t.Fatal(err)
	}
	ref := openStore(t, "", Options{})
	if err := newIngester(t, ref, IngesterConfig{}).Run(t.Context(), &sliceSource{evs: events()}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Snapshot()
	want, _ := ref.Snapshot()
	if g, w := render(got), render(want); fmt.Sprint(g) != fmt.Sprint(w) {
		t.Errorf("after a failed commit and a restart:\n%s\nwant what one clean run stores:\n%s", strings.Join(g, "\n"), strings.Join(w, "\n"))
	}
}

// Ensure that the records a store restores do not count as changed for the next commit's
// bounds, and that changed ones do until the batch is taken.
func TestPendingRecords(t *testing.T) {
	s := openStore(t, "", Options{})
	a := newAgg(t, Config{})
	for _, ev := range mixedEvents() {
		a.Add(ev)
	}
	if ch := a.pending(); ch == 0 {
		t.Fatal("pending() counts no changed records after adding flows")
	}
	if err := s.Commit(a.TakeBatch(), nil); err != nil {
		t.Fatal(err)
	}
	if ch := a.pending(); ch != 0 {
		t.Errorf("pending() after TakeBatch = %d changed; want 0", ch)
	}
	b := newAgg(t, Config{})
	if _, err := s.Load(b); err != nil {
		t.Fatal(err)
	}
	if ch := b.pending(); ch != 0 {
		t.Errorf("pending() after Load = %d changed; want 0", ch)
	}
}

// Ensure that events another store holds already (ReadElsewhere: a node read by a replica
// that left the set) are dropped as the store's own are, on their node only, and that the
// committed cursor stays the store's own.
func TestIngesterReadElsewhere(t *testing.T) {
	s := openStore(t, "", Options{})
	var evs []*flows.Event
	for i := range 10 {
		ev := flow(i, web, api, flows.ProtoTCP, uint16(8000+i))
		if i%2 == 1 {
			ev.Node = "node-2"
		}
		evs = append(evs, ev)
	}
	elsewhere := flows.NewCursor()
	for _, ev := range evs[:6] {
		if ev.Node == "node-2" {
			elsewhere.Advance(ev) // node-2 read up to its third event elsewhere
		}
	}
	in := newIngester(t, s, IngesterConfig{ReadElsewhere: elsewhere})
	if err := in.Run(t.Context(), &sliceSource{evs: evs}); err != nil {
		t.Fatal(err)
	}
	if st := in.Stats(); st.Events != 7 || st.Skipped != 3 {
		t.Errorf("Stats() = %d events, %d skipped; want 7 and node-2's first 3 skipped", st.Events, st.Skipped)
	}
	cur, err := s.Cursor()
	if err != nil {
		t.Fatal(err)
	}
	if at, ok := cur.Position("node-2"); !ok || !at.Equal(evs[9].Time) {
		t.Errorf("stored cursor of node-2 at %v (%t), want its last event's %v", at, ok, evs[9].Time)
	}
}
