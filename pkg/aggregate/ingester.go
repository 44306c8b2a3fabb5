package aggregate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// IngesterConfig configures an Ingester. Field names follow the flags of `ingest` and `run`.
type IngesterConfig struct {
	// BatchSize makes a batch due after this many events (--batch-size). Each commit fsyncs.
	// A batch is also due once it changed 100,000 records. A due batch is committed as soon
	// as the previous commit is done; until then it goes on growing, up to four times
	// BatchSize events or 250,000 changed records (Run).
	BatchSize int
	// BatchInterval commits pending changes at least this often (--batch-interval), so a quiet
	// stream is still persisted and a crash loses at most this much.
	BatchInterval time.Duration
	// Retention expires edges not seen for this long, measured against the clock (--retention).
	// Zero keeps everything.
	Retention time.Duration
	// SweepInterval is how often retention runs; zero means a tenth of Retention, at least a minute.
	SweepInterval time.Duration
	// ReadElsewhere is how far other stores hold each node's flows (the kept summaries of
	// replicas that read those nodes, package replicas): events at or before it are dropped
	// as those the store holds are, so a source that reads the nodes again from their oldest
	// flow (a relay, a recording) counts nothing twice. Nil drops only the store's own.
	ReadElsewhere *flows.Cursor
	// Hooks are the later stages' callbacks; each may be nil.
	Hooks IngestHooks
}

// IngestHooks let a later stage see what an Ingester applies and persist its own state in the
// Ingester's commits, so that state and the batch that produced it reach the disk together:
// after a crash, no event is both past the stored cursor and missing from the hook's state.
type IngestHooks struct {
	// Observe sees every event the Ingester applies, after the resume cursor dropped those the
	// store already holds, on Run's goroutine. The Ingester does not touch the event or its
	// label slices after the call, so Observe may hand it to another goroutine.
	Observe func(*flows.Event)
	// BeforeCommit runs inside each commit's transaction, on the one goroutine that commits:
	// what it writes commits with the batch, or not at all.
	BeforeCommit func(*Lifecycle) error
	// AfterCommit runs once a batch is on disk, on the same goroutine.
	AfterCommit func(CommitInfo)
	// Clock is retention's time base; nil is time.Now.
	Clock func() time.Time
}

// Defaults for IngesterConfig.
const (
	// DefaultBatchSize bounds the events a crash can lose (four times it while a slow commit
	// is written). A commit costs in proportion to the edges the batch touched, not to its
	// events, so bigger batches are cheaper per flow.
	DefaultBatchSize     = 50_000
	DefaultBatchInterval = 5 * time.Second
)

// Validate checks the configuration.
func (c *IngesterConfig) Validate() error {
	if c.BatchSize < 0 || c.BatchInterval < 0 || c.Retention < 0 || c.SweepInterval < 0 {
		return errors.New("batch size, batch interval, retention and sweep interval must not be negative")
	}
	return nil
}

// CommitInfo describes a committed batch.
type CommitInfo struct {
	Events   uint64 // events applied since the Ingester started, all now on disk
	Edges    int    // edges in the store
	Duration time.Duration
}

// IngestStats are an Ingester's counters.
type IngestStats struct {
	Events  uint64 // events applied
	Skipped uint64 // events dropped because the cursor showed them applied before
	Commits uint64
	Elapsed time.Duration // wall time of Run so far
}

// Rate is events applied per second of Run.
func (s IngestStats) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Events) / s.Elapsed.Seconds()
}

// Ingester feeds a Source into an Aggregator and commits it to a Store in batches, each batch
// with the cursor it covers. After a crash a new Ingester resumes from the stored cursor: it
// drops events the cursor has seen, so the store ends with exactly the counts of an
// uninterrupted run. The cursor is per node and by time: a recording older than what the
// store already holds for its nodes counts as seen, so unrelated recordings belong in
// separate stores, or in one ingest run (which applies them in any order). Wrap the source in flows.Folder before the Ingester, so the Folder also
// sees the first observation of a connection whose second one comes after the cursor.
//
// Run must not be called concurrently; Stats may be read at any time.
type Ingester struct {
	store *Store
	agg   *Aggregator
	cfg   IngesterConfig
	log   *slog.Logger
	now   func() time.Time
	hooks IngestHooks
	// resume is the stored cursor the Ingester started from: events it has seen are skipped.
	// cursor advances with every event applied and is committed with each batch. Checking
	// against the advancing cursor instead would drop events that arrive out of time order
	// (Hubble's per-node order is not strict; recordings may be given in any order).
	resume *flows.Cursor
	cursor *flows.Cursor
	// files tracks how far each plain input file was read (filemarks.go); Run's goroutine
	// writes it, the committer reads the marks handed over with each batch.
	files *fileTracker

	// mu makes a Commit outside Run exclusive with Run's commits. requests is non-nil while
	// Run runs: a Commit then asks Run's loop, and stopped closes once Run has committed its
	// last batch.
	mu       sync.Mutex
	requests chan chan error
	stopped  chan struct{}
	// failed holds the first failed commit's error: nothing is committed after it (fail).
	failed atomic.Pointer[error]

	events  atomic.Uint64
	skipped atomic.Uint64
	commits atomic.Uint64
	started atomic.Int64 // UnixNano when Run started
	ended   atomic.Int64 // UnixNano when Run returned
}

// NewIngester loads the store's state into agg (which must be empty) and returns an Ingester
// that continues it.
func NewIngester(store *Store, agg *Aggregator, cfg IngesterConfig, log *slog.Logger) (*Ingester, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.BatchInterval == 0 {
		cfg.BatchInterval = DefaultBatchInterval
	}
	if cfg.Retention > 0 && cfg.SweepInterval == 0 {
		cfg.SweepInterval = max(cfg.Retention/10, time.Minute)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cur, err := store.Load(agg)
	if err != nil {
		return nil, err
	}
	marks, err := store.FileMarks()
	if err != nil {
		return nil, err
	}
	now := cfg.Hooks.Clock
	if now == nil {
		now = time.Now
	}
	resume := cur.Clone()
	if cfg.ReadElsewhere != nil {
		resume.Merge(cfg.ReadElsewhere)
	}
	return &Ingester{store: store, agg: agg, cfg: cfg, log: log, now: now, hooks: cfg.Hooks, resume: resume, cursor: cur,
		files: newFileTracker(marks)}, nil
}

// Cursor returns the position the Ingester resumes from: the store's when the Ingester was
// made, merged with IngesterConfig.ReadElsewhere. Do not hand it to
// the relay source (flows.RelayConfig.Cursor) of a folded stream: the relay would drop the
// first observation of a connection before the Folder, which then lets the second through and
// it is counted again. Read from the start and let the Ingester skip, after the Folder.
func (in *Ingester) Cursor() *flows.Cursor { return in.resume.Clone() }

// Stats returns the counters.
func (in *Ingester) Stats() IngestStats {
	s := IngestStats{Events: in.events.Load(), Skipped: in.skipped.Load(), Commits: in.commits.Load()}
	if st := in.started.Load(); st != 0 {
		end := in.ended.Load()
		if end == 0 {
			end = time.Now().UnixNano()
		}
		s.Elapsed = time.Duration(end - st)
	}
	return s
}

// Run reads src until it ends (io.EOF) or ctx is done, and commits in batches. Either way it
// ends with a final commit of everything applied, cursor included, and returns nil. A source
// error (other than the end of the stream) or a failed commit is returned after the events
// applied so far were committed, if the store still takes commits.
//
// Commits run on their own goroutine, one at a time, while the next batch is aggregated: a
// crash loses at most the batch being committed and the one being built. The one being built
// is handed over when it is due and the committer is idle, so it may grow past BatchSize
// while a commit is written (IngesterConfig.BatchSize says how far). The commit hooks run on
// that goroutine, and Commit calls made while Run runs are served by it too.
func (in *Ingester) Run(ctx context.Context, src flows.Source) (err error) {
	in.started.Store(time.Now().UnixNano())
	in.ended.Store(0)
	defer func() { in.ended.Store(time.Now().UnixNano()) }()

	requests := make(chan chan error)
	in.mu.Lock()
	in.requests, in.stopped = requests, make(chan struct{})
	in.mu.Unlock()
	// Deferred first, so it runs last: after the committer finished, Commit commits directly.
	// The buffers commits reuse are let go: they are sized for the largest batch, which may
	// be several times BatchSize.
	defer func() {
		in.agg.recycle(nil)
		in.store.dropScratch()
		in.mu.Lock()
		close(in.stopped)
		in.requests, in.stopped = nil, nil
		in.mu.Unlock()
	}()

	// Recv blocks; a receiving goroutine lets the loop commit on the interval while the
	// stream is quiet. It ends when Recv fails, which it does once rctx is cancelled.
	rctx, cancel := context.WithCancel(ctx)
	events := newEventQueue(1024)
	var srcErr error
	var wg sync.WaitGroup
	pos, _ := src.(flows.Positioner)
	wg.Go(func() {
		defer events.close()
		for {
			ev, err := src.Recv(rctx)
			if err != nil {
				srcErr = err
				return
			}
			r := received{ev: ev}
			if pos != nil {
				r.pos, r.hasPos = pos.Position()
			}
			if err := events.put(rctx, r); err != nil {
				srcErr = err
				return
			}
		}
	})
	defer func() {
		cancel()
		wg.Wait()
	}()

	// The committer takes one batch at a time and reports each commit on done. A batch is due
	// once it holds BatchSize events or maxDirty changed records, on the interval, or after a
	// sweep; it is handed over as soon as it is due and the committer is idle. While a commit
	// is being written the loop goes on aggregating into the next batch, past its due size if
	// the commit takes long: over many edges (issue 19.2) a commit costs in proportion to the
	// edges it writes, and a batch that grew while waiting holds repeated edges once. Only at
	// maxPending times the due size does the loop wait for the commit.
	batches := make(chan pendingBatch)
	done := make(chan error, 1)
	var cwg sync.WaitGroup
	cwg.Go(func() {
		for pb := range batches {
			err := in.commit(pb)
			pb.answer(err)
			done <- err
			if err != nil {
				return // Run returns the error and sends no more batches
			}
		}
	})
	busy := false // a batch was handed over and its commit has not reported yet
	// wait blocks until the running commit, if any, reported.
	wait := func() error {
		if !busy {
			return nil
		}
		busy = false
		return <-done
	}
	pending, due := 0, false
	// waiting are the Commit calls for the next batch handed over.
	var waiting []chan error
	defer func() {
		for _, r := range waiting { // Run ends on an error before the batch was handed over
			r <- cmp.Or(err, in.failure(), errors.New("ingest ended"))
		}
	}()
	// hand gives the batch, with the Commit calls waiting for it, to the idle committer.
	hand := func() {
		pb := in.take()
		pb.replies, waiting = waiting, nil
		batches <- pb
		busy, pending, due = true, 0, false
	}
	defer func() {
		close(batches)
		cwg.Wait()
		if werr := wait(); werr != nil {
			err = errors.Join(err, werr)
		}
	}()
	// ready marks the batch due and hands it over if it can; past maxPending it waits.
	ready := func(full bool) error {
		due = true
		if busy && full {
			if err := wait(); err != nil {
				return err
			}
		}
		if !busy {
			hand()
		}
		return nil
	}

	// event applies one received event and hands the batch over once it is due.
	event := func(r received) error {
		applied := in.apply(r.ev)
		if r.hasPos {
			in.files.passed(r.pos, r.ev.Time)
		}
		if !applied {
			return nil
		}
		pending++
		// Past maxDirty changed records a batch is due before BatchSize events; counting
		// them takes the aggregator's lock, so it is done every 1024 events.
		changed := 0
		if pending%1024 == 0 {
			changed = in.agg.pending()
		}
		if pending < in.cfg.BatchSize && changed < maxDirty {
			return nil
		}
		full := pending >= maxPending*in.cfg.BatchSize || changed >= maxChanged
		if due && !full {
			return nil // handed over when the running commit reports
		}
		return ready(full)
	}
	var taken []received // the events last taken from the queue, applied

	tick := time.NewTicker(in.cfg.BatchInterval)
	defer tick.Stop()
	var sweep <-chan time.Time
	if in.cfg.Retention > 0 {
		in.sweep()
		t := time.NewTicker(in.cfg.SweepInterval)
		defer t.Stop()
		sweep = t.C
	}
	for {
		var committed <-chan error // nil unless a commit is running
		if busy {
			committed = done
		}
		select {
		case <-events.ready:
			var last bool
			taken, last = events.take(taken)
			for _, r := range taken {
				if err := event(r); err != nil {
					return err
				}
			}
			clear(taken) // applied: a quiet stream's next take may be far off
			if !last {
				continue
			}
			// The queue closes after srcErr is set. The final batch follows the running commit.
			if err := wait(); err != nil {
				return err
			}
			hand()
			if err := wait(); err != nil {
				return err
			}
			if errors.Is(srcErr, io.EOF) || (ctx.Err() != nil && errors.Is(srcErr, ctx.Err())) {
				return nil
			}
			return fmt.Errorf("ingest: %w", srcErr)
		case reply := <-requests:
			// A Commit call: the batch built so far is due, and answers it once on disk.
			waiting = append(waiting, reply)
			if err := ready(false); err != nil {
				return err
			}
		case err := <-committed:
			busy = false
			if err != nil {
				return err
			}
			if due {
				hand()
			}
		case <-tick.C:
			if in.agg.Dirty() {
				if err := ready(false); err != nil {
					return err
				}
			}
		case <-sweep:
			if in.sweep() > 0 {
				if err := ready(false); err != nil {
					return err
				}
			}
		}
	}
}

// maxDirty is the number of changed records that makes a batch due before BatchSize events. A
// batch that grew while the previous commit was written is bounded by maxPending times
// BatchSize events and maxChanged changed records: there the loop waits for the commit instead
// of growing the batch further. A commit appends its edges to the journal in a few large
// sequential writes (journal.go), so the bound is the batch's memory, not bbolt's advice of
// fewer than 100,000 random writes per transaction, which applied while commits put every
// edge into the tree (it was 20,000 records then, which over 1M edges cut batches to 10k
// flows; issue 19.2).
const (
	maxDirty   = 100_000
	maxPending = 4
	maxChanged = 250_000
)

// received is an event with the source position just past it, when the source has one.
type received struct {
	ev     *flows.Event
	pos    flows.FilePos
	hasPos bool
}

// pendingBatch is a batch taken from the aggregator with the cursor, event count and file
// positions it covers.
type pendingBatch struct {
	b      *Batch
	events uint64
	files  []checkpoint
	// replies are the Commit calls waiting for this batch (each buffered: one answer).
	replies []chan error
}

func (pb pendingBatch) answer(err error) {
	for _, r := range pb.replies {
		r <- err
	}
}

func (in *Ingester) take() pendingBatch {
	b := in.agg.TakeBatch()
	b.Cursor = in.cursor.Clone()
	return pendingBatch{b: b, events: in.events.Load(), files: in.files.safe()}
}

func (in *Ingester) commit(pb pendingBatch) error {
	if err := in.failure(); err != nil {
		return err
	}
	start := time.Now()
	pb.b.Files = in.files.marks(pb.files, in.log)
	if err := in.store.Commit(pb.b, in.hooks.BeforeCommit); err != nil {
		in.failed.Store(&err)
		return err
	}
	in.commits.Add(1)
	if in.hooks.AfterCommit != nil {
		in.hooks.AfterCommit(CommitInfo{Events: pb.events, Edges: pb.b.EdgeCount, Duration: time.Since(start)})
	}
	in.agg.recycle(pb.b)
	return nil
}

// failure returns the error of the first commit that failed, nil while none did. After one
// failed, nothing more is committed: its batch is gone from memory (TakeBatch cleared it), so
// a later commit would store a cursor past events the store never got. What is stored stays;
// a restart reads the rest again from the source.
func (in *Ingester) failure() error {
	if p := in.failed.Load(); p != nil {
		return fmt.Errorf("an earlier commit failed, so nothing more is committed (the stored cursor stays before the lost batch; a restart reads it again): %w", *p)
	}
	return nil
}

// apply folds ev unless the stored cursor shows it applied before; it reports whether it did.
// A record the Aggregator rejects as malformed does not move the cursor: one flow dated 2099
// must not make every later real flow of its node look delivered (issue 15.4).
func (in *Ingester) apply(ev *flows.Event) bool {
	if in.resume.Seen(ev) {
		in.skipped.Add(1)
		return false
	}
	if !in.agg.Add(ev) {
		return false
	}
	// After Add: the observer sees the identity the store keyed the event under.
	if in.hooks.Observe != nil {
		in.hooks.Observe(ev)
	}
	in.cursor.Advance(ev)
	in.events.Add(1)
	return true
}

// FileMarks returns how far the store's last ingest read each plain input file: hand them to
// the file source (flows.FileSource.ResumeFrom) so that a restart seeks instead of re-reading.
func (in *Ingester) FileMarks() []flows.FileMark { return in.files.stored() }

// Commit commits everything applied so far, with the cursor and the before-commit hook's
// writes, in one transaction, and returns once it is on disk: a later stage calls it to
// persist state it changed while no batch was due (a quiet stream). While Run runs, Run's
// committer does it, so commits, and the BeforeCommit and AfterCommit calls in them, never
// overlap (Observe runs on Run's own goroutine meanwhile). If ctx ends first, Commit returns ctx.Err() and the commit may still happen.
func (in *Ingester) Commit(ctx context.Context) error {
	for {
		in.mu.Lock()
		requests, stopped := in.requests, in.stopped
		if requests == nil {
			defer in.mu.Unlock()
			return in.commit(in.take())
		}
		in.mu.Unlock()
		reply := make(chan error, 1)
		select {
		case requests <- reply:
			select {
			case err := <-reply:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		case <-stopped:
			// Run ended meanwhile: commit directly.
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sweep expires what retention no longer covers; the removals go out with the next commit.
func (in *Ingester) sweep() int {
	cutoff := in.now().Add(-in.cfg.Retention)
	n := in.agg.Expire(cutoff)
	if n > 0 {
		in.store.metrics.expired.Add(float64(n))
		in.log.Info("retention expired edges", "edges", n, "cutoff", cutoff)
	}
	return n
}
