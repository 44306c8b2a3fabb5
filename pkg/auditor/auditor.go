package auditor

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// Bounds of what the auditor remembers about would-be-denied flows.
const (
	maxLoggedEdges     = 10000 // edges already logged once; cleared when full
	maxDeniedPerTarget = 20    // distinct would-be-denied edges kept per workload for reviews
	// maxClockSkew is how far ahead of the wall clock a flow's time may be and still advance
	// the flow clock.
	maxClockSkew = 5 * time.Minute
)

// DeniedEdge is one would-be-denied edge of a workload in its current window.
type DeniedEdge struct {
	Direction flows.Direction
	Peer      string
	Proto     flows.Protocol
	Port      uint16
	Count     uint64
	Last      time.Time // flow time of the newest one, for the status page
}

// Config holds the audit stage's settings.
type Config struct {
	Lifecycle lifecycle.Config
	Audit     audit.Config
	// Namespaces is the daemon's shard (--namespace): only workloads in them get a lifecycle;
	// empty is every namespace.
	Namespaces []string
	// Warmup is how long the process must have observed flows before a workload leaving the
	// store retires its policy and delivery may be destructive (--delivery-warmup).
	Warmup time.Duration
	// Kind is the kind proposals are delivered as (--policy-kind): they are evaluated, and
	// shown on the status page, as that kind.
	Kind synth.PolicyKind
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("--delivery-warmup %s: must not be negative", c.Warmup))
	}
	errs = append(errs, c.Lifecycle.Validate(), c.Audit.Validate())
	return errors.Join(errs...)
}

// Auditor shadow-evaluates every flow against the revisions under audit (and enforced ones,
// for drops), drives the lifecycle and keeps the audit metrics. Observe hands each event over
// from the ingest goroutine to the auditor's own, which accounts it, so evaluation runs beside
// ingestion; Update runs on the sync loop, the persistence hooks on the Ingester's committer.
// All methods are safe for concurrent use; Close ends the auditor's goroutine.
type Auditor struct {
	log  *slog.Logger
	m    *metrics
	eval *audit.Evaluator
	cfg  Config

	// queue carries the events Observe hands over to account; observed counts them (the
	// ingest goroutine's side), accounted those account finished (under mu), and caughtUp
	// signals each step. stopped closes when account returns.
	queue     chan *flows.Event
	observed  atomic.Uint64
	caughtUp  *sync.Cond
	stopped   chan struct{}
	startOnce sync.Once
	closeOnce sync.Once

	// updateMu serializes Update and guards peers.
	updateMu sync.Mutex
	// peers, when set (UsePeers), returns the other replicas' evidence for each Update.
	peers func() []lifecycle.Peer
	// mu guards everything below.
	mu        sync.Mutex
	accounted uint64
	machine   *lifecycle.Machine
	// current holds, per workload key, the proposal whose revision is audited or enforced.
	current map[string]*synth.Proposal
	// names holds the metric labels of workloads with a proposal.
	names  map[string]workloadName
	logged map[string]struct{}
	denied map[string][]DeniedEdge
	// drops holds the policy drops per workload since its current revision was proposed.
	drops map[string][]DroppedEdge
	// history holds the newest revisions per workload for the status page.
	history revisionHistory
	// now is the newest flow time seen: the lifecycle's clock, so windows are measured in
	// observed time and a replayed recording promotes as the live cluster would have.
	now time.Time
	// pending and pendingGone hold lifecycle changes written by a commit not yet known to
	// have succeeded (persist.go).
	pending     map[string]*lifecycle.Record
	pendingGone map[string]bool
	// keys caches workload keys by label slice (keyOf).
	keys map[keyCacheKey]string
	// wall is the wall clock (tests replace it).
	wall func() time.Time
	// firstEvent is the wall time this process observed its first flow: how long the replica
	// has watched the cluster, whatever its store holds.
	firstEvent time.Time
}

// New loads the lifecycle state the store holds. Its goroutine runs from Start to Close, and
// its metrics are registered by Register, once the caller has nothing left that may fail.
func New(cfg Config, store Store, log *slog.Logger) (*Auditor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	machine, err := load(cfg.Lifecycle, store)
	if err != nil {
		return nil, err
	}
	a := &Auditor{
		log:         log,
		cfg:         cfg,
		eval:        audit.NewEvaluator(nil, log),
		machine:     machine,
		current:     make(map[string]*synth.Proposal),
		names:       make(map[string]workloadName),
		logged:      make(map[string]struct{}),
		denied:      make(map[string][]DeniedEdge),
		drops:       make(map[string][]DroppedEdge),
		history:     make(revisionHistory),
		keys:        make(map[keyCacheKey]string),
		pending:     make(map[string]*lifecycle.Record),
		pendingGone: make(map[string]bool),
		wall:        time.Now,
		queue:       make(chan *flows.Event, maxQueued),
		stopped:     make(chan struct{}),
	}
	a.caughtUp = sync.NewCond(&a.mu)
	a.m = newMetrics(a.Clock)
	a.m.setStates(machine.Counts())
	return a, nil
}

// Collectors returns the audit stage's metrics (docs/metrics.md) for the caller to register
// once nothing else can fail.
func (a *Auditor) Collectors() []prometheus.Collector { return a.m.collectors() }

// Hooks are what the Ingester calls: every applied event is observed, the lifecycle state is
// written inside each commit, and retention runs on the flow clock (an edge expires when the
// cluster has moved on without it, not because a recording is older than the wall clock).
// The auditor thus sees exactly the events the store takes: what the store already holds (a
// relay re-sending its buffer after a restart) is evidence counted once, not twice.
func (a *Auditor) Hooks() aggregate.IngestHooks {
	return aggregate.IngestHooks{
		Observe:      a.Observe,
		BeforeCommit: a.persist,
		AfterCommit:  func(aggregate.CommitInfo) { a.persisted() },
		Clock:        a.Clock,
	}
}

type workloadName struct{ namespace, name string }

// Drain returns once every event handed to Observe so far is accounted in the metrics and the
// lifecycle.
func (a *Auditor) Drain() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.drainLocked()
}

// drainLocked waits, holding mu but for the waits, until the events handed to Observe before
// the call are accounted.
func (a *Auditor) drainLocked() {
	target := a.observed.Load()
	for a.accounted < target {
		a.caughtUp.Wait()
	}
}

// Clock returns the newest flow time seen, the time base of windows and retention.
func (a *Auditor) Clock() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.now
}

// keyOf returns the workload key of a peer. The normalizer hands out one shared label slice
// per identity, so the key is cached by that slice: building it costs an allocation per flow
// end otherwise. The cache is cleared when it outgrows maxKeyCache (identities churn).
func (a *Auditor) keyOf(p *flows.Peer) string {
	if len(p.Labels) == 0 {
		return aggregate.WorkloadKey{Namespace: p.Namespace}.String()
	}
	ck := keyCacheKey{ns: p.Namespace, first: &p.Labels[0], n: len(p.Labels)}
	if k, ok := a.keys[ck]; ok {
		return k
	}
	if len(a.keys) >= maxKeyCache {
		clear(a.keys)
	}
	k := aggregate.WorkloadKey{Namespace: p.Namespace, Labels: p.Labels}.String()
	a.keys[ck] = k
	return k
}

type keyCacheKey struct {
	ns    string
	first *string
	n     int
}

const maxKeyCache = 1 << 16

// end is one side of a flow that a policy may govern.
type end struct {
	dir   flows.Direction
	self  *flows.Peer
	other *flows.Peer
}

// Observe hands one event to the audit stage's goroutine, which accounts it (observe): the
// ingest goroutine goes on with the next flow while this one is shadow-evaluated. It blocks
// when maxQueued events wait. Events must not change after they are handed over.
func (a *Auditor) Observe(ev *flows.Event) {
	a.observed.Add(1)
	a.queue <- ev
}

// maxQueued bounds the events handed to Observe and not yet accounted: enough to ride out a
// sync holding the lock, little next to a batch.
const maxQueued = 4096

// maxPerLock bounds the events accounted under one hold of mu, so a status page or a sync
// waits at most that long.
const maxPerLock = 256

// account runs on the audit stage's goroutine until Close: it takes the queued events a few
// hundred at a time under one hold of mu.
func (a *Auditor) account() {
	defer close(a.stopped)
	for ev := range a.queue {
		a.mu.Lock()
		a.observe(ev)
		n := uint64(1)
	more:
		for n < maxPerLock {
			select {
			case ev, ok := <-a.queue:
				if !ok {
					break more
				}
				a.observe(ev)
				n++
			default:
				break more
			}
		}
		a.accounted += n
		a.caughtUp.Broadcast()
		a.mu.Unlock()
	}
}

// Start starts the audit stage's goroutine, which accounts what Observe hands over; the
// daemon starts it before ingestion and stops it with Close after the last commit. Until it
// runs, handed events wait (and a commit waits for them).
func (a *Auditor) Start() {
	a.startOnce.Do(func() { go a.account() })
}

// Close stops the audit stage's goroutine once the events handed to Observe are accounted.
// Observe must not be called after; Close may be called more than once, and without Start.
func (a *Auditor) Close() {
	a.closeOnce.Do(func() {
		close(a.queue)
		a.Start() // an auditor never started still accounts what was handed over, then stops
		<-a.stopped
	})
}

// observe accounts one event: lost-event totals per node, enforced-policy drops, Cilium's own
// AUDIT verdicts, and the shadow verdict of the revision each workload end is audited with.
// It runs under mu.
func (a *Auditor) observe(ev *flows.Event) {
	if a.firstEvent.IsZero() {
		a.firstEvent = a.wall()
	}
	// A node whose clock runs ahead must not move every window and the retention forward.
	if ev.Time.After(a.now) && ev.Time.Before(a.wall().Add(maxClockSkew)) {
		if n := a.machine.Advance(a.now, ev.Time); n > 0 {
			a.log.Info("flow clock jumped: the unseen time does not count towards windows",
				"from", a.now, "to", ev.Time, "windows", n)
		}
		a.now = ev.Time
	}
	if ev.Kind == flows.KindLost {
		if ev.Lost != nil {
			a.machine.NodeLost(ev.Node, ev.Lost.Count)
		}
		return
	}
	a.machine.NodeEvent(ev.Node)
	ends := []end{{flows.DirectionEgress, &ev.Src, &ev.Dst}, {flows.DirectionIngress, &ev.Dst, &ev.Src}}

	switch ev.Verdict {
	case flows.VerdictDropped:
		if flows.IsPolicyDrop(ev.DropReason) {
			a.policyDrop(ev, ends)
		}
		return // dropped traffic does not work today: no policy can break it
	case flows.VerdictError:
		return
	}

	var verdict audit.Verdict
	evaluated := false
	for _, e := range ends {
		if e.self.Kind != flows.PeerWorkload {
			continue
		}
		key := a.keyOf(e.self)
		rec := a.machine.Record(key)
		if rec == nil || rec.State == lifecycle.Observing || a.current[key] == nil {
			continue
		}
		if !evaluated {
			v, err := a.eval.Evaluate(ev)
			if err != nil && !errors.Is(err, audit.ErrNotFlow) {
				a.log.Debug("evaluate flow", "err", err)
			}
			verdict, evaluated = v, true
		}
		dv := verdict.Get(e.dir)
		// Cilium in policy-audit-mode reports AUDIT where its enforced policy would deny: the
		// same evidence as our own shadow verdict, counted once.
		ciliumAudit := ev.Verdict == flows.VerdictAudit && (ev.Point == e.dir || ev.Point == flows.DirectionUnknown)
		if ciliumAudit {
			n := a.names[key]
			a.m.auditDeny.WithLabelValues(n.namespace, n.name, e.dir.String()).Inc()
		}
		if dv.Decision == audit.DecisionUnknown && !ciliumAudit {
			continue // the flow lacks the facts to decide (a named port, a header): not evidence either way
		}
		denied := dv.Denied() || ciliumAudit
		if denied {
			a.wouldDeny(ev, e, key, dv)
		}
		a.machine.Evaluated(key, ev.Node, denied, ev.Time)
	}
}

func (a *Auditor) wouldDeny(ev *flows.Event, e end, key string, dv audit.DirectionVerdict) {
	n := a.names[key]
	a.m.wouldDeny.WithLabelValues(n.namespace, n.name, e.dir.String(), e.other.Kind.String()).Inc()
	peer := e.other.String()
	port := ev.PortString()
	if a.firstOnEdge(key + "|" + e.dir.String() + "|" + e.other.Key() + "|" + port) {
		a.log.Warn("would-be-denied flow",
			"workload", n.namespace+"/"+n.name, "direction", e.dir.String(), "peer", peer, "port", port,
			"verdict", ev.Verdict.String(), "reason", dv.String(), "node", ev.Node, "time", ev.Time)
	}
	a.denied[key] = tally(a.denied[key], maxDeniedPerTarget, ev.Time, func(d *DeniedEdge) bool {
		return d.Direction == e.dir && d.Peer == peer && d.Proto == ev.Proto && d.Port == ev.Port
	}, func() DeniedEdge {
		return DeniedEdge{Direction: e.dir, Peer: peer, Proto: ev.Proto, Port: ev.Port, Count: 1, Last: ev.Time}
	})
}

// firstOnEdge reports whether edge is seen for the first time since the memory of logged edges
// was last cleared (it holds at most maxLoggedEdges).
func (a *Auditor) firstOnEdge(edge string) bool {
	if _, ok := a.logged[edge]; ok {
		return false
	}
	if len(a.logged) >= maxLoggedEdges {
		clear(a.logged)
	}
	a.logged[edge] = struct{}{}
	return true
}

func (a *Auditor) logTransition(tr lifecycle.Transition) {
	n := a.names[tr.Workload]
	a.log.Info("policy lifecycle", "workload", n.namespace+"/"+n.name, "from", string(tr.From), "to", string(tr.To),
		"revision", ShortRevision(tr.Revision), "reason", tr.Reason)
}

// ShortRevision is the first 12 hex digits of a revision, as logs and the status page show it.
func ShortRevision(r string) string {
	if len(r) > 12 {
		return r[:12]
	}
	return r
}
