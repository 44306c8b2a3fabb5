package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"
	appsv1client "k8s.io/client-go/kubernetes/typed/apps/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/cluster"
	"github.com/recommender/recommender/pkg/daemon"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/gitops"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/replicas"
	"github.com/recommender/recommender/pkg/synth"
)

// runOptions are the flags of `recommender run`.
type runOptions struct {
	src      *sourceOptions
	replicas replicaOptions
	// replicaSet is the settled replica configuration (validate), zero without replicas.
	replicaSet replicas.Config

	db            string
	lockTimeout   time.Duration
	batchSize     int
	batchInterval time.Duration
	retention     time.Duration
	store         aggregate.Config

	metricsAddr  string
	pprofAddr    string
	syncInterval time.Duration
	out          string
	once         bool

	synth     synthOptions
	lifecycle lifecycle.Config

	cluster         cluster.Config
	apply           string
	dryRun          string
	kubeconfig      string
	leaderElect     bool
	leaseNamespace  string
	leaseName       string
	clusterPolicies bool
	allowLocalhost  string
	// policyDefaultLocal mirrors the Cilium agent option of the same name (issue 16).
	policyDefaultLocal bool
	deliveryWarmup     time.Duration
	kube               kubeOptions
	gitops             gitops.Config

	// ciliumNamespace holds Cilium's cilium-config, where the local cluster name is read from.
	ciliumNamespace string
}

// kubeOptions are the client settings of every Kubernetes API call.
type kubeOptions struct {
	qps     float32
	burst   int
	timeout time.Duration
}

func (k kubeOptions) validate() error {
	if k.qps <= 0 || k.burst <= 0 || k.timeout <= 0 {
		return fmt.Errorf("--kube-api-qps (%g), --kube-api-burst (%d) and --kube-api-timeout (%s) must be positive", k.qps, k.burst, k.timeout)
	}
	return nil
}

func newRunCmd(g *globalOptions) *cobra.Command {
	o := &runOptions{src: newSourceOptions(), lifecycle: lifecycle.DefaultConfig(), gitops: gitops.DefaultConfig(), cluster: cluster.DefaultConfig()}
	lc := lifecycle.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "run --hubble-server ADDR --db PATH",
		Short: "Run the daemon: learn from Hubble Relay, propose policies, audit them on live traffic, promote and deliver",
		Long: `run streams flows from Hubble Relay into the store, synthesizes a policy per workload
every --sync-interval, shadow-evaluates every flow against the policies in audit, and
promotes a policy once its --window stays clean. Would-be-denied flows and drops after
enforcement are Prometheus metrics (--metrics-addr) and logged once per new edge.
Policies are delivered to --out, to the cluster (--apply=enforce, leader only) and/or as
GitOps pull requests (--git-url). SIGTERM commits the last batch before exiting.`,
		Example: `  recommender run --hubble-server hubble-relay.kube-system.svc:80 --db /var/lib/recommender/recommender.db
  recommender run --flows testdata/flows --db /tmp/r.db --once --window 10m --out out/`,
		Args: flowArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.src.files = append(o.src.files, args...)
			return runDaemon(cmd.Context(), g, o, cmd)
		},
	}
	f := cmd.Flags()
	o.src.addFlags(f)
	o.src.addPeerFlags(f)
	o.replicas.addFlags(f)
	f.StringVar(&o.db, "db", "", "store file (created if missing)")
	f.DurationVar(&o.lockTimeout, "lock-timeout", aggregate.DefaultLockTimeout, "how long to wait for another process to release the store")
	f.IntVar(&o.batchSize, "batch-size", aggregate.DefaultBatchSize, "flows that make a store commit due (a batch grows up to 4x while the previous commit is written; a crash loses at most that)")
	f.DurationVar(&o.batchInterval, "batch-interval", aggregate.DefaultBatchInterval, "longest time between store commits (what a crash can lose)")
	f.DurationVar(&o.retention, "retention", 30*24*time.Hour, "expire edges not seen for this long (0 keeps everything)")
	sd := aggregate.DefaultConfig()
	f.IntVar(&o.store.MaxEdges, "max-edges", sd.MaxEdges, "cap on stored edges; more are counted as overflow")
	f.IntVar(&o.store.MaxWorkloads, "max-workloads", sd.MaxWorkloads, "cap on stored workloads; more are counted as overflow")
	f.IntVar(&o.store.MaxPorts, "max-ports", sd.MaxPorts, "distinct ports per peer before they collapse into a range flagged for review")
	f.StringVar(&o.metricsAddr, "metrics-addr", ":9962", "address for /metrics, /healthz, /readyz and the read-only status page at / (empty: off); the default listens on every interface, as in a pod: outside one, use 127.0.0.1:9962")
	f.StringVar(&o.pprofAddr, "pprof-addr", "", "address for Go pprof profiles (/debug/pprof/; empty: off)")
	f.DurationVar(&o.syncInterval, "sync-interval", time.Minute, "how often to synthesize, check windows and deliver")
	f.StringVar(&o.out, "out", "", "also write the proposals and REPORT.md to this directory on every sync")
	f.BoolVar(&o.once, "once", false, "with --flows: stop after the recordings are read and one final sync")
	o.synth.addFlags(f)
	f.DurationVar(&o.lifecycle.Window, "window", lc.Window, "how long a proposed revision must stay clean before it is promoted")
	f.Uint64Var(&o.lifecycle.MinWindowFlows, "min-window-flows", lc.MinWindowFlows, "flows of the workload evaluated in the window before promotion")
	f.Float64Var(&o.lifecycle.MaxLostRatio, "max-lost-ratio", lc.MaxLostRatio, "highest ratio of Hubble lost events on the workload's nodes for a window to count as clean")
	f.DurationVar(&o.lifecycle.MaxFlowGap, "max-flow-gap", lc.MaxFlowGap, "a jump of the flow clock longer than this (daemon down, Relay unreachable) does not count towards windows; 0 counts every gap")
	f.BoolVar(&o.lifecycle.Learn, "learn", lc.Learn, "learn would-be-denied edges into a new revision (false: hold the revision for a human)")
	f.BoolVar(&o.lifecycle.DemoteOnDrop, "demote-on-drop", lc.DemoteOnDrop, "return an enforced workload to audit when Cilium drops its traffic for policy reasons")
	f.StringVar(&o.apply, "apply", string(cluster.ApplyOff), "cluster delivery: off (only propose) or enforce (apply promoted policies with server-side apply)")
	f.BoolVar(&o.cluster.ClusterAuditMode, "cluster-audit-mode", false, "Cilium runs in policy-audit-mode: apply policies while still in audit; Hubble's AUDIT verdicts are the evidence")
	f.StringVar(&o.dryRun, "dry-run", string(cluster.DryRunNone), "none or server: send applies as server-side dry runs")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config, then $KUBECONFIG)")
	f.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader with a Lease: only the leader writes to the cluster and opens pull requests")
	f.StringVar(&o.leaseNamespace, "leader-elect-namespace", "kube-system", "namespace of the leader election Lease")
	f.StringVar(&o.leaseName, "leader-elect-name", "recommender", "name of the leader election Lease")
	f.StringVar(&o.ciliumNamespace, "cilium-namespace", "kube-system", "with a cluster connection: namespace of Cilium's ConfigMap cilium-config, whose cluster-name is the local cluster's name (must match --cluster-name when both are set)")
	f.BoolVar(&o.clusterPolicies, "cluster-policies", true, "with a cluster connection: include the cluster's existing CNPs/CCNPs in shadow evaluation")
	f.StringVar(&o.allowLocalhost, "allow-localhost", audit.AllowLocalhostAlways, "Cilium's allow-localhost setting: always (host may reach local pods) or policy")
	f.BoolVar(&o.policyDefaultLocal, flagPolicyDefaultLocal, true, helpPolicyDefaultLocal)
	f.DurationVar(&o.deliveryWarmup, "delivery-warmup", 10*time.Minute, "observe flows this long after start before any destructive write to the cluster (pruning, a new revision over one in force) and before a workload leaving the store retires its policy")
	f.Float64Var(&o.cluster.MaxPruneRatio, "max-prune-ratio", cluster.DefaultMaxPruneRatio, "refuse (and alert on) a sync that would prune more than this fraction of the policies recommender owns (one prune is always allowed)")
	f.BoolVar(&o.cluster.ForceConflicts, "force-conflicts", false, "take back owned policies another field manager changed (kubectl edit); off: report the drift and leave them")
	f.Float32Var(&o.kube.qps, "kube-api-qps", 20, "Kubernetes API requests per second (client-go's default of 5 makes a sync of many policies slower than the sync interval)")
	f.IntVar(&o.kube.burst, "kube-api-burst", 40, "Kubernetes API request burst")
	f.DurationVar(&o.kube.timeout, "kube-api-timeout", 30*time.Second, "timeout of every Kubernetes API request")
	addGitOpsFlags(f, &o.gitops)
	return cmd
}

func (o *runOptions) validate() error {
	var errs []error
	if o.db == "" {
		errs = append(errs, errors.New("--db is required"))
	}
	if err := o.src.validate(); err != nil {
		errs = append(errs, err)
	}
	rc, err := o.replicas.config(o.src, o.metricsAddr, o.store.MaxEdges)
	if err != nil {
		errs = append(errs, err)
	}
	// A stand-in summary's edges expire as its replica's own would (replicas.Config.Retention).
	rc.Retention = o.retention
	o.replicaSet = rc
	if o.once && o.src.fromRelay() {
		errs = append(errs, errors.New("--once needs --flows: a relay stream does not end"))
	}
	if o.batchSize <= 0 || o.batchInterval <= 0 {
		errs = append(errs, errors.New("--batch-size and --batch-interval must be positive"))
	}
	o.cluster.Apply = cluster.ApplyMode(o.apply)
	o.cluster.DryRun = cluster.DryRunMode(o.dryRun)
	o.cluster.PolicyKind = synth.PolicyKind(o.synth.kind)
	if o.namespaced() {
		o.cluster.Namespaces = o.src.relay.Namespaces
	}
	if err := o.cluster.Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.replicas.enabled() && (o.applies() || o.gitops.Enabled()) && !o.leaderElect {
		errs = append(errs, fmt.Errorf("--%s %d with delivery (--apply, --dry-run, --git-url) needs --leader-elect: every replica would deliver", flagReplicas, o.replicas.count))
	}
	if o.gitops.Enabled() {
		if err := o.gitops.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	switch {
	case len(o.src.relay.Nodes) > 0 && (o.applies() || o.gitops.Enabled()),
		len(o.src.relay.Namespaces) > 0 && o.gitops.Enabled(),
		len(o.src.relay.Namespaces) > 0 && o.applies() && !o.namespaced():
		// Pruning in the cluster and the files of the policy repository are owned per daemon:
		// shards delivering side by side would delete each other's policies. CNPs of a
		// --namespace shard are the exception: the applier lists, owns and prunes only the CNPs
		// of its namespaces (issue 18).
		errs = append(errs, fmt.Errorf("--%s/--%s shard what a daemon observes; a shard cannot also deliver (--apply, --dry-run, --git-url) except a --%s shard applying --%s %s to its namespaces: write proposals with --out and review or merge them",
			flagNamespace, flagNodeName, flagNamespace, flagPolicyKind, synth.KindCNP))
	}
	if o.syncInterval <= 0 {
		errs = append(errs, fmt.Errorf("--sync-interval %s: must be positive", o.syncInterval))
	}
	if o.deliveryWarmup < 0 {
		errs = append(errs, fmt.Errorf("--delivery-warmup %s: must not be negative", o.deliveryWarmup))
	}
	if err := o.kube.validate(); err != nil {
		errs = append(errs, err)
	}
	// Checked here, before the store file is created or a port opened.
	if err := o.lifecycle.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// namespaced reports whether the daemon runs for its --namespace list only, writing CNPs: it
// then reads and writes in those namespaces alone, with the namespaced Roles of
// deploy/namespaced, and never lists anything cluster-wide.
func (o *runOptions) namespaced() bool {
	return synth.PolicyKind(o.synth.kind).Namespaced() && len(o.src.relay.Namespaces) > 0
}

// needsCluster reports whether the flags ask for a Kubernetes connection.
func (o *runOptions) needsCluster() bool {
	return o.applies() || o.leaderElect || o.kubeconfig != "" || o.replicas.leases()
}

// applies reports whether policies are sent to the API server: for real, or as server-side
// dry runs that show what would change.
func (o *runOptions) applies() bool {
	return o.cluster.Apply != cluster.ApplyOff || o.cluster.DryRun == cluster.DryRunServer
}

func runDaemon(ctx context.Context, g *globalOptions, o *runOptions, cmd *cobra.Command) (err error) {
	o.src.follow = true
	o.src.stdin = cmd.InOrStdin()
	if err := o.validate(); err != nil {
		return err
	}
	synthCfg, err := o.synth.config(cmd.Flags().Changed)
	if err != nil {
		return err
	}
	o.src.peerCluster = synthCfg.ClusterName
	log, err := g.stderrLogger()
	if err != nil {
		return err
	}
	ctx, stop := signalContext(ctx)
	defer stop()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newBuildInfoCollector())

	store, err := aggregate.Open(o.db, aggregate.Options{Timeout: o.lockTimeout, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	agg, err := aggregate.NewAggregator(o.store, log, reg)
	if err != nil {
		return err
	}
	// The relay reads from the oldest flow it holds; the Ingester drops what the store already
	// has. Resuming the relay at the cursor instead would lose the first observation of a
	// connection the Folder needs to fold its second one.
	var pods *flows.LivePods
	if o.needsCluster() {
		pods = &flows.LivePods{}
		o.src.pods = pods
	}
	// With replicas the node source reads this replica's nodes, starting a node that moved
	// here where the others' summaries say it was read to; positions is set once it exists.
	var set *replicas.Set
	var positions func() (*flows.Cursor, error)
	var evidence func() []lifecycle.Evidence
	// A daemon alone on the store of a replica of a larger set (--replicas lowered to 1)
	// still merges the others' last summaries, so their edges are not forgotten.
	alone := false
	if !o.replicas.enabled() {
		if alone, err = replicas.HasKept(store, log); err != nil {
			return err
		}
	}
	if o.replicas.enabled() || alone {
		id, err := store.Identity()
		if err != nil {
			return err
		}
		local := replicas.Local{Snapshot: agg.Snapshot, Positions: func() (*flows.Cursor, error) { return positions() },
			Evidence: func() []lifecycle.Evidence { return evidence() }, Store: id, Kept: store}
		if set, err = replicas.New(o.replicaSet, local, nil, log, reg); err != nil {
			return err
		}
		o.src.assign, o.src.start = set.Assignment(), set.Start
		if o.replicas.leases() {
			// No node is read until the first look at the Leases says which replicas live.
			_ = set.Assignment().SetMembers(nil)
		}
	}
	src, err := o.src.build(ctx, log, nil)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, src.Close()) }()

	flows.RegisterMetrics(reg, src.stats)
	deps := daemon.Deps{
		Log: log, Registry: reg, Source: src, Stats: src.stats,
		Store: store, Aggregator: agg, Unresolved: src.norm.Unresolved,
	}
	if src.live != nil {
		src.live.RegisterMetrics(reg)
		deps.Relay = src.live
	}
	switch {
	case alone:
		deps.Snapshot, deps.Peers = set.Snapshot, set.Peers
		log.Info("alone on the store of a replica set: the other replicas' kept summaries stand in", "summaries", set.StandIns())
	case set != nil:
		positions = replicas.StorePositions(store, src.nodes)
		deps.Snapshot, deps.Peers = set.Snapshot, set.Peers
		deps.Routes = map[string]http.Handler{"GET " + replicas.SummaryPath: set.Handler()}
		log.Info("replica of a set sharing the nodes", "index", o.replicaSet.Self, "replicas", len(o.replicaSet.URLs))
	}
	if o.metricsAddr != "" {
		if deps.MetricsListener, err = net.Listen("tcp", o.metricsAddr); err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
	}
	if o.pprofAddr != "" {
		if deps.PprofListener, err = net.Listen("tcp", o.pprofAddr); err != nil {
			return fmt.Errorf("--pprof-addr: %w", err)
		}
	}
	var membership *replicas.Membership
	if o.needsCluster() {
		if membership, err = o.wireCluster(ctx, &deps, reg, pods, &synthCfg, set, src.nodes); err != nil {
			return err
		}
	}
	if o.gitops.Enabled() {
		pub, err := gitops.New(o.gitops, gitops.SystemClock{}, log, reg)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, pub.Close()) }()
		deps.Publisher = pub
	}

	ingest := aggregate.IngesterConfig{BatchSize: o.batchSize, BatchInterval: o.batchInterval, Retention: o.retention}
	if alone {
		// The flows the stand-ins hold are not counted again when this daemon's source
		// reads their nodes from the oldest flow (a relay, a recording).
		ingest.ReadElsewhere = set.Positions()
	}
	dm, err := daemon.New(daemon.Config{
		SyncInterval:   o.syncInterval,
		OutDir:         o.out,
		Once:           o.once,
		Namespaces:     o.src.relay.Namespaces,
		Lifecycle:      o.lifecycle,
		Synth:          synthCfg,
		Audit:          audit.Config{ClusterName: synthCfg.ClusterName, PolicyAnyCluster: !o.policyDefaultLocal, AllowLocalhost: o.allowLocalhost},
		Ingest:         ingest,
		DeliveryWarmup: o.deliveryWarmup,
	}, deps)
	if err != nil {
		return err
	}
	evidence = dm.Evidence
	source := "relay " + o.src.relay.Server
	if o.src.fromPeers() {
		source = "nodes via peer service " + o.src.peers
	}
	if !o.src.fromRelay() {
		source = fmt.Sprintf("files %v", o.src.files)
	}
	log.Info("recommender running", "source", source, "store", o.db, "metrics", o.metricsAddr,
		"window", o.lifecycle.Window, "apply", o.cluster.Apply, "gitops", o.gitops.Enabled())
	if o.gitops.Enabled() {
		log.Info("gitops delivery", "config", o.gitops.String())
	}
	if membership != nil {
		// The Lease loop lives as long as the daemon: it ends with ctx, releasing the Lease
		// so the others take this replica's nodes at once.
		mctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- membership.Run(mctx) }()
		defer func() { stop(); err = errors.Join(err, <-done) }()
	}
	err = dm.Run(ctx)
	// What the source skipped is a metric while running (recommender_flows_skipped_total);
	// at the end it is said once, with the pods no selector was written for.
	s := src.stats.Snapshot()
	log.Info("flow source summary", "events", s.Events, "skipped", s.Skipped, "skipped_by_reason", s.SkipText(), "malformed", s.Malformed, "lost", s.Lost)
	if pods := src.norm.Unresolved(); len(pods) > 0 {
		log.Warn("no selector written for workloads known only by pod name", "reason", flows.SkipNoIdentity, "workloads", pods)
	}
	return err
}

// wireCluster connects to the API server for delivery, leader election and context, and
// settles synthCfg's cluster name with Cilium's.
// With --replica-membership=lease it returns the Membership driving set's assignment and
// nodes' streams, for the caller to run.
func (o *runOptions) wireCluster(ctx context.Context, deps *daemon.Deps, reg prometheus.Registerer, pods *flows.LivePods, synthCfg *synth.Config,
	set *replicas.Set, nodes *flows.NodesSource) (*replicas.Membership, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if o.kubeconfig != "" {
		rules.ExplicitPath = o.kubeconfig
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes config: %w", err)
	}
	rc.QPS, rc.Burst, rc.Timeout = o.kube.qps, o.kube.burst, o.kube.timeout
	// Typed clients for the three API groups read or written, not the whole clientset.
	core, err := corev1client.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	apps, err := appsv1client.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	coord, err := coordinationv1client.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	log := deps.Log
	var gate cluster.Gate
	if o.leaderElect {
		id, _ := os.Hostname()
		if v := os.Getenv("POD_NAME"); v != "" {
			id = v
		}
		ec := cluster.DefaultElectionConfig(id)
		ec.Namespace, ec.Name = o.leaseNamespace, o.leaseName
		el, err := cluster.NewElector(coord, ec, log, reg)
		if err != nil {
			return nil, err
		}
		log.Info("leader election", "lease", ec.Namespace+"/"+ec.Name, "identity", id,
			"takeover_within", ec.TakeoverBound())
		deps.Elector, gate = el, el
	}
	if o.applies() {
		ap, err := cluster.NewApplier(dyn, o.cluster, gate, log, reg)
		if err != nil {
			return nil, err
		}
		deps.Applier = ap
	}
	reader := cluster.NewReader(core, apps, dyn)
	if o.namespaced() {
		// No cluster-wide read: pods of other namespaces stay unresolved, and the cluster's
		// CCNPs (cluster-scoped) are not part of shadow evaluation.
		reader = reader.Scoped(o.src.relay.Namespaces)
		log.Info("namespaced mode: reading pods and CiliumNetworkPolicies of these namespaces only; shadow evaluation leaves the cluster's CiliumClusterwideNetworkPolicies out",
			"namespaces", o.src.relay.Namespaces)
	} else {
		// Cilium's configuration is in its namespace, which a team's namespaced daemon may not
		// read: there the name comes from --cluster-name or the flows.
		name, err := localClusterName(ctx, synthCfg.ClusterName, o.ciliumNamespace, reader.CiliumClusterName, log)
		if err != nil {
			return nil, err
		}
		synthCfg.ClusterName = name
	}
	deps.RefreshPods = func(ctx context.Context) error {
		ps, err := reader.Pods(ctx)
		if err != nil {
			return err
		}
		pods.Store(flows.NewPodTable(ps))
		return nil
	}
	if o.clusterPolicies {
		deps.ClusterPolicies = func(ctx context.Context) (*audit.Decoded, error) {
			ps, err := reader.Policies(ctx)
			if err != nil {
				return nil, err
			}
			return &audit.Decoded{CCNPs: ps.CCNPs, CNPs: ps.CNPs}, nil
		}
	}
	var membership *replicas.Membership
	if o.replicas.leases() {
		mc := o.replicas.membershipConfig(o.replicaSet.Self, o.leaseNamespace, o.leaseName)
		if membership, err = replicas.NewMembership(coord, mc, set.Assignment(), set.Handover(nodes.Release, nodes.Reassign), log); err != nil {
			return nil, err
		}
		set.WaitFor(membership.Others) // at start, replicas whose Lease expired are not waited for
		log.Info("replica membership by lease", "lease", mc.Namespace+"/"+mc.LeaseName(mc.Self), "identity", mc.Identity)
	}
	log.Info("connected to kubernetes", "host", rc.Host, "leaderElect", o.leaderElect)
	return membership, nil
}

// localClusterName settles the name of the cluster policies are proposed for (issue 16) with
// the one Cilium's agents use, read by cilium (Reader.CiliumClusterName) from namespace:
// flag (--cluster-name) unset takes Cilium's, and a flag that names another cluster is an
// error, since every selector would name the wrong cluster. Without Cilium's configuration
// (no cilium-config there, or no Role to read it) it logs why once and returns flag, so the
// name comes from the flag or, unset, from the flows, as without a cluster connection.
// Other errors stop the start: guessing could propose policies for the wrong cluster.
func localClusterName(ctx context.Context, flag, namespace string, cilium func(context.Context, string) (string, error), log *slog.Logger) (string, error) {
	name, err := cilium(ctx, namespace)
	switch {
	case apierrors.IsNotFound(err) || apierrors.IsForbidden(err):
		log.Warn("cilium configuration not readable: the cluster name comes from --cluster-name or the flows",
			"configmap", namespace+"/"+cluster.CiliumConfigMap, "cluster_name", flag, "err", err)
		return flag, nil
	case err != nil:
		return "", fmt.Errorf("cluster name from Cilium's configuration (--cilium-namespace %s): %w", namespace, err)
	case name == "":
		log.Warn("cilium configuration names no cluster: the cluster name comes from --cluster-name or the flows",
			"configmap", namespace+"/"+cluster.CiliumConfigMap, "cluster_name", flag)
		return flag, nil
	case flag != "" && flag != name:
		return "", fmt.Errorf("--cluster-name %q differs from Cilium's cluster-name %q (configmap %s/%s): policies would select peers of the wrong cluster", flag, name, namespace, cluster.CiliumConfigMap)
	}
	if flag == "" {
		log.Info("cluster name from cilium configuration", "cluster_name", name, "configmap", namespace+"/"+cluster.CiliumConfigMap)
	}
	return name, nil
}
