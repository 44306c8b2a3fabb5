package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/auditor"
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
	// Ingest configures the Ingester the daemon runs over Deps.Store and Deps.Aggregator
	// (--batch-size, --batch-interval, --retention); its hooks are the audit stage's.
	Ingest aggregate.IngesterConfig
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
	ac := c.auditConfig()
	errs = append(errs, ac.Validate(), c.Synth.Validate(), c.Ingest.Validate())
	return errors.Join(errs...)
}

// auditConfig is the audit stage's part of the configuration.
func (c *Config) auditConfig() auditor.Config {
	return auditor.Config{Lifecycle: c.Lifecycle, Audit: c.Audit, Namespaces: c.Namespaces, Warmup: c.DeliveryWarmup, Kind: c.Synth.PolicyKind}
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
// Registry are required; the rest are optional.
type Deps struct {
	Log      *slog.Logger
	Registry Registry
	Source   flows.Source
	// Stats are the source's counters, for REPORT.md (their metrics are the source's own:
	// flows.RegisterMetrics).
	Stats *flows.Stats
	// Relay, for a live relay source, is its connection state for /readyz.
	Relay RelayState
	// Store and Aggregator: the daemon runs an Ingester over both (Config.Ingest), which
	// loads the store into the aggregator.
	Store      *aggregate.Store
	Aggregator *aggregate.Aggregator
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
	// Snapshot, when set, supplies the snapshot every sync synthesizes and audits from instead
	// of the Aggregator's: with replicas splitting the nodes, the merge of all replicas'
	// edges (pkg/replicas). The first sync, before any flow is read, calls it too. Optional.
	Snapshot func(ctx context.Context) *aggregate.Snapshot
	// Peers, when set, supplies the other replicas' audit evidence each sync merges before
	// it promotes (pkg/replicas Set.Peers, pulled by Snapshot); this replica's own is
	// Daemon.Evidence. Optional.
	Peers func() []lifecycle.Peer
	// Routes are more handlers served on MetricsListener, by ServeMux pattern (a replica's
	// edge summary). Optional.
	Routes map[string]http.Handler
}

// Daemon is the running pipeline: source -> store -> synthesis -> audit -> delivery.
type Daemon struct {
	cfg   Config
	d     Deps
	log   *slog.Logger
	m     *metrics
	audit *auditor.Auditor
	in    *aggregate.Ingester
	// syncMu serializes sync runs (the ticker and a new leader's first sync) and guards
	// published.
	syncMu sync.Mutex
	// published remembers the policies last handed to GitOps, for the rule diff in PR bodies.
	published map[string]*v2.CiliumClusterwideNetworkPolicy
	// podsErr is the last error of RefreshPods ("" when it worked), to log changes only.
	podsErr string
	// electionErr is why this replica cannot campaign for the lease (nil when it can), for
	// /readyz.
	electionErr atomic.Pointer[error]
}

// New checks cfg and deps, builds the audit stage over the store's lifecycle state and the
// Ingester with the audit stage's hooks, and registers the daemon's own metrics. It fails
// before registering anything when the store's state cannot be read.
func New(cfg Config, d Deps) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Source == nil || d.Stats == nil || d.Store == nil || d.Aggregator == nil || d.Registry == nil {
		return nil, errors.New("daemon: source, stats, store, aggregator and registry are required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	aud, err := auditor.New(cfg.auditConfig(), d.Store, d.Log)
	if err != nil {
		return nil, err
	}
	if d.Peers != nil {
		aud.UsePeers(d.Peers)
	}
	ic := cfg.Ingest
	ic.Hooks = aud.Hooks()
	in, err := aggregate.NewIngester(d.Store, d.Aggregator, ic, d.Log)
	if err != nil {
		return nil, err
	}
	// Every failure is behind but this one: register all metrics, or none.
	m := newMetrics()
	if err := register(d.Registry, append(aud.Collectors(), m.collectors()...)); err != nil {
		return nil, err
	}
	return &Daemon{
		cfg: cfg, d: d, log: d.Log, m: m,
		audit: aud, in: in,
		published: make(map[string]*v2.CiliumClusterwideNetworkPolicy),
	}, nil
}

// Evidence is this replica's own audit evidence, what the other replicas of a set merge
// (pkg/replicas Local.Evidence).
func (dm *Daemon) Evidence() []lifecycle.Evidence { return dm.audit.Evidence() }

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
		mux := newMux(dm.d.Registry, dm.readiness(), false, dm.statusHandler())
		for pattern, h := range dm.d.Routes {
			mux.Handle(pattern, h)
		}
		servers = append(servers, httpServer{dm.d.MetricsListener, mux})
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

	// The audit stage's goroutine runs until the last commit below accounted every event.
	dm.audit.Start()
	defer dm.audit.Close()

	// Propose from what the store holds before the first flow is evaluated: after a restart the
	// revisions under audit must be in the evaluator, or their flows would pass unchecked.
	dm.syncOnce(ctx)

	g.Go(func() error {
		defer close(ingestDone)
		err := dm.in.Run(gctx, dm.d.Source)
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
	// shutdown), then commit what is left with the lifecycle changes it made.
	fctx, cancel := context.WithTimeout(context.Background(), finalSyncTimeout)
	dm.syncOnce(fctx)
	cancel()
	err = errors.Join(err, dm.in.Commit(context.Background()))
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
	var snap *aggregate.Snapshot
	if dm.d.Snapshot != nil {
		snap = dm.d.Snapshot(ctx)
	} else {
		snap = dm.d.Aggregator.Snapshot()
	}
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
	dm.audit.Update(res, snap, others)
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
			errs = append(errs, dm.publish(ctx, dm.audit.States()))
		}
	}
	// Commit what the sync changed (promotions, adoptions, settled retirements) now: on a quiet
	// stream no batch would carry it. The Ingester commits it, as it commits every lifecycle
	// change: one writer.
	if err := dm.in.Commit(ctx); err != nil {
		errs = append(errs, fmt.Errorf("commit lifecycle: %w", err))
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
	dm.audit.Adopt(cluster.Enforced(owned))
	states := dm.audit.States()
	plan := cluster.Plan{
		Desired:     make([]cluster.Desired, 0, len(states)),
		Destructive: dm.audit.WarmedUp(),
	}
	for i := range states {
		d, err := states[i].Deliverable()
		if err != nil {
			return false, err
		}
		plan.Desired = append(plan.Desired, cluster.Desired{Policy: d.Policy, Promoted: d.Promoted})
	}
	for _, r := range dm.audit.Retirements() {
		cr := cluster.Retired{Name: r.Policy}
		for _, rev := range r.Revisions {
			cr.Revisions = append(cr.Revisions, synth.RevisionPrefix+rev)
		}
		plan.Retired = append(plan.Retired, cr)
	}
	res, err := dm.d.Applier.Sync(ctx, plan)
	dm.audit.Settle(res.Settled)
	if err != nil {
		return false, fmt.Errorf("apply to cluster: %w", err)
	}
	return len(res.Conflicts()) > 0, nil
}
