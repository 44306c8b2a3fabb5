package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/errgroup"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/cluster"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/gitops"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// Config holds the daemon's own settings; the stages take theirs from their packages.
type Config struct {
	// SyncInterval is how often policies are synthesized, audited windows checked and results
	// delivered (--sync-interval).
	SyncInterval time.Duration
	// OutDir, when set, receives the proposals and REPORT.md on every sync (--out).
	OutDir string
	// Once stops the daemon when the source ends (a recording), after a final sync.
	Once      bool
	Lifecycle lifecycle.Config
	Synth     synth.Config
	Audit     audit.Config
	// Namespaces is the daemon's shard (--namespace): it proposes policies only for workloads
	// in them, so daemons sharding a cluster by namespace never write the same policy.
	Namespaces []string
	// MaxEdges and MaxWorkloads are the store caps, published as limit gauges for alerts.
	MaxEdges, MaxWorkloads int
	// DeliveryWarmup is how long this replica must have observed flows before it makes a
	// destructive write to the cluster: a prune, or a new revision over one in force
	// (--delivery-warmup). A replica whose store is new or was lost learns first.
	DeliveryWarmup time.Duration
}

// Validate checks the configuration before anything starts.
func (c *Config) Validate() error {
	var errs []error
	if c.SyncInterval <= 0 {
		errs = append(errs, fmt.Errorf("--sync-interval %s: must be positive", c.SyncInterval))
	}
	if c.DeliveryWarmup < 0 {
		errs = append(errs, fmt.Errorf("--delivery-warmup %s: must not be negative", c.DeliveryWarmup))
	}
	errs = append(errs, c.Lifecycle.Validate(), c.Synth.Validate(), c.Audit.Validate())
	return errors.Join(errs...)
}

// RelayState is what the daemon reads from a live relay source.
type RelayState interface {
	State() flows.RelayState
}

// Applier writes the desired policies to the cluster (pkg/cluster).
type Applier interface {
	// Owned returns our policies in the cluster: what a leader adopts before it changes anything.
	Owned(ctx context.Context) ([]*v2.CiliumClusterwideNetworkPolicy, error)
	Sync(ctx context.Context, plan cluster.Plan) (cluster.Result, error)
}

// Publisher opens or updates GitOps pull requests (pkg/gitops).
type Publisher interface {
	Publish(ctx context.Context, cs gitops.ChangeSet) (gitops.Result, error)
	Flush(ctx context.Context) (gitops.Result, error)
}

// Elector campaigns for the write lease (pkg/cluster); IsLeader gates every write.
type Elector interface {
	Run(ctx context.Context, lead func(ctx context.Context)) error
	IsLeader() bool
}

// ClusterPolicies reads the policies already in the cluster, for shadow evaluation.
type ClusterPolicies func(ctx context.Context) (*audit.Decoded, error)

// Registry is where the daemon registers its metrics and what /metrics serves.
type Registry interface {
	prometheus.Registerer
	prometheus.Gatherer
}

// Deps are the concrete stages the command built. Source, Stats, Store, Aggregator and
// Ingester are required; the rest are optional.
type Deps struct {
	Log      *slog.Logger
	Registry Registry
	Source   flows.Source
	Stats    *flows.Stats
	Relay    RelayState
	// Store, Aggregator and Ingester: the Ingester was made over both and holds the cursor.
	Store      *aggregate.Store
	Aggregator *aggregate.Aggregator
	Ingester   *aggregate.Ingester
	// MetricsListener serves /metrics, /healthz, /readyz and the status page (/); PprofListener
	// serves pprof.
	MetricsListener net.Listener
	PprofListener   net.Listener
	Applier         Applier
	Publisher       Publisher
	Elector         Elector
	ClusterPolicies ClusterPolicies
	// Unresolved lists the workloads whose pods the source could not name a selector for
	// (flows.Normalizer.Unresolved), for REPORT.md; optional.
	Unresolved func() []string
	// RefreshPods reads the cluster's pods again for the source's resolver of label-less pods
	// (flows.LivePods); optional. It runs before every sync, the first one before any flow.
	RefreshPods func(ctx context.Context) error
}

// Daemon is the running pipeline: source -> store -> synthesis -> audit -> delivery.
type Daemon struct {
	cfg     Config
	d       Deps
	log     *slog.Logger
	m       *metrics
	auditor *auditor
	// syncMu serializes sync runs (the ticker and a new leader's first sync) and guards
	// published.
	syncMu sync.Mutex
	// published remembers the policies last handed to GitOps, for the rule diff in PR bodies.
	published map[string]*v2.CiliumClusterwideNetworkPolicy
	// writeLifecycle and lifecycleWritten persist what a sync changed (lifecycleWriter).
	writeLifecycle   func(*aggregate.Lifecycle) error
	lifecycleWritten func()
	// podsErr is the last error of RefreshPods ("" when it worked), to log changes only.
	podsErr string
	// electionErr is why this replica cannot campaign for the lease (nil when it can), for
	// /readyz.
	electionErr atomic.Pointer[error]
}

// New checks cfg and deps and loads the lifecycle records the store holds.
func New(cfg Config, d Deps) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Source == nil || d.Stats == nil || d.Store == nil || d.Aggregator == nil || d.Ingester == nil || d.Registry == nil {
		return nil, errors.New("daemon: source, stats, store, aggregator, ingester and registry are required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	snap := d.Aggregator.Snapshot()
	var records []*lifecycle.Record
	for _, w := range snap.Workloads {
		b, err := d.Store.Lifecycle(w.Key.String())
		if err != nil {
			return nil, fmt.Errorf("load lifecycle of %s: %w", w.Key, err)
		}
		if b == nil {
			continue
		}
		r, err := lifecycle.UnmarshalRecord(b)
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", d.Store.Path(), err)
		}
		records = append(records, r)
	}
	machine := lifecycle.New(cfg.Lifecycle, records)
	if b, err := d.Store.Lifecycle(nodeTotalsKey); err != nil {
		return nil, fmt.Errorf("load node totals: %w", err)
	} else if b != nil {
		var t lifecycle.NodeTotals
		if err := json.Unmarshal(b, &t); err != nil {
			return nil, fmt.Errorf("store %s: decode node totals: %w", d.Store.Path(), err)
		}
		machine.RestoreTotals(t)
	}
	if b, err := d.Store.Lifecycle(retiredKey); err != nil {
		return nil, fmt.Errorf("load retired policies: %w", err)
	} else if b != nil {
		var rs []lifecycle.Retirement
		if err := json.Unmarshal(b, &rs); err != nil {
			return nil, fmt.Errorf("store %s: decode retired policies: %w", d.Store.Path(), err)
		}
		machine.RestoreRetired(rs)
	}
	// Every failure is behind: register the metrics now, so a failed New leaves none behind
	// and no collector captures a daemon that does not exist yet.
	m := newMetrics(d.Registry)
	registerSourceStats(d.Registry, d.Stats)
	f := promauto.With(d.Registry)
	limits := f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "recommender_store_limit",
		Help: "Configured caps of the store (edges, workloads); compare with recommender_store_edges and recommender_store_workloads.",
	}, []string{"kind"})
	limits.WithLabelValues("edges").Set(float64(cfg.MaxEdges))
	limits.WithLabelValues("workloads").Set(float64(cfg.MaxWorkloads))
	if d.Relay != nil {
		f.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "recommender_relay_connected",
			Help: "1 while a Hubble Relay stream is open, else 0.",
		}, func() float64 {
			if d.Relay.State().Connected {
				return 1
			}
			return 0
		})
		f.NewCounterFunc(prometheus.CounterOpts{
			Name: "recommender_relay_reconnects_total",
			Help: "Hubble Relay streams reopened after an error.",
		}, func() float64 { return float64(d.Relay.State().Reconnects) })
		f.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "recommender_ingest_lag_seconds",
			Help: "Seconds between now and the time of the newest flow received from Hubble Relay.",
		}, func() float64 {
			last := d.Relay.State().LastEventTime
			if last.IsZero() {
				return 0
			}
			return time.Since(last).Seconds()
		})
	}

	dm := &Daemon{
		cfg: cfg, d: d, log: d.Log, m: m,
		auditor:   newAuditor(d.Log, m, cfg.Audit, machine),
		published: make(map[string]*v2.CiliumClusterwideNetworkPolicy),
	}
	dm.auditor.now = snap.To
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "recommender_ingest_last_flow_timestamp_seconds",
		Help: "Flow time (Unix seconds) of the newest event ingested: the clock windows and retention run on.",
	}, func() float64 {
		if t := dm.auditor.clock(); !t.IsZero() {
			return float64(t.UnixNano()) / 1e9
		}
		return 0
	})
	dm.auditor.warmup = cfg.DeliveryWarmup
	if len(cfg.Namespaces) > 0 {
		dm.auditor.inShard = func(ns string) bool { return slices.Contains(cfg.Namespaces, ns) }
	}
	// The auditor sees exactly the events the store takes: what the store already holds (a
	// relay re-sending its buffer after a restart) is evidence counted once, not twice.
	d.Ingester.SetObserver(dm.auditor.observe)
	write, done := dm.auditor.lifecycleWriter()
	d.Ingester.SetHooks(write, func(aggregate.CommitInfo) { done() })
	dm.writeLifecycle, dm.lifecycleWritten = dm.auditor.lifecycleWriter()
	// Retention runs on the flow clock too: an edge expires when the cluster has moved on
	// without it, not because a recording is older than the wall clock.
	d.Ingester.SetClock(dm.auditor.clock)
	return dm, nil
}

// Run runs the pipeline until ctx ends (or, with Once, the source ends) and shuts down in
// order: the source stops, the last batch and cursor are committed with the lifecycle
// state, then HTTP stops. The store is the caller's to close.
func (dm *Daemon) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	// serveCtx outlives ingestion so /metrics still answers during the final sync.
	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	ingestDone := make(chan struct{})

	var servers []httpServer
	if dm.d.MetricsListener != nil {
		servers = append(servers, httpServer{dm.d.MetricsListener, newMux(dm.d.Registry, dm.readiness(), false, dm.statusHandler())})
	}
	if dm.d.PprofListener != nil {
		servers = append(servers, httpServer{dm.d.PprofListener, newMux(dm.d.Registry, dm.readiness(), true, dm.statusHandler())})
	}
	httpFailed, httpDone := serveAll(serveCtx, servers)
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case err := <-httpFailed:
			return err
		}
	})

	// Propose from what the store holds before the first flow is evaluated: after a restart the
	// revisions under audit must be in the evaluator, or their flows would pass unchecked.
	dm.syncOnce(ctx)

	g.Go(func() error {
		defer close(ingestDone)
		err := dm.d.Ingester.Run(gctx, dm.d.Source)
		if err != nil {
			return fmt.Errorf("ingest: %w", err)
		}
		if dm.cfg.Once && gctx.Err() == nil {
			return errOnceDone
		}
		return nil
	})
	g.Go(func() error {
		t := time.NewTicker(dm.cfg.SyncInterval)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				dm.syncOnce(gctx)
			}
		}
	})
	if dm.d.Elector != nil {
		g.Go(func() error { return dm.campaign(gctx) })
	}

	err := g.Wait()
	<-ingestDone
	if errors.Is(err, errOnceDone) {
		err = nil
	}
	// Final sync over everything ingested (the recording's end, or the last batch before a
	// shutdown), then commit the lifecycle changes it made.
	fctx, cancel := context.WithTimeout(context.Background(), finalSyncTimeout)
	dm.syncOnce(fctx)
	cancel()
	err = errors.Join(err, dm.d.Ingester.Flush())
	stopServing()
	return errors.Join(err, httpDone())
}

// errOnceDone ends the errgroup when a finite source is exhausted in Once mode.
var errOnceDone = errors.New("source ended")

// finalSyncTimeout bounds the sync run at shutdown.
const finalSyncTimeout = 30 * time.Second

// campaign keeps competing for the lease until ctx ends: losing it stops writes at once
// (IsLeader turns false) and the replica campaigns again. An error that repeats is logged
// once, and one that retrying cannot mend (no rights on the Lease) makes /readyz fail.
func (dm *Daemon) campaign(ctx context.Context) error {
	var last string
	for ctx.Err() == nil {
		err := dm.d.Elector.Run(ctx, func(lctx context.Context) {
			dm.log.Info("leading: this replica writes to the cluster and opens pull requests")
			dm.syncOnce(lctx)
			<-lctx.Done()
		})
		backoff := campaignBackoff
		switch {
		case err == nil || ctx.Err() != nil:
			dm.electionErr.Store(nil)
			last = ""
		case errors.Is(err, cluster.ErrLeaseForbidden):
			dm.electionErr.Store(&err)
			backoff = forbiddenBackoff
			if err.Error() != last {
				dm.log.Error("leader election impossible: this replica never writes until the Lease is granted", "err", err)
			}
			last = err.Error()
		default:
			dm.electionErr.Store(nil)
			if err.Error() != last {
				dm.log.Warn("leader election", "err", err)
			}
			last = err.Error()
		}
		select { // do not spin when the election fails at once (API server down)
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
	return nil
}

const (
	// campaignBackoff spaces election attempts after the lease was lost or could not be sought.
	campaignBackoff = 2 * time.Second
	// forbiddenBackoff spaces them while the service account may not use the Lease: an
	// operator has to grant it, so there is no hurry, and each try costs one request.
	forbiddenBackoff = 30 * time.Second
)

// readiness lists what /readyz checks. The store is open before Run starts, so only the
// relay connection and the right to campaign for the lease can be missing; reading files is
// ready at once.
func (dm *Daemon) readiness() []ReadinessCheck {
	checks := []ReadinessCheck{func() string {
		if err := dm.electionErr.Load(); err != nil {
			return "leader election: " + (*err).Error()
		}
		return ""
	}}
	if dm.d.Relay == nil {
		return checks
	}
	return append(checks, func() string {
		st := dm.d.Relay.State()
		switch {
		case st.Connected:
			return ""
		case st.LastError != nil:
			return "hubble relay not connected: " + st.LastError.Error()
		}
		return "hubble relay not connected"
	})
}

// leader reports whether this replica may write to the cluster and open PRs.
func (dm *Daemon) leader() bool { return dm.d.Elector == nil || dm.d.Elector.IsLeader() }

// syncOnce synthesizes from the in-memory aggregate (everything ingested so far), updates the
// lifecycle and delivers. Errors are logged and counted: the next tick tries again.
func (dm *Daemon) syncOnce(ctx context.Context) {
	dm.syncMu.Lock()
	defer dm.syncMu.Unlock()
	dm.refreshPods(ctx)
	conflicts, err := dm.sync(ctx)
	switch {
	case err != nil && ctx.Err() != nil:
		// Stopped by shutdown: the final sync runs next with its own deadline.
		dm.log.Info("sync interrupted by shutdown", "err", err)
		return
	case err != nil:
		dm.m.syncs.WithLabelValues("error").Inc()
		dm.log.Error("sync", "err", err)
		return
	case conflicts:
		// Delivered all it could; the conflicts were logged by pkg/cluster when they appeared.
		dm.m.syncs.WithLabelValues("conflict").Inc()
	default:
		dm.m.syncs.WithLabelValues("ok").Inc()
	}
	dm.m.lastSync.SetToCurrentTime()
}

// refreshPods reads the cluster's pods for the resolver of label-less pods. A failure keeps
// the previous table and is logged when it appears or changes.
func (dm *Daemon) refreshPods(ctx context.Context) {
	if dm.d.RefreshPods == nil {
		return
	}
	msg := ""
	if err := dm.d.RefreshPods(ctx); err != nil {
		msg = err.Error()
	}
	if msg != dm.podsErr {
		if msg != "" {
			dm.log.Warn("read pods to resolve flows that carry no labels; those flows stay unresolved", "err", msg)
		} else {
			dm.log.Info("pods read: flows that carry no labels are resolved again")
		}
		dm.podsErr = msg
	}
}

// sync runs one synthesis and delivery. conflicts reports that delivery left policies a human
// has to look at (not owned, drift, refused prunes).
func (dm *Daemon) sync(ctx context.Context) (conflicts bool, err error) {
	snap := dm.d.Aggregator.Snapshot()
	res, err := synth.SynthesizeContext(ctx, snap, dm.cfg.Synth)
	if err != nil {
		return false, err
	}
	if len(dm.cfg.Namespaces) > 0 {
		res.Proposals = slices.DeleteFunc(res.Proposals, func(p *synth.Proposal) bool {
			return !slices.Contains(dm.cfg.Namespaces, p.Workload.Namespace)
		})
	}
	var others *audit.Decoded
	if dm.d.ClusterPolicies != nil {
		if others, err = dm.d.ClusterPolicies(ctx); err != nil {
			dm.log.Warn("read cluster policies; shadow evaluation uses the proposals only", "err", err)
		}
	}
	dm.auditor.update(res, snap, others)
	var errs []error
	if dm.cfg.OutDir != "" {
		in := dm.d.Stats.Snapshot()
		res.Input = &in
		if dm.d.Unresolved != nil {
			res.Unresolved = dm.d.Unresolved()
		}
		if _, err := synth.WriteDir(dm.cfg.OutDir, res); err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", dm.cfg.OutDir, err))
		}
	}
	if dm.leader() {
		if dm.d.Applier != nil {
			c, err := dm.apply(ctx)
			conflicts = c
			errs = append(errs, err)
		}
		if dm.d.Publisher != nil {
			errs = append(errs, dm.publish(ctx, dm.auditor.states()))
		}
	}
	// Commit what the sync changed (promotions, adoptions, settled retirements) now: on a quiet
	// stream no batch would carry it.
	if err := dm.d.Store.UpdateLifecycle(dm.writeLifecycle); err != nil {
		errs = append(errs, err)
	} else {
		dm.lifecycleWritten()
	}
	return conflicts, errors.Join(errs...)
}

// apply delivers to the cluster. Pruning is never inferred from absence: the policies of ours
// in force are read back and adopted as the starting state first, only policies this store
// retired are offered for pruning, and nothing destructive is allowed before the replica has
// observed for --delivery-warmup (see pkg/cluster's Plan).
func (dm *Daemon) apply(ctx context.Context) (conflicts bool, err error) {
	owned, err := dm.d.Applier.Owned(ctx)
	if err != nil {
		return false, fmt.Errorf("apply to cluster: %w", err)
	}
	dm.auditor.adopt(owned)
	states := dm.auditor.states()
	plan := cluster.Plan{
		Desired:     make([]cluster.Desired, 0, len(states)),
		Destructive: dm.auditor.warmedUp(),
	}
	for i := range states {
		d, err := states[i].deliverable()
		if err != nil {
			return false, err
		}
		plan.Desired = append(plan.Desired, cluster.Desired{Policy: d.policy, Promoted: d.promoted})
	}
	for _, r := range dm.auditor.retirements() {
		cr := cluster.Retired{Name: r.Policy}
		for _, rev := range r.Revisions {
			cr.Revisions = append(cr.Revisions, revisionPrefix+rev)
		}
		plan.Retired = append(plan.Retired, cr)
	}
	res, err := dm.d.Applier.Sync(ctx, plan)
	dm.auditor.settle(res.Settled)
	if err != nil {
		return false, fmt.Errorf("apply to cluster: %w", err)
	}
	return len(res.Conflicts()) > 0, nil
}

// revisionPrefix is how the revision annotation spells a synth revision.
const revisionPrefix = "sha256:"
