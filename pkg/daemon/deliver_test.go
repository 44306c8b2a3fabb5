package daemon

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	appsv1client "k8s.io/client-go/kubernetes/typed/apps/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/recommender/recommender/internal/k8stest"
	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/cluster"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// kube is the real kube-apiserver + etcd of this package's delivery tests (skipped unless
// RECOMMENDER_K8S is set; CI sets it).
var kube *k8stest.Cluster

func TestMain(m *testing.M) { os.Exit(k8stest.Main(m, &kube)) }

// deliveryEnv is the cluster side of a delivery test: clients, and the policies left to clean.
type deliveryEnv struct {
	t      *testing.T
	dyn    dynamic.Interface
	writes k8stest.Writes
	// counted writes through the applier's client
	counted dynamic.Interface
	coord   coordinationv1client.CoordinationV1Interface
}

func newDeliveryEnv(t *testing.T) *deliveryEnv {
	t.Helper()
	kube.Require(t)
	e := &deliveryEnv{t: t}
	var err error
	if e.dyn, err = dynamic.NewForConfig(kube.Config); err != nil {
		t.Fatal(err)
	}
	if e.counted, err = dynamic.NewForConfig(e.writes.Wrap(kube.Config)); err != nil {
		t.Fatal(err)
	}
	if e.coord, err = coordinationv1client.NewForConfig(kube.Config); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		list, err := e.dyn.Resource(cluster.CCNPResource).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		for _, it := range list.Items {
			if err := e.dyn.Resource(cluster.CCNPResource).Delete(ctx, it.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return e
}

// inCluster returns our policies in the cluster: name -> resourceVersion, and how many were
// applied as enforced.
func (e *deliveryEnv) inCluster() (map[string]string, int) {
	e.t.Helper()
	list, err := e.dyn.Resource(cluster.CCNPResource).List(e.t.Context(), metav1.ListOptions{LabelSelector: synth.LabelManagedBy + "=" + synth.ManagedByValue})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	enforced := 0
	for _, it := range list.Items {
		out[it.GetName()] = it.GetResourceVersion()
		if it.GetAnnotations()[cluster.AnnotationLifecycle] == cluster.LifecycleEnforced {
			enforced++
		}
	}
	return out, enforced
}

// replicaRun is one daemon process of a delivery test.
type replicaRun struct {
	db string
	// recording is a file in testdata/flows, or an absolute path.
	recording     string
	warmup        time.Duration
	retention     time.Duration
	maxPruneRatio float64
	elector       *cluster.Elector
	// kind and namespaces are --policy-kind and --namespace (CNPs in those namespaces only).
	kind       synth.PolicyKind
	namespaces []string
	// until, when set, runs the daemon (not --once) until it returns true on the registry.
	until func(prometheus.Gatherer) bool
}

// run starts a daemon on the run's store and recording with an Applier on the real API
// server, waits for it to end (Once, or until), closes the store and returns the registry.
func (e *deliveryEnv) run(r replicaRun) *prometheus.Registry {
	t := e.t
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	ic := aggregate.IngesterConfig{Retention: r.retention}
	if r.retention > 0 {
		ic.SweepInterval = 10 * time.Millisecond // retention runs while the recording is read
	}
	path := r.recording
	if !filepath.IsAbs(path) {
		path = filepath.Join(recordings, path)
	}
	reg := prometheus.NewPedanticRegistry()
	deps, closeDeps := openDeps(t, depsConfig{db: r.db, recording: path, reg: reg})
	defer closeDeps()
	cc := cluster.DefaultConfig()
	cc.Apply = cluster.ApplyEnforce
	if r.maxPruneRatio > 0 {
		cc.MaxPruneRatio = r.maxPruneRatio
	}
	cc.PolicyKind, cc.Namespaces = r.kind, r.namespaces
	var gate cluster.Gate
	if r.elector != nil {
		gate = r.elector
	}
	ap, err := cluster.NewApplier(e.counted, cc, gate, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	sc := synth.DefaultConfig()
	sc.MinObserve = 0
	if r.kind != "" {
		sc.PolicyKind = r.kind
	}
	deps.Applier = ap
	if r.elector != nil {
		deps.Elector = r.elector
	}
	// A recording is read in one go and synced at its start and end only, so what a run
	// proposes and promotes does not depend on how fast the machine reads it.
	interval := time.Hour
	if r.until != nil {
		interval = 50 * time.Millisecond
	}
	dm, err := New(Config{
		SyncInterval:   interval,
		Once:           r.until == nil,
		Lifecycle:      lifecycle.Config{Window: time.Minute, MaxFlowGap: 5 * time.Minute, MinWindowFlows: 1, MaxLostRatio: 0.01, Learn: true},
		Synth:          sc,
		DeliveryWarmup: r.warmup,
		Ingest:         ic,
		Namespaces:     r.namespaces,
	}, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- dm.Run(ctx) }()
	if r.until != nil {
		deadline := time.After(2 * time.Minute)
		for !r.until(reg) {
			select {
			case err := <-done:
				t.Fatalf("daemon ended early: %v", err)
			case <-deadline:
				t.Fatal("daemon did not reach the expected state")
			case <-time.After(20 * time.Millisecond):
			}
		}
		cancel()
	}
	if err := <-done; err != nil {
		t.Fatalf("daemon: %v", err)
	}
	return reg
}

// gauge reads one series from a registry (0 when absent).
func gauge(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// enforceBoutique runs the learn -> audit -> promote path on the boutique recordings with a
// store at db and returns the policies it put in force.
func (e *deliveryEnv) enforceBoutique(db string) map[string]string {
	e.t.Helper()
	e.run(replicaRun{db: db, recording: "boutique.jsonl"})      // learn: proposals in audit
	e.run(replicaRun{db: db, recording: "boutique-day2.jsonl"}) // a clean window: promoted and applied
	policies, enforced := e.inCluster()
	if enforced < 5 || enforced != len(policies) {
		e.t.Fatalf("after a clean window the cluster holds %d policies, %d enforced; want at least 5, all enforced", len(policies), enforced)
	}
	return policies
}

// Ensure a replica whose store was deleted (a new or lost volume) prunes nothing and
// rewrites nothing: the enforced policies are adopted as they are (issue 20).
func TestDeliveryDeletedStoreKeepsEnforcement(t *testing.T) {
	e := newDeliveryEnv(t)
	db := filepath.Join(t.TempDir(), "a.db")
	before := e.enforceBoutique(db)
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}

	// The restarted replica sees other traffic first: it knows none of the policies in force.
	e.writes.Reset()
	reg := e.run(replicaRun{db: db, recording: "starwars.jsonl"})
	after, _ := e.inCluster()
	for name, rv := range before {
		if after[name] != rv {
			t.Errorf("%s: resourceVersion %s -> %q after a replica with an empty store synced, want it untouched", name, rv, after[name])
		}
	}
	// kube-system/coredns serves the Star Wars pods too: that store proposes it and adopts the
	// revision in force; every other policy is kept without being known.
	if got := gauge(t, reg, "recommender_cluster_policies", map[string]string{"state": "kept"}); int(got) != len(before)-1 {
		t.Errorf("recommender_cluster_policies{state=kept} = %v, want %d", got, len(before)-1)
	}

	// Then the same traffic as before: the same revisions are proposed and adopted as
	// enforced, with no write at all.
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	e.writes.Reset()
	reg = e.run(replicaRun{db: db, recording: "boutique.jsonl"})
	after, _ = e.inCluster()
	for name, rv := range before {
		if after[name] != rv {
			t.Errorf("%s changed (%s -> %q) when a fresh store proposed the revision in force", name, rv, after[name])
		}
	}
	if n := e.writes.Count(); n != 0 {
		t.Errorf("fresh store with the same traffic sent %d writes, want 0", n)
	}
	if got := gauge(t, reg, "recommender_workloads", map[string]string{"state": "enforced"}); int(got) != len(before) {
		t.Errorf("recommender_workloads{state=enforced} = %v after adoption, want %d", got, len(before))
	}

}

// Ensure a standby with an empty store that takes the lease (the second replica of the
// StatefulSet, after the leader stopped) writes nothing destructive (issue 20).
func TestDeliveryFreshReplicaTakingLease(t *testing.T) {
	e := newDeliveryEnv(t)
	before := e.enforceBoutique(filepath.Join(t.TempDir(), "a.db"))

	ec := cluster.DefaultElectionConfig("replica-b")
	ec.Namespace, ec.Name = "default", "deliver-takeover"
	ec.RetryPeriod = 100 * time.Millisecond
	el, err := cluster.NewElector(e.coord, ec, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.writes.Reset()
	e.run(replicaRun{
		db: filepath.Join(t.TempDir(), "b.db"), recording: "starwars.jsonl", elector: el,
		until: func(g prometheus.Gatherer) bool {
			// Leading, and a sync finished since: the one that would have pruned.
			return el.IsLeader() && gauge(t, g, "recommender_cluster_policies", map[string]string{"state": "kept"}) > 0
		},
	})
	after, _ := e.inCluster()
	for name, rv := range before {
		if after[name] != rv {
			t.Errorf("%s: resourceVersion %s -> %q after a fresh replica took the lease, want it untouched", name, rv, after[name])
		}
	}
}

// Ensure a store restored from an old backup, whose clock then jumps past retention, neither
// prunes the policies it no longer sees nor replaces the newer revisions in force (issue 20).
func TestDeliveryStoreRestoredFromOldBackup(t *testing.T) {
	e := newDeliveryEnv(t)
	dir := t.TempDir()
	db, backup := filepath.Join(dir, "a.db"), filepath.Join(dir, "backup.db")
	e.run(replicaRun{db: db, recording: "boutique.jsonl"})
	copyFile(t, db, backup)
	e.run(replicaRun{db: db, recording: "boutique-day2.jsonl"})
	e.run(replicaRun{db: db, recording: "boutique-newconn.jsonl"}) // learns new edges, new revisions
	before, _ := e.inCluster()

	// The backup comes back; a day later's traffic moves its clock past a one-hour retention.
	e.writes.Reset()
	reg := e.run(replicaRun{db: backup, recording: "boutique-newconn.jsonl", retention: time.Hour, warmup: 10 * time.Minute})
	after, _ := e.inCluster()
	for name, rv := range before {
		if after[name] != rv {
			t.Errorf("%s: resourceVersion %s -> %q after the restored store synced, want it untouched", name, rv, after[name])
		}
	}
	if n := e.writes.Count(); n != 0 {
		t.Errorf("restored store sent %d writes, want none before --delivery-warmup", n)
	}
	if got := gauge(t, reg, "recommender_cluster_prunes_refused_total", nil); got != 0 {
		t.Errorf("prunes refused = %v: nothing should even have been offered for pruning", got)
	}
}

// Ensure what a store saw and then lost after it had observed long enough is retired by
// evidence: a mass retirement is refused (and counted for the alert), and within
// --max-prune-ratio the retired policies are pruned while the ones still seen stay.
func TestDeliveryPrunesRetired(t *testing.T) {
	e := newDeliveryEnv(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "a.db")
	before := e.enforceBoutique(db)
	// A day later only the cart and its redis talk, and retention is an hour: the rest retires.
	later := filepath.Join(dir, "cart-only.jsonl")
	filterLines(t, filepath.Join(recordings, "boutique-newconn.jsonl"), later, "k8s:app=redis-cart")
	// The first run moves the flow clock a day on; retention expires at the next start.
	e.run(replicaRun{db: db, recording: later, retention: time.Hour})
	reg := e.run(replicaRun{db: db, recording: later, retention: time.Hour})
	if after, _ := e.inCluster(); len(after) != len(before) {
		t.Errorf("%d of %d policies left after a refused mass prune, want all", len(after), len(before))
	}
	if got := gauge(t, reg, "recommender_cluster_prunes_refused_total", nil); got < 1 {
		t.Errorf("recommender_cluster_prunes_refused_total = %v, want the mass prune refused", got)
	}

	e.run(replicaRun{db: db, recording: later, retention: time.Hour, maxPruneRatio: 1})
	after, _ := e.inCluster()
	var want []string
	for name := range before {
		if name == "boutique-cartservice" || name == "boutique-redis-cart" {
			want = append(want, name)
		}
	}
	var got []string
	for name := range after {
		got = append(got, name)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("after retiring by evidence the cluster holds %v, want %v (of %d)", got, want, len(before))
	}
}

// filterLines writes the lines of from that contain substr to to.
func filterLines(t *testing.T, from, to, substr string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, substr) {
			out = append(out, line...)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no line of %s contains %q", from, substr)
	}
	if err := os.WriteFile(to, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Ensure flows that name pods only by namespace and pod name (a field-masked Hubble export)
// become policies through the cluster's pods, read-only, with the selector a flow carrying
// labels would have given (issue 13).
func TestDeliveryResolvesLabelLessPods(t *testing.T) {
	kube.Require(t)
	core, err := corev1client.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	apps, err := appsv1client.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// Deployment -> ReplicaSet -> Pod, as the controllers (not running here) would have made them.
	controller := func(kind, name string, uid types.UID) []metav1.OwnerReference {
		yes := true
		return []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, UID: uid, Controller: &yes}}
	}
	for _, p := range []struct{ app, hash, pod string }{{"web", "6d5f8c7b9d", "x2x4k"}, {"api", "5c9d7f6b8", "q8w7e"}} {
		labels := map[string]string{"app": p.app}
		tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{ServiceAccountName: p.app, Containers: []corev1.Container{{Name: "c", Image: "example/c"}}}}
		dep, err := apps.Deployments("shop").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: p.app},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rsName := p.app + "-" + p.hash
		rs, err := apps.ReplicaSets("shop").Create(ctx, &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: rsName, OwnerReferences: controller("Deployment", p.app, dep.UID)},
			Spec:       appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: rsName + "-" + p.pod, Labels: map[string]string{"app": p.app, "pod-template-hash": p.hash},
				OwnerReferences: controller("ReplicaSet", rsName, rs.UID)},
			Spec: tmpl.Spec,
		}
		if _, err := core.Pods("shop").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			bg := context.Background()
			_ = core.Pods("shop").Delete(bg, pod.Name, metav1.DeleteOptions{})
			_ = apps.ReplicaSets("shop").Delete(bg, rsName, metav1.DeleteOptions{})
			_ = apps.Deployments("shop").Delete(bg, p.app, metav1.DeleteOptions{})
		})
	}
	reader := cluster.NewReader(core, apps, dyn)
	live := &flows.LivePods{}

	dir := t.TempDir()
	d, closeDeps := openDeps(t, depsConfig{db: filepath.Join(dir, "db"), recording: "../flows/testdata/shapes/exporter-fieldmask.jsonl",
		norm: flows.NewNormalizer(nil).WithResolver(live)})
	defer closeDeps()
	d.RefreshPods = func(ctx context.Context) error {
		ps, err := reader.Pods(ctx)
		if err != nil {
			return err
		}
		live.Store(flows.NewPodTable(ps))
		return nil
	}
	sc := synth.DefaultConfig()
	sc.MinObserve, sc.MinFlows = 0, 1
	out := filepath.Join(dir, "out")
	dm, err := New(Config{SyncInterval: time.Hour, Once: true, OutDir: out, Lifecycle: lifecycle.DefaultConfig(), Synth: sc}, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := dm.Run(ctx); err != nil {
		t.Fatal(err)
	}
	api, err := os.ReadFile(filepath.Join(out, "shop-api.yaml"))
	if err != nil {
		report, _ := os.ReadFile(filepath.Join(out, "REPORT.md"))
		t.Fatalf("no policy for the resolved api pods: %v\n%s", err, report)
	}
	for _, want := range []string{"k8s:app: api", "k8s:app: web", `port: "8080"`, "shop/Deployment/api"} {
		if !strings.Contains(string(api), want) {
			t.Errorf("shop-api.yaml lacks %q:\n%s", want, api)
		}
	}
	if strings.Contains(string(api), "pod-template-hash") {
		t.Errorf("shop-api.yaml selects on pod-template-hash:\n%s", api)
	}
}

// Ensure a daemon for one namespace writing CiliumNetworkPolicies (a team's, issue 18) learns,
// promotes and applies CNPs in that namespace only, and that a replica whose store was deleted
// adopts them from the cluster with no write at all, as it does CCNPs.
func TestDeliveryNamespacedCNPs(t *testing.T) {
	e := newDeliveryEnv(t)
	const ns = "boutique"
	core, err := corev1client.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := core.Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	cnps := e.dyn.Resource(cluster.CNPResource).Namespace(ns)
	t.Cleanup(func() {
		if err := cnps.DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	inNamespace := func() (map[string]string, int) {
		t.Helper()
		list, err := cnps.List(t.Context(), metav1.ListOptions{LabelSelector: synth.LabelManagedBy + "=" + synth.ManagedByValue})
		if err != nil {
			t.Fatal(err)
		}
		out, enforced := map[string]string{}, 0
		for _, it := range list.Items {
			out[it.GetName()] = it.GetResourceVersion()
			if it.GetAnnotations()[cluster.AnnotationLifecycle] == cluster.LifecycleEnforced {
				enforced++
			}
		}
		return out, enforced
	}
	db := filepath.Join(t.TempDir(), "a.db")
	team := func(recording string) replicaRun {
		return replicaRun{db: db, recording: recording, kind: synth.KindCNP, namespaces: []string{ns}}
	}
	e.run(team("boutique.jsonl"))
	e.run(team("boutique-day2.jsonl"))
	before, enforced := inNamespace()
	if enforced < 5 || enforced != len(before) {
		t.Fatalf("after a clean window %s holds %d CNPs, %d enforced; want at least 5, all enforced", ns, len(before), enforced)
	}
	if ccnps, _ := e.inCluster(); len(ccnps) != 0 {
		t.Errorf("CCNPs written in CNP mode: %v", ccnps)
	}
	for name := range before {
		if !strings.HasPrefix(name, ns+"-") {
			t.Errorf("CNP %s in %s is not one of %s's workloads", name, ns, ns)
		}
	}

	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	e.writes.Reset()
	reg := e.run(team("boutique.jsonl"))
	after, _ := inNamespace()
	for name, rv := range before {
		if after[name] != rv {
			t.Errorf("%s changed (%s -> %q) when a fresh store proposed the revision in force", name, rv, after[name])
		}
	}
	if n := e.writes.Count(); n != 0 {
		t.Errorf("fresh store with the same traffic sent %d writes, want 0", n)
	}
	if got := gauge(t, reg, "recommender_workloads", map[string]string{"state": "enforced"}); int(got) != len(before) {
		t.Errorf("recommender_workloads{state=enforced} = %v after adoption, want %d", got, len(before))
	}
}
