package cluster

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/policy/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	appsv1client "k8s.io/client-go/kubernetes/typed/apps/v1"
	authorizationv1client "k8s.io/client-go/kubernetes/typed/authorization/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/recommender/recommender/internal/k8stest"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replicas"
	"github.com/recommender/recommender/pkg/synth"
)

// env is the real kube-apiserver + etcd shared by this package's tests. The
// tests run one after another: Sync prunes every managed CCNP it was not
// given, so each test deletes what it created.
var env *k8stest.Cluster

func TestMain(m *testing.M) { os.Exit(k8stest.Main(m, &env)) }

type clients struct {
	dyn   dynamic.Interface
	core  corev1client.CoreV1Interface
	apps  appsv1client.AppsV1Interface
	coord coordinationv1client.CoordinationV1Interface
}

func newClients(t *testing.T, cfg *rest.Config) clients {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	apps, err := appsv1client.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	coord, err := coordinationv1client.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return clients{dyn: dyn, core: core, apps: apps, coord: coord}
}

// admin returns admin clients and deletes, after the test, every CCNP the
// test left behind.
func admin(t *testing.T) clients {
	t.Helper()
	env.Require(t)
	c := newClients(t, env.Config)
	t.Cleanup(func() {
		ctx := context.Background()
		list, err := c.dyn.Resource(CCNPResource).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		for _, it := range list.Items {
			if err := c.dyn.Resource(CCNPResource).Delete(ctx, it.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return c
}

func newApplier(t *testing.T, dyn dynamic.Interface, cfg Config, gate Gate) *Applier {
	t.Helper()
	a, err := NewApplier(dyn, cfg, gate, testLogger(t), prometheus.NewPedanticRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func enforce() Config {
	return Config{Apply: ApplyEnforce, DryRun: DryRunNone, MaxPruneRatio: DefaultMaxPruneRatio}
}

func promoted(ps ...*ciliumv2.CiliumClusterwideNetworkPolicy) []Desired {
	var ds []Desired
	for _, p := range ps {
		ds = append(ds, Desired{Policy: p, Promoted: true})
	}
	return ds
}

// plan is a destructive Plan holding ds that retires the given policies.
func plan(ds []Desired, retired ...*ciliumv2.CiliumClusterwideNetworkPolicy) Plan {
	p := Plan{Desired: ds, Destructive: true}
	for _, r := range retired {
		p.Retired = append(p.Retired, retire(r))
	}
	return p
}

// retire names p as retired at the revision Sync writes for it.
func retire(p *ciliumv2.CiliumClusterwideNetworkPolicy) Retired {
	rev, err := synth.Revision(p.Spec)
	if err != nil {
		panic(err)
	}
	return Retired{Name: p.Name, Revisions: []string{"sha256:" + rev}}
}

// getCCNP returns the named CCNP, or nil when it does not exist.
func getCCNP(t *testing.T, dyn dynamic.Interface, name string) *unstructured.Unstructured {
	t.Helper()
	u, err := dyn.Resource(CCNPResource).Get(t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// specJSON is the canonical JSON of a policy's spec, for comparing what was
// applied with what the cluster holds.
func specJSON(t *testing.T, spec any) string {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	b, err = json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func wantActions(t *testing.T, res Result, want map[string]Action) {
	t.Helper()
	got := map[string]Action{}
	for _, c := range res.Changes {
		got[c.Name] = c.Action
	}
	if len(got) != len(want) {
		t.Errorf("Sync() changes = %v, want %v", got, want)
		return
	}
	for name, a := range want {
		if got[name] != a {
			t.Errorf("Sync() change of %s = %q, want %q (all: %v)", name, got[name], a, got)
		}
	}
}

// Ensure Sync creates, leaves alone, updates and prunes our policies, and
// that what the cluster holds is what was applied.
func TestSyncApplyIdempotentPrune(t *testing.T) {
	c := admin(t)
	a := newApplier(t, c.dyn, enforce(), nil)
	web, api8080 := testPolicy("sync-web", "web", "80"), testPolicy("sync-api", "api", "8080")

	res, err := a.Sync(t.Context(), plan(promoted(web, api8080)))
	if err != nil {
		t.Fatalf("Sync() = %v", err)
	}
	wantActions(t, res, map[string]Action{"sync-web": ActionCreated, "sync-api": ActionCreated})
	got := getCCNP(t, c.dyn, "sync-web")
	if got == nil {
		t.Fatal("sync-web not in the cluster after Sync")
	}
	if got.GetLabels()[synth.LabelManagedBy] != synth.ManagedByValue {
		t.Errorf("labels = %v, want %s=%s", got.GetLabels(), synth.LabelManagedBy, synth.ManagedByValue)
	}
	if s, want := specJSON(t, got.Object["spec"]), specJSON(t, web.Spec); s != want {
		t.Errorf("spec in cluster = %s, want %s", s, want)
	}
	managers := map[string]bool{}
	for _, mf := range got.GetManagedFields() {
		managers[mf.Manager+"/"+string(mf.Operation)] = true
	}
	if !managers[FieldManager+"/Apply"] {
		t.Errorf("managed fields = %v, want %s/Apply", managers, FieldManager)
	}
	rv := got.GetResourceVersion()

	// Re-applying the same state (a restart) writes nothing.
	res, err = a.Sync(t.Context(), plan(promoted(web, api8080)))
	if err != nil {
		t.Fatalf("second Sync() = %v", err)
	}
	wantActions(t, res, map[string]Action{"sync-web": ActionUnchanged, "sync-api": ActionUnchanged})
	if got := getCCNP(t, c.dyn, "sync-web").GetResourceVersion(); got != rv {
		t.Errorf("resourceVersion after idempotent Sync = %s, want %s", got, rv)
	}

	// A policy no longer desired but not retired either (a store that lost it) is kept.
	web2 := testPolicy("sync-web", "web", "8443")
	res, err = a.Sync(t.Context(), plan(promoted(web)))
	if err != nil {
		t.Fatalf("third Sync() = %v", err)
	}
	wantActions(t, res, map[string]Action{"sync-web": ActionUnchanged, "sync-api": ActionKept})

	// A change is applied; a retired policy is pruned.
	res, err = a.Sync(t.Context(), plan(promoted(web2), api8080))
	if err != nil {
		t.Fatalf("fourth Sync() = %v", err)
	}
	wantActions(t, res, map[string]Action{"sync-web": ActionConfigured, "sync-api": ActionPruned})
	if !slices.Equal(res.Settled, []string{"sync-api"}) {
		t.Errorf("Settled = %v, want [sync-api]", res.Settled)
	}
	if s, want := specJSON(t, getCCNP(t, c.dyn, "sync-web").Object["spec"]), specJSON(t, web2.Spec); s != want {
		t.Errorf("spec after update = %s, want %s", s, want)
	}
	if getCCNP(t, c.dyn, "sync-api") != nil {
		t.Error("sync-api still in the cluster, want it pruned")
	}
}

// Ensure a same-name policy that is not ours is reported and left alone, a
// foreign policy is never pruned, and a stale one of ours is.
func TestSyncOwnership(t *testing.T) {
	c := admin(t)
	ccnps := c.dyn.Resource(CCNPResource)
	create := func(p *ciliumv2.CiliumClusterwideNetworkPolicy) *unstructured.Unstructured {
		t.Helper()
		p = p.DeepCopy()
		p.APIVersion, p.Kind = "cilium.io/v2", "CiliumClusterwideNetworkPolicy"
		raw, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		var u unstructured.Unstructured
		if err := u.UnmarshalJSON(raw); err != nil {
			t.Fatal(err)
		}
		unstructured.RemoveNestedField(u.Object, "status")
		out, err := ccnps.Create(t.Context(), &u, metav1.CreateOptions{FieldManager: "helm"})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	foreign := testPolicy("own-shared", "web", "80")
	foreign.Labels = map[string]string{synth.LabelManagedBy: "helm"}
	foreignObj := create(foreign)
	unlabeledObj := create(testPolicy("own-unlabeled", "db", "5432"))
	stale := testPolicy("own-stale", "old", "80")
	stale.Labels = map[string]string{synth.LabelManagedBy: synth.ManagedByValue}
	stale.Annotations = map[string]string{synth.AnnotationRevision: retire(stale).Revisions[0]}
	create(stale)

	a := newApplier(t, c.dyn, enforce(), nil)
	res, err := a.Sync(t.Context(), plan(promoted(testPolicy("own-shared", "web", "9999"), testPolicy("own-mine", "api", "8080")),
		stale, foreign, testPolicy("own-unlabeled", "db", "5432")))
	if err != nil {
		t.Fatalf("Sync() = %v", err)
	}
	wantActions(t, res, map[string]Action{"own-shared": ActionNotOwned, "own-mine": ActionCreated, "own-stale": ActionPruned})
	if got := res.Conflicts(); len(got) != 1 || got[0].Name != "own-shared" {
		t.Errorf("Conflicts() = %v, want own-shared only", got)
	}
	for _, ch := range res.Changes {
		if ch.Name != "own-shared" {
			continue
		}
		var notOwned *NotOwnedError
		if !errors.As(ch.Err, &notOwned) || notOwned.ManagedBy != "helm" {
			t.Errorf("change of own-shared Err = %v, want *NotOwnedError managed by helm", ch.Err)
		}
	}
	for _, before := range []*unstructured.Unstructured{foreignObj, unlabeledObj} {
		after := getCCNP(t, c.dyn, before.GetName())
		if after == nil {
			t.Errorf("%s deleted, want it left alone", before.GetName())
			continue
		}
		if after.GetResourceVersion() != before.GetResourceVersion() {
			t.Errorf("%s changed (resourceVersion %s -> %s), want it left alone", before.GetName(), before.GetResourceVersion(), after.GetResourceVersion())
		}
	}
	if getCCNP(t, c.dyn, "own-stale") != nil {
		t.Error("own-stale still in the cluster, want it pruned")
	}

	// Someone takes our policy over by changing the label: Sync stops touching it.
	mine := getCCNP(t, c.dyn, "own-mine")
	mine.SetLabels(map[string]string{synth.LabelManagedBy: "someone-else"})
	if _, err := ccnps.Update(t.Context(), mine, metav1.UpdateOptions{FieldManager: "kubectl"}); err != nil {
		t.Fatal(err)
	}
	res, err = a.Sync(t.Context(), plan(nil, testPolicy("own-mine", "api", "8080")))
	if err != nil {
		t.Fatalf("Sync(nothing) = %v", err)
	}
	wantActions(t, res, map[string]Action{})
	if getCCNP(t, c.dyn, "own-mine") == nil {
		t.Error("own-mine deleted after it changed owner, want it left alone")
	}
}

// Ensure a server dry-run validates without persisting anything, and that
// the API server really validates against the CRD schema.
func TestSyncDryRun(t *testing.T) {
	c := admin(t)
	existing := testPolicy("dry-existing", "web", "80")
	if _, err := newApplier(t, c.dyn, enforce(), nil).Sync(t.Context(), plan(promoted(existing))); err != nil {
		t.Fatal(err)
	}
	rv := getCCNP(t, c.dyn, "dry-existing").GetResourceVersion()

	// world-ipv4 is not in the CRD's toEntities enum (CILIUM-NOTES).
	invalid := testPolicy("dry-invalid", "web", "80")
	invalid.Spec.Egress = []api.EgressRule{{EgressCommonRule: api.EgressCommonRule{ToEntities: api.EntitySlice{"world-ipv4"}}}}

	for _, apply := range []ApplyMode{ApplyOff, ApplyEnforce} {
		t.Run("apply="+string(apply), func(t *testing.T) {
			a := newApplier(t, c.dyn, Config{Apply: apply, DryRun: DryRunServer}, nil)
			res, err := a.Sync(t.Context(), plan(promoted(testPolicy("dry-new", "api", "8080"), invalid), existing))
			if !apierrors.IsInvalid(err) {
				t.Errorf("dry-run Sync() error = %v, want the invalid policy's Invalid error", err)
			}
			if !res.DryRun {
				t.Error("Result.DryRun = false, want true")
			}
			wantActions(t, res, map[string]Action{"dry-new": ActionCreated, "dry-invalid": ActionFailed, "dry-existing": ActionPruned})
			for _, name := range []string{"dry-new", "dry-invalid"} {
				if getCCNP(t, c.dyn, name) != nil {
					t.Errorf("%s exists after a dry-run, want nothing persisted", name)
				}
			}
			got := getCCNP(t, c.dyn, "dry-existing")
			if got == nil || got.GetResourceVersion() != rv {
				t.Errorf("dry-existing changed by a dry-run: %v", got)
			}
		})
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Ensure policies still in audit reach the cluster only in cluster audit mode,
// and are taken out when the cluster enforces again.
func TestSyncClusterAuditMode(t *testing.T) {
	c := admin(t)
	desired := []Desired{
		{Policy: testPolicy("audit-promoted", "web", "80"), Promoted: true},
		{Policy: testPolicy("audit-pending", "api", "8080"), Promoted: false},
	}
	auditCfg := enforce()
	auditCfg.ClusterAuditMode = true
	res, err := newApplier(t, c.dyn, auditCfg, nil).Sync(t.Context(), plan(desired))
	if err != nil {
		t.Fatal(err)
	}
	wantActions(t, res, map[string]Action{"audit-promoted": ActionCreated, "audit-pending": ActionCreated})

	res, err = newApplier(t, c.dyn, enforce(), nil).Sync(t.Context(), plan(desired))
	if err != nil {
		t.Fatal(err)
	}
	wantActions(t, res, map[string]Action{"audit-promoted": ActionUnchanged, "audit-pending": ActionPruned})
	if getCCNP(t, c.dyn, "audit-pending") != nil {
		t.Error("audit-pending still in an enforcing cluster, want it pruned")
	}
	res, err = newApplier(t, c.dyn, enforce(), nil).Sync(t.Context(), plan(desired))
	if err != nil {
		t.Fatal(err)
	}
	wantActions(t, res, map[string]Action{"audit-promoted": ActionUnchanged, "audit-pending": ActionHeld})

	// An earlier revision in force is never withdrawn for a newer one in audit.
	if _, err := newApplier(t, c.dyn, enforce(), nil).Sync(t.Context(), plan(promoted(testPolicy("audit-pending", "api", "8080")))); err != nil {
		t.Fatal(err)
	}
	res, err = newApplier(t, c.dyn, enforce(), nil).Sync(t.Context(), plan([]Desired{{Policy: testPolicy("audit-pending", "api", "9090")}}))
	if err != nil {
		t.Fatal(err)
	}
	wantActions(t, res, map[string]Action{"audit-pending": ActionHeld, "audit-promoted": ActionKept})
	if getCCNP(t, c.dyn, "audit-pending") == nil {
		t.Error("audit-pending withdrawn while its newer revision is in audit, want the enforced one kept")
	}
}

// replica is one in-process daemon replica: an Elector and an Applier it gates.
type replica struct {
	elector *Elector
	applier *Applier
	leading chan struct{} // closed when lead starts
	stopped chan struct{} // closed when lead returns
	exited  chan struct{} // closed when Run returned; err is then set
	err     error
	cancel  context.CancelFunc
}

// startReplica campaigns for lease with a short retry period, so hand-over
// after a release is quick, and a renew deadline of renew.
func startReplica(t *testing.T, c clients, lease, identity string, renew time.Duration) *replica {
	t.Helper()
	cfg := ElectionConfig{
		Namespace: "default", Name: lease, Identity: identity,
		LeaseDuration: renew + renew/2, RenewDeadline: renew, RetryPeriod: 100 * time.Millisecond,
	}
	e, err := NewElector(c.coord, cfg, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{
		elector: e,
		applier: newApplier(t, c.dyn, enforce(), e),
		leading: make(chan struct{}),
		stopped: make(chan struct{}),
		exited:  make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		r.err = e.Run(ctx, func(ctx context.Context) {
			close(r.leading)
			<-ctx.Done()
			close(r.stopped)
		})
		close(r.exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.exited
	})
	return r
}

// longRenew keeps a busy test machine from losing a lease by accident; a
// release hands over within RetryPeriod regardless.
const longRenew = 10 * time.Second

// await fails the test if ch is not closed before the test's deadline guard.
func await(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	guard := time.NewTimer(60 * time.Second)
	defer guard.Stop()
	select {
	case <-ch:
	case <-guard.C:
		t.Fatalf("%s did not happen", what)
	}
}

// Ensure only the lease holder writes, and that on hand-over the old
// leader's writes stop and the new leader's start.
func TestLeaderElectionHandOver(t *testing.T) {
	c := admin(t)
	leaseName := unique("handover")
	a := startReplica(t, c, leaseName, "replica-a", longRenew)
	await(t, a.leading, "replica-a leading")
	b := startReplica(t, c, leaseName, "replica-b", longRenew)

	if !a.elector.IsLeader() || b.elector.IsLeader() {
		t.Fatalf("IsLeader: a=%v b=%v, want a only", a.elector.IsLeader(), b.elector.IsLeader())
	}
	if _, err := b.applier.Sync(t.Context(), plan(promoted(testPolicy("lead-b", "web", "80")))); !errors.Is(err, ErrNotLeader) {
		t.Errorf("follower Sync() = %v, want ErrNotLeader", err)
	}
	if _, err := a.applier.Sync(t.Context(), plan(promoted(testPolicy("lead-a", "web", "80")))); err != nil {
		t.Errorf("leader Sync() = %v", err)
	}
	if getCCNP(t, c.dyn, "lead-b") != nil || getCCNP(t, c.dyn, "lead-a") == nil {
		t.Fatal("want lead-a written by the leader and no lead-b from the follower")
	}

	// Replica a shuts down: its work stops, the lease is released, b takes over.
	a.cancel()
	await(t, a.stopped, "replica-a lead returning")
	if a.elector.IsLeader() {
		t.Error("replica-a IsLeader after cancel, want false")
	}
	await(t, a.exited, "replica-a Run returning")
	if a.err != nil {
		t.Errorf("replica-a Run() = %v, want nil after cancel", a.err)
	}
	await(t, b.leading, "replica-b leading")
	if !b.elector.IsLeader() {
		t.Error("replica-b IsLeader = false after taking over")
	}

	if _, err := a.applier.Sync(t.Context(), plan(nil, testPolicy("lead-a", "web", "80"))); !errors.Is(err, ErrNotLeader) {
		t.Errorf("old leader Sync() = %v, want ErrNotLeader", err)
	}
	if getCCNP(t, c.dyn, "lead-a") == nil {
		t.Error("old leader's Sync pruned lead-a, want no write")
	}
	// The new leader's store never proposed lead-a: it adopts it as it is.
	res, err := b.applier.Sync(t.Context(), plan(promoted(testPolicy("lead-b", "web", "80"))))
	if err != nil {
		t.Fatalf("new leader Sync() = %v", err)
	}
	wantActions(t, res, map[string]Action{"lead-b": ActionCreated, "lead-a": ActionKept})

	lease, err := c.coord.Leases("default").Get(t.Context(), leaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := *lease.Spec.HolderIdentity; got != "replica-b" {
		t.Errorf("lease holder = %s, want replica-b", got)
	}
}

// Ensure losing the lease to another holder (not a clean hand-over) turns
// IsLeader off and makes Run return ErrLeaseLost.
func TestLeaderElectionLost(t *testing.T) {
	c := admin(t)
	leaseName := unique("stolen")
	a := startReplica(t, c, leaseName, "replica-a", 2*time.Second)
	await(t, a.leading, "replica-a leading")

	// Another holder overwrites the lease, as after a long network partition.
	// The holder renews every RetryPeriod, so the overwrite may conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		lease, err := c.coord.Leases("default").Get(t.Context(), leaseName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		thief := "replica-z"
		lease.Spec.HolderIdentity = &thief
		now := metav1.NewMicroTime(time.Now())
		lease.Spec.RenewTime = &now
		_, err = c.coord.Leases("default").Update(t.Context(), lease, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	await(t, a.stopped, "replica-a noticing the lost lease")
	if a.elector.IsLeader() {
		t.Error("IsLeader after losing the lease, want false")
	}
	await(t, a.exited, "replica-a Run returning")
	if !errors.Is(a.err, ErrLeaseLost) {
		t.Errorf("Run() after losing the lease = %v, want ErrLeaseLost", a.err)
	}
	if _, err := a.applier.Sync(t.Context(), plan(promoted(testPolicy("lost", "web", "80")))); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Sync() after losing the lease = %v, want ErrNotLeader", err)
	}
}

// toUnstructured converts a typed object through JSON (Cilium's marshalers
// run) and drops the empty status.
func toUnstructured(t *testing.T, obj any) *unstructured.Unstructured {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var u unstructured.Unstructured
	if err := u.UnmarshalJSON(raw); err != nil {
		t.Fatal(err)
	}
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	return &u
}

// unique appends a random suffix to prefix: namespaces and leases outlive a
// test (no controller-manager finishes a namespace deletion), and -count=N
// reruns the tests against the same cluster.
func unique(prefix string) string {
	return prefix + "-" + strings.ToLower(rand.Text()[:8])
}

// readerFixture creates a fresh namespace with one CNP and one CCNP, and
// returns the namespace.
func readerFixture(t *testing.T, c clients, prefix string) string {
	t.Helper()
	ns := unique(prefix)
	ctx := t.Context()
	if _, err := c.core.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": "shop"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Without a controller-manager the namespace stays Terminating; its name is unique.
		_ = c.core.Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	readerObjects(t, c, ns)
	return ns
}

// readerObjects creates in ns what checkReader expects: a ReplicaSet of a Deployment, three
// pods, one CNP, and one CCNP named <ns>-existing. Objects left by an earlier run in a
// namespace that outlives tests are reused.
func readerObjects(t *testing.T, c clients, ns string) {
	t.Helper()
	ctx := t.Context()
	created := func(err error) {
		t.Helper()
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	ctrl := func(apiVersion, kind, name string) []metav1.OwnerReference {
		yes := true
		return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID(kind + "-" + name), Controller: &yes}}
	}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-7d9f", Namespace: ns, OwnerReferences: ctrl("apps/v1", "Deployment", "web")},
		Spec: appsv1.ReplicaSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}},
			},
		},
	}
	_, err := c.apps.ReplicaSets(ns).Create(ctx, rs, metav1.CreateOptions{})
	created(err)
	pods := []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "web-7d9f-abcde", Labels: map[string]string{"app": "web"}, OwnerReferences: ctrl("apps/v1", "ReplicaSet", "web-7d9f")}},
		{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Labels: map[string]string{"app": "db"}, OwnerReferences: ctrl("apps/v1", "StatefulSet", "db")}},
		{ObjectMeta: metav1.ObjectMeta{Name: "debug", Labels: map[string]string{"run": "debug"}}},
	}
	for _, p := range pods {
		p.Namespace = ns
		p.Spec = corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "c"}}}
		_, err := c.core.Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		created(err)
	}
	cnp := &ciliumv2.CiliumNetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "cilium.io/v2", Kind: "CiliumNetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "existing", Namespace: ns},
		Spec:       testPolicy("", "web", "80").Spec,
	}
	_, err = c.dyn.Resource(CNPResource).Namespace(ns).Create(ctx, toUnstructured(t, cnp), metav1.CreateOptions{})
	created(err)
	ccnp := testPolicy(ns+"-existing", "db", "5432")
	ccnp.APIVersion, ccnp.Kind = "cilium.io/v2", "CiliumClusterwideNetworkPolicy"
	_, err = c.dyn.Resource(CCNPResource).Create(ctx, toUnstructured(t, ccnp), metav1.CreateOptions{})
	created(err)
}

// checkReader reads the fixture in ns through r and compares it with what
// readerFixture created.
func checkReader(t *testing.T, r *Reader, ns string) {
	t.Helper()
	ctx := t.Context()
	pws, err := r.PodWorkloads(ctx)
	if err != nil {
		t.Fatalf("PodWorkloads() = %v", err)
	}
	got := map[string]Workload{}
	for _, pw := range pws {
		if pw.Namespace == ns {
			got[pw.Pod] = pw.Workload
		}
	}
	want := map[string]Workload{
		"web-7d9f-abcde": {ns, "Deployment", "web"},
		"db-0":           {ns, "StatefulSet", "db"},
		"debug":          {ns, "Pod", "debug"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PodWorkloads() in %s = %v, want %v", ns, got, want)
	}

	pol, err := r.Policies(ctx)
	if err != nil {
		t.Fatalf("Policies() = %v", err)
	}
	i := slices.IndexFunc(pol.CNPs, func(p *ciliumv2.CiliumNetworkPolicy) bool { return p.Namespace == ns && p.Name == "existing" })
	if i < 0 {
		t.Fatalf("Policies().CNPs has no %s/existing (%d policies)", ns, len(pol.CNPs))
	}
	if s, want := specJSON(t, pol.CNPs[i].Spec), specJSON(t, testPolicy("", "web", "80").Spec); s != want {
		t.Errorf("CNP spec read back = %s, want %s", s, want)
	}
	j := slices.IndexFunc(pol.CCNPs, func(p *ciliumv2.CiliumClusterwideNetworkPolicy) bool { return p.Name == ns+"-existing" })
	if j < 0 {
		t.Fatalf("Policies().CCNPs has no %s-existing (%d policies)", ns, len(pol.CCNPs))
	}
	if s, want := specJSON(t, pol.CCNPs[j].Spec), specJSON(t, testPolicy("", "db", "5432").Spec); s != want {
		t.Errorf("CCNP spec read back = %s, want %s", s, want)
	}
}

// Ensure existing Cilium policies come back as Cilium's types.
func TestReader(t *testing.T) {
	c := admin(t)
	ns := readerFixture(t, c, "reader")
	checkReader(t, NewReader(c.core, c.apps, c.dyn), ns)
}

// rbacResources maps the kinds in deploy/rbac.yaml to their resources.
var rbacResources = map[string]schema.GroupVersionResource{
	"ServiceAccount":     {Version: "v1", Resource: "serviceaccounts"},
	"ClusterRole":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	"ClusterRoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	"Role":               {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	"RoleBinding":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
}

// applyManifest server-side applies every RBAC document of a YAML stream.
func applyManifest(t *testing.T, dyn dynamic.Interface, path string, raw []byte) {
	t.Helper()
	for doc := range strings.SplitSeq(string(raw), "\n---\n") {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		gvr, ok := rbacResources[u.GetKind()]
		if !ok {
			continue // the rest of a rendered kustomization
		}
		body, err := json.Marshal(u.Object)
		if err != nil {
			t.Fatal(err)
		}
		force := true
		if _, err := dyn.Resource(gvr).Namespace(u.GetNamespace()).Patch(t.Context(), u.GetName(), types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: "rbac-test", Force: &force}); err != nil {
			t.Fatalf("apply %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// errLeaseKept is returned by rbacCalls when the elector could not release its
// Lease (an update the service account may not make).
var errLeaseKept = errors.New("lease not released")

// errForbiddenSeen is returned by rbacCalls when the API server answered a call
// 403 that the caller retries rather than returns (the elector's create).
var errForbiddenSeen = errors.New("forbidden")

// rbacCalls makes, with the clients as, every call the daemon makes to the API
// server, and returns the first failure: delivery of CCNPs (create and update
// by server-side apply, prune, server-side dry run), the policies read for
// shadow evaluation, and leader election on its Lease. Each run starts from
// nothing of its own (fresh policy names, no Lease: c deletes it), so every
// verb is exercised every time. forbidden receives the 403 answers as's
// transport saw.
func rbacCalls(ctx context.Context, t *testing.T, m rbacMode, c, as clients, forbidden <-chan string, run int) error {
	select {
	case <-forbidden: // from an earlier run
	default:
	}
	name := func(s string) string { return fmt.Sprintf("rbac%d-%s", run, s) }
	testPolicy := m.policy
	// Two prunes: a mode writing in two namespaces prunes in each (rbacMode.policy).
	cfg := enforce()
	cfg.MaxPruneRatio = 1
	a := newApplier(t, as.dyn, m.apply(cfg), nil)
	if _, err := a.Sync(ctx, plan(promoted(testPolicy(name("a"), "web", "80"), testPolicy(name("b"), "api", "8080"), testPolicy(name("d"), "db", "5432")))); err != nil {
		return fmt.Errorf("first sync: %w", err)
	}
	res, err := a.Sync(ctx, plan(promoted(testPolicy(name("a"), "web", "443")), testPolicy(name("b"), "api", "8080"), testPolicy(name("d"), "db", "5432")))
	if err != nil {
		return fmt.Errorf("second sync: %w", err)
	}
	for n, want := range map[string]Action{name("a"): ActionConfigured, name("b"): ActionPruned, name("d"): ActionPruned} {
		if i := slices.IndexFunc(res.Changes, func(c Change) bool { return c.Name == n }); i < 0 || res.Changes[i].Action != want {
			return fmt.Errorf("second sync: %s not %s: %+v", n, want, res.Changes)
		}
	}
	dry := newApplier(t, as.dyn, m.apply(Config{Apply: ApplyOff, DryRun: DryRunServer}), nil)
	if _, err := dry.Sync(ctx, plan(promoted(testPolicy(name("a"), "web", "443"), testPolicy(name("c"), "db", "5432")))); err != nil {
		return fmt.Errorf("dry-run sync: %w", err)
	}
	reader := m.reader(NewReader(as.core, as.apps, as.dyn))
	if _, err := reader.Policies(ctx); err != nil {
		return fmt.Errorf("read policies: %w", err)
	}
	// run resolves label-less pods through their owners (flows.LivePods).
	if _, err := reader.Pods(ctx); err != nil {
		return fmt.Errorf("read pods: %w", err)
	}
	// run takes the local cluster's name from Cilium's configuration.
	if m.namespace == "kube-system" { // a team's daemon reads nothing in Cilium's namespace
		if _, err := reader.CiliumClusterName(ctx, "kube-system"); err != nil {
			return fmt.Errorf("read cilium's cluster name: %w", err)
		}
	}

	if err := c.coord.Leases(m.namespace).Delete(ctx, "recommender", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	ecfg := DefaultElectionConfig("rbac-replica")
	ecfg.Namespace = m.namespace
	ecfg.RetryPeriod = 100 * time.Millisecond
	e, err := NewElector(as.coord, ecfg, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	led := make(chan struct{})
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- e.Run(ectx, func(context.Context) { close(led) }) }()
	select {
	case <-led:
	case err := <-runErr:
		return fmt.Errorf("leader election: %w", err)
	case call := <-forbidden:
		return fmt.Errorf("leader election: %s: %w", call, errForbiddenSeen)
	case <-time.After(time.Minute): // generous: a replica with the Lease to itself leads at once
		return errors.New("leader election: not leading within a minute")
	}
	cancel()
	if err := <-runErr; err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	lease, err := c.coord.Leases(m.namespace).Get(ctx, "recommender", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h == nil || *h != "" {
		return fmt.Errorf("leader election: holder %q after the end: %w", ptr.Deref(h, "<nil>"), errLeaseKept)
	}
	if m.namespace == "kube-system" {
		return replicaLeaseCalls(ctx, c, m, as, forbidden)
	}
	return nil
}

// replicaLeaseCalls runs replica 0 of two with --replica-membership=lease as the service
// account until it counts itself live: it creates and renews recommender-replica-0 and reads
// recommender-replica-1.
func replicaLeaseCalls(ctx context.Context, c clients, m rbacMode, as clients, forbidden <-chan string) error {
	mc := replicas.MembershipConfig{
		Namespace: m.namespace, Name: "recommender", Self: 0, Replicas: 2, Identity: "rbac-replica",
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 100 * time.Millisecond,
	}
	for i := range mc.Replicas {
		if err := c.coord.Leases(m.namespace).Delete(ctx, mc.LeaseName(i), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	assign, err := flows.NewRendezvous("0", flows.StaticReplicas(mc.Replicas))
	if err != nil {
		return err
	}
	live := make(chan struct{})
	var once sync.Once
	mb, err := replicas.NewMembership(as.coord, mc, assign, func() {
		if slices.Contains(assign.Members(), "0") {
			once.Do(func() { close(live) })
		}
	}, nil)
	if err != nil {
		return err
	}
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- mb.Run(mctx) }()
	select {
	case <-live:
	case call := <-forbidden:
		return fmt.Errorf("replica membership: %s: %w", call, errForbiddenSeen)
	case <-time.After(time.Minute): // generous: it is live once it held its Lease for the join delay
		return errors.New("replica membership: not live within a minute")
	}
	cancel()
	if err := <-runErr; err != nil {
		return fmt.Errorf("replica membership: %w", err)
	}
	select {
	case call := <-forbidden:
		return fmt.Errorf("replica membership: %s: %w", call, errForbiddenSeen)
	default:
	}
	return nil
}

// rbacRoles returns the ClusterRoles and Roles of a manifest.
func rbacRoles(t *testing.T, raw []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for doc := range strings.SplitSeq(string(raw), "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		if k := u.GetKind(); k == "ClusterRole" || k == "Role" {
			out = append(out, u)
		}
	}
	return out
}

// applyObject server-side applies one RBAC object as the test's field manager.
func applyObject(t *testing.T, dyn dynamic.Interface, u *unstructured.Unstructured) {
	t.Helper()
	body, err := json.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	force := true
	if _, err := dyn.Resource(rbacResources[u.GetKind()]).Namespace(u.GetNamespace()).Patch(context.Background(), u.GetName(), types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: "rbac-test", Force: &force}); err != nil {
		t.Fatalf("apply %s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

// awaitAccess waits until the authorizer (whose RBAC cache follows the API
// with a delay) answers allowed for the service account's attrs.
func awaitAccess(t *testing.T, user string, attrs authorizationv1.ResourceAttributes, allowed bool) {
	t.Helper()
	authz, err := authorizationv1client.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	// Polled: no event says the authorizer's cache caught up.
	err = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		r, err := authz.SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: []string{"system:serviceaccounts", "system:authenticated"}, ResourceAttributes: &attrs,
		}}, metav1.CreateOptions{})
		return err == nil && r.Status.Allowed == allowed, err
	})
	if err != nil {
		t.Fatalf("access %+v allowed=%t: %v", attrs, allowed, err)
	}
}

// rbacMode is one way to run the daemon with the RBAC that goes with it.
type rbacMode struct {
	name string
	// manifest is the YAML holding the RBAC objects (others are skipped).
	manifest func(t *testing.T) []byte
	// namespace is the daemon's own (its ServiceAccount and Lease).
	namespace string
	// apply turns a delivery Config into the mode's; reader scopes the Reader.
	apply  func(Config) Config
	reader func(*Reader) *Reader
	// policy builds the mode's test policies.
	policy func(name, app, port string) *ciliumv2.CiliumClusterwideNetworkPolicy
	// others are further namespaces the mode writes in.
	others []string
}

func (m rbacMode) serviceAccount() string {
	return "system:serviceaccount:" + m.namespace + ":recommender"
}

// namespacedTeam is the namespace internal/deploycheck/testdata/namespaced runs the daemon in.
const namespacedTeam = "team-a"

var rbacModes = []rbacMode{
	{
		name: "clusterwide",
		manifest: func(t *testing.T) []byte {
			var all []byte
			for _, f := range []string{"../../deploy/rbac.yaml", "../../deploy/rbac-cilium-config.yaml"} {
				raw, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				all = append(append(all, "\n---\n"...), raw...)
			}
			return all
		},
		namespace: "kube-system",
		apply:     func(c Config) Config { return c },
		reader:    func(r *Reader) *Reader { return r },
		policy:    testPolicy,
	},
	{
		// deploy/namespaced, as a team's kustomization uses it.
		name:      "namespaced",
		manifest:  func(t *testing.T) []byte { return kustomize(t, "../../internal/deploycheck/testdata/namespaced") },
		namespace: namespacedTeam,
		apply: func(c Config) Config {
			c.PolicyKind, c.Namespaces = synth.KindCNP, []string{namespacedTeam}
			return c
		},
		reader: func(r *Reader) *Reader { return r.Scoped([]string{namespacedTeam}) },
		policy: func(name, app, port string) *ciliumv2.CiliumClusterwideNetworkPolicy {
			return nsPolicy(namespacedTeam, name, app, port)
		},
	},
	{
		// The chart writing CNPs in every namespace: a ClusterRole.
		name:      "chart-cnp",
		manifest:  chartGolden("cnp"),
		namespace: "kube-system",
		apply: func(c Config) Config {
			c.PolicyKind = synth.KindCNP
			return c
		},
		reader: func(r *Reader) *Reader { return r },
		policy: func(name, app, port string) *ciliumv2.CiliumClusterwideNetworkPolicy {
			return nsPolicy(namespacedTeam, name, app, port)
		},
	},
	{
		// The chart for two namespaces: a Role in each, every verb needed in each (policies a
		// and b in the first, d and the dry run's c in the second, one prune in both).
		name:      "chart-namespaces",
		manifest:  chartGolden("namespaces"),
		namespace: namespacedTeam,
		apply: func(c Config) Config {
			c.PolicyKind, c.Namespaces = synth.KindCNP, []string{namespacedTeam, namespacedTeam + "-staging"}
			return c
		},
		reader: func(r *Reader) *Reader { return r.Scoped([]string{namespacedTeam, namespacedTeam + "-staging"}) },
		policy: func(name, app, port string) *ciliumv2.CiliumClusterwideNetworkPolicy {
			if strings.HasSuffix(name, "-a") || strings.HasSuffix(name, "-b") {
				return nsPolicy(namespacedTeam, name, app, port)
			}
			return nsPolicy(namespacedTeam+"-staging", name, app, port)
		},
		others: []string{namespacedTeam + "-staging"},
	},
}

// chartGolden reads what the chart renders for a value set (internal/deploycheck keeps the
// golden files equal to helm template's output).
func chartGolden(name string) func(t *testing.T) []byte {
	return func(t *testing.T) []byte {
		raw, err := os.ReadFile("../../internal/deploycheck/testdata/chart/" + name + ".golden")
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
}

// kustomize renders a kustomization with kubectl, which the test machines have.
func kustomize(t *testing.T, dir string) []byte {
	t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kubectl not found")
		}
		t.Skip("kubectl not found")
	}
	out, err := exec.CommandContext(t.Context(), "kubectl", "kustomize", dir).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	return out
}

// Ensure the RBAC of each way to run the daemon is least privilege, proven as its service
// account: sufficient (every call the daemon makes succeeds), needed (without any one granted
// verb, some call is forbidden), and nothing more (no Secrets, pods, other Leases, other
// namespaces). deploy/rbac.yaml for the clusterwide daemon; deploy/namespaced for a team's
// daemon writing CNPs in its own namespace, which must need no cluster-wide right at all.
// deploy/rbac-cilium-config.yaml (the cluster name from Cilium's ConfigMap) with the first.
func TestRBAC(t *testing.T) {
	for _, m := range rbacModes {
		t.Run(m.name, func(t *testing.T) { testRBAC(t, m) })
	}
}

func testRBAC(t *testing.T, m rbacMode) {
	c := admin(t)
	for _, n := range append([]string{m.namespace, namespacedTeam}, m.others...) {
		if _, err := c.core.Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		t.Cleanup(func() { deleteCNPs(t, c, n) })
	}
	manifest := m.manifest(t)
	applyManifest(t, c.dyn, m.name, manifest)
	roles := rbacRoles(t, manifest)
	if m.namespace != "kube-system" {
		scope := append([]string{m.namespace}, m.others...)
		for _, r := range roles {
			if r.GetKind() != "Role" || !slices.Contains(scope, r.GetNamespace()) {
				t.Errorf("%s: %s %s/%s: a namespaced daemon's rights must all be Roles in %v", m.name, r.GetKind(), r.GetNamespace(), r.GetName(), scope)
			}
		}
	}
	// ns is where the daemon reads pods and policies; other is a namespace it has no business in.
	other := readerFixture(t, c, "rbac")
	ns := other
	if m.namespace != "kube-system" {
		ns = m.namespace
		readerObjects(t, c, ns)
	}
	ciliumConfigFixture(t, c, "kube-system", map[string]string{"cluster-name": "east"})
	// The authorizer's cache follows new roles with a delay: wait until every grant is in force.
	for _, role := range roles {
		for g := range grants(role) {
			awaitAccess(t, m.serviceAccount(), g.attrs, true)
		}
	}
	sa := rest.CopyConfig(env.Config)
	sa.Impersonate = rest.ImpersonationConfig{UserName: m.serviceAccount()}
	forbidden := make(chan string, 1)
	sa.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if err == nil && resp.StatusCode == http.StatusForbidden {
				select {
				case forbidden <- r.Method + " " + r.URL.Path:
				default:
				}
			}
			return resp, err
		})
	}
	as := newClients(t, sa)
	kind := m.apply(Config{}) // the policy kind and namespaces of the mode

	// Sufficient.
	if err := rbacCalls(t.Context(), t, m, c, as, forbidden, 0); err != nil {
		t.Fatalf("the daemon's calls as the service account: %v", err)
	}
	if m.namespace == "kube-system" {
		checkReader(t, NewReader(as.core, as.apps, as.dyn), ns)
		if name, err := NewReader(as.core, as.apps, as.dyn).CiliumClusterName(t.Context(), "kube-system"); err != nil || name != "east" {
			t.Errorf("CiliumClusterName as the service account = %q, %v; want east", name, err)
		}
	} else {
		checkScopedReader(t, m.reader(NewReader(as.core, as.apps, as.dyn)), ns)
	}

	// And nothing else.
	denied := []struct {
		what string
		call func(context.Context) error
	}{
		{"get secret", func(ctx context.Context) error {
			_, err := as.core.Secrets("kube-system").Get(ctx, "any", metav1.GetOptions{})
			return err
		}},
		{"list secrets", func(ctx context.Context) error {
			_, err := as.core.Secrets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"get a pod", func(ctx context.Context) error {
			_, err := as.core.Pods(ns).Get(ctx, "debug", metav1.GetOptions{})
			return err
		}},
		{"list namespaces", func(ctx context.Context) error {
			_, err := as.core.Namespaces().List(ctx, metav1.ListOptions{})
			return err
		}},
		{"watch CCNPs", func(ctx context.Context) error {
			w, err := as.dyn.Resource(CCNPResource).Watch(ctx, metav1.ListOptions{})
			if err == nil {
				w.Stop()
			}
			return err
		}},
		{"create a CNP in another namespace", func(ctx context.Context) error {
			cnp := &ciliumv2.CiliumNetworkPolicy{
				TypeMeta:   metav1.TypeMeta{APIVersion: "cilium.io/v2", Kind: "CiliumNetworkPolicy"},
				ObjectMeta: metav1.ObjectMeta{Name: "sneaky", Namespace: other},
				Spec:       testPolicy("", "web", "80").Spec,
			}
			_, err := as.dyn.Resource(CNPResource).Namespace(other).Create(ctx, toUnstructured(t, cnp), metav1.CreateOptions{})
			return err
		}},
		{"update a policy (only apply is granted)", func(ctx context.Context) error {
			if !kind.PolicyKind.Namespaced() {
				u := getCCNP(t, c.dyn, "rbac0-a")
				_, err := as.dyn.Resource(CCNPResource).Update(ctx, u, metav1.UpdateOptions{})
				return err
			}
			pns, err := synth.PolicyNamespace(m.policy("rbac0-a", "web", "80"))
			if err != nil {
				t.Fatal(err)
			}
			u, err := c.dyn.Resource(CNPResource).Namespace(pns).Get(ctx, "rbac0-a", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = as.dyn.Resource(CNPResource).Namespace(pns).Update(ctx, u, metav1.UpdateOptions{})
			return err
		}},
		{"get another lease", func(ctx context.Context) error {
			_, err := as.coord.Leases("kube-system").Get(ctx, "kube-scheduler", metav1.GetOptions{})
			return err
		}},
		{"create a lease in another namespace", func(ctx context.Context) error {
			_, err := as.coord.Leases("default").Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "recommender"}}, metav1.CreateOptions{})
			return err
		}},
		{"get another configmap in cilium's namespace", func(ctx context.Context) error {
			_, err := as.core.ConfigMaps("kube-system").Get(ctx, "extension-apiserver-authentication", metav1.GetOptions{})
			return err
		}},
		{"list configmaps in cilium's namespace", func(ctx context.Context) error {
			_, err := as.core.ConfigMaps("kube-system").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"get cilium-config in another namespace", func(ctx context.Context) error {
			_, err := as.core.ConfigMaps(ns).Get(ctx, CiliumConfigMap, metav1.GetOptions{})
			return err
		}},
		{"update cilium-config", func(ctx context.Context) error {
			cm, err := c.core.ConfigMaps("kube-system").Get(ctx, CiliumConfigMap, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = as.core.ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{})
			return err
		}},
		{"get a deployment", func(ctx context.Context) error {
			_, err := as.apps.Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
			return err
		}},
	}
	if kind.PolicyKind.Namespaced() && len(kind.Namespaces) == 0 {
		// CNPs of every namespace are this mode's job.
		denied = slices.DeleteFunc(denied, func(d struct {
			what string
			call func(context.Context) error
		}) bool {
			return d.what == "create a CNP in another namespace"
		})
	}
	if m.namespace != "kube-system" {
		// Nothing cluster-wide, nothing in other namespaces.
		denied = append(denied, []struct {
			what string
			call func(context.Context) error
		}{
			{"list pods of all namespaces", func(ctx context.Context) error {
				_, err := as.core.Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
				return err
			}},
			{"list pods of another namespace", func(ctx context.Context) error {
				_, err := as.core.Pods(other).List(ctx, metav1.ListOptions{})
				return err
			}},
			{"list CNPs of all namespaces", func(ctx context.Context) error {
				_, err := as.dyn.Resource(CNPResource).List(ctx, metav1.ListOptions{})
				return err
			}},
			{"list CCNPs", func(ctx context.Context) error {
				_, err := as.dyn.Resource(CCNPResource).List(ctx, metav1.ListOptions{})
				return err
			}},
			{"apply a CCNP", func(ctx context.Context) error {
				_, err := as.dyn.Resource(CCNPResource).Patch(ctx, "sneaky", types.ApplyPatchType, []byte(`{"apiVersion":"cilium.io/v2","kind":"CiliumClusterwideNetworkPolicy","metadata":{"name":"sneaky"}}`),
					metav1.PatchOptions{FieldManager: FieldManager})
				return err
			}},
		}...)
	}
	for _, d := range denied {
		if err := d.call(t.Context()); !apierrors.IsForbidden(err) {
			t.Errorf("%s as the service account = %v, want Forbidden", d.what, err)
		}
	}

	// Needed: each verb taken away in turn, and put back.
	run := 0
	for _, role := range roles {
		for g := range grants(role) {
			where := role.GetKind()
			if ns := role.GetNamespace(); ns != "" && len(m.others) > 0 {
				where += " " + ns
			}
			t.Run(fmt.Sprintf("%s %s %s", where, g.attrs.Resource, g.attrs.Verb), func(t *testing.T) {
				without := role.DeepCopy()
				rs, _, _ := unstructured.NestedSlice(without.Object, "rules")
				cut := rs[g.rule].(map[string]any)
				cut["verbs"] = toAny(slices.Delete(slices.Clone(g.verbs), g.verb, g.verb+1))
				if len(g.verbs) == 1 {
					rs = slices.Delete(rs, g.rule, g.rule+1)
				}
				if err := unstructured.SetNestedSlice(without.Object, rs, "rules"); err != nil {
					t.Fatal(err)
				}
				applyObject(t, c.dyn, without)
				defer func() {
					applyObject(t, c.dyn, role)
					awaitAccess(t, m.serviceAccount(), g.attrs, true)
				}()
				awaitAccess(t, m.serviceAccount(), g.attrs, false)
				run++
				err := rbacCalls(t.Context(), t, m, c, as, forbidden, run)
				if !apierrors.IsForbidden(err) && !errors.Is(err, ErrLeaseForbidden) && !errors.Is(err, errLeaseKept) && !errors.Is(err, errForbiddenSeen) {
					t.Errorf("without %s on %s the daemon's calls = %v, want forbidden: the verb is granted but not needed", g.attrs.Verb, g.attrs.Resource, err)
				} else {
					t.Logf("without it: %v", err)
				}
			})
		}
	}
}

// grant is one verb on one resource that a role's rule grants: rule and verb index the rule
// in the role and the verb in the rule's verbs.
type grant struct {
	attrs      authorizationv1.ResourceAttributes
	rule, verb int
	verbs      []string
}

// grants yields every verb on every resource a Role or ClusterRole grants.
func grants(role *unstructured.Unstructured) iter.Seq[grant] {
	return func(yield func(grant) bool) {
		rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
		for ri, r := range rules {
			rule := r.(map[string]any)
			verbs, _, _ := unstructured.NestedStringSlice(rule, "verbs")
			groups, _, _ := unstructured.NestedStringSlice(rule, "apiGroups")
			resources, _, _ := unstructured.NestedStringSlice(rule, "resources")
			names, _, _ := unstructured.NestedStringSlice(rule, "resourceNames")
			for vi, verb := range verbs {
				for _, res := range resources {
					attrs := authorizationv1.ResourceAttributes{Namespace: role.GetNamespace(), Group: groups[0], Resource: res, Verb: verb}
					if len(names) > 0 {
						attrs.Name = names[0]
					}
					if !yield(grant{attrs: attrs, rule: ri, verb: vi, verbs: verbs}) {
						return
					}
				}
			}
		}
	}
}

// toAny converts verbs for an unstructured object.
func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// hookGate is a Gate that runs a hook on its n-th call, which lets a test
// change an object between Sync's ownership check and its write.
type hookGate struct {
	calls int
	at    int
	hook  func()
}

func (g *hookGate) IsLeader() bool {
	g.calls++
	if g.calls == g.at {
		g.hook()
	}
	return true
}

// Ensure a write never lands on an object that changed after its ownership
// check: the resourceVersion/UID preconditions make it conflict, and the
// retry sees the new owner.
func TestSyncPreconditions(t *testing.T) {
	c := admin(t)
	ccnps := c.dyn.Resource(CCNPResource)
	relabel := func(name, owner string) func() {
		return func() {
			u := getCCNP(t, c.dyn, name)
			u.SetLabels(map[string]string{synth.LabelManagedBy: owner})
			if _, err := ccnps.Update(context.Background(), u, metav1.UpdateOptions{FieldManager: "helm"}); err != nil {
				t.Errorf("relabel %s: %v", name, err)
			}
		}
	}
	touch := func(name string) func() {
		return func() {
			u := getCCNP(t, c.dyn, name)
			u.SetAnnotations(map[string]string{"touched": "yes"})
			if _, err := ccnps.Update(context.Background(), u, metav1.UpdateOptions{FieldManager: "kubectl"}); err != nil {
				t.Errorf("touch %s: %v", name, err)
			}
		}
	}
	// Gate calls: 1 when Sync starts, then per attempt 1 before the ownership check and 1
	// before the write.
	tests := []struct {
		name    string
		desired Plan
		hook    func() func()
		want    Action // of the policy "pre"
		owner   string // its managed-by label afterwards
	}{
		{"taken over before apply", plan(promoted(testPolicy("pre", "web", "8443"))), func() func() { return relabel("pre", "helm") }, ActionNotOwned, "helm"},
		{"changed before apply", plan(promoted(testPolicy("pre", "web", "8443"))), func() func() { return touch("pre") }, ActionConfigured, synth.ManagedByValue},
		{"taken over before prune", plan(nil, testPolicy("pre", "web", "80")), func() func() { return relabel("pre", "helm") }, "", "helm"},
		{"changed before prune", plan(nil, testPolicy("pre", "web", "80")), func() func() { return touch("pre") }, ActionPruned, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := newApplier(t, c.dyn, enforce(), nil).Sync(t.Context(), plan(promoted(testPolicy("pre", "web", "80")))); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ccnps.Delete(context.Background(), "pre", metav1.DeleteOptions{}) })
			gate := &hookGate{at: 3, hook: tt.hook()}
			a := newApplier(t, c.dyn, enforce(), gate)
			a.backoff = wait.Backoff{Duration: time.Millisecond, Steps: 3}
			res, err := a.Sync(t.Context(), tt.desired)
			if err != nil {
				t.Fatalf("Sync() = %v", err)
			}
			// A fourth call means a second attempt: the first write conflicted.
			if gate.calls < 4 {
				t.Errorf("gate called %d times, want a second attempt after the conflict", gate.calls)
			}
			want := map[string]Action{}
			if tt.want != "" {
				want["pre"] = tt.want
			}
			wantActions(t, res, want)
			got := getCCNP(t, c.dyn, "pre")
			switch {
			case tt.owner == "" && got != nil:
				t.Errorf("pre still exists, want it pruned")
			case tt.owner != "" && got == nil:
				t.Errorf("pre deleted, want it kept")
			case tt.owner != "" && got.GetLabels()[synth.LabelManagedBy] != tt.owner:
				t.Errorf("pre managed-by = %q, want %q", got.GetLabels()[synth.LabelManagedBy], tt.owner)
			}
			if tt.owner == "helm" {
				// The foreign owner's spec is what the first Sync wrote: port 80, not 8443.
				if s, want := specJSON(t, got.Object["spec"]), specJSON(t, testPolicy("", "web", "80").Spec); s != want {
					t.Errorf("foreign pre spec = %s, want untouched %s", s, want)
				}
			}
		})
	}
}

// Ensure a sync whose policies are in the cluster already sends no write at all, and one
// whose rules changed writes exactly that policy (issue 20: every write wakes every agent).
func TestSyncWritesOnlyOnChange(t *testing.T) {
	admin(t)
	var writes k8stest.Writes
	c := newClients(t, writes.Wrap(env.Config))
	a := newApplier(t, c.dyn, enforce(), nil)
	web, api := testPolicy("quiet-web", "web", "80"), testPolicy("quiet-api", "api", "8080")
	if _, err := a.Sync(t.Context(), plan(promoted(web, api))); err != nil {
		t.Fatal(err)
	}
	if n := writes.Count(); n != 2 {
		t.Errorf("first Sync sent %d writes, want 2 creates", n)
	}
	for i := range 3 {
		writes.Reset()
		res, err := a.Sync(t.Context(), plan(promoted(web, api)))
		if err != nil {
			t.Fatal(err)
		}
		wantActions(t, res, map[string]Action{"quiet-web": ActionUnchanged, "quiet-api": ActionUnchanged})
		if n := writes.Count(); n != 0 {
			t.Errorf("Sync %d of an unchanged state sent %d writes, want 0", i+2, n)
		}
	}
	writes.Reset()
	res, err := a.Sync(t.Context(), plan(promoted(testPolicy("quiet-web", "web", "443"), api)))
	if err != nil {
		t.Fatal(err)
	}
	wantActions(t, res, map[string]Action{"quiet-web": ActionConfigured, "quiet-api": ActionUnchanged})
	if n := writes.Count(); n != 1 {
		t.Errorf("Sync of one changed policy sent %d writes, want 1", n)
	}
}

// Ensure a hand edit of an owned policy is reported as drift and left alone, taken back
// only with --force-conflicts, and that a new revision does not silently overwrite it.
func TestSyncDrift(t *testing.T) {
	c := admin(t)
	reg := prometheus.NewPedanticRegistry()
	a, err := NewApplier(c.dyn, enforce(), nil, testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	web := testPolicy("drift-web", "web", "80")
	if _, err := a.Sync(t.Context(), plan(promoted(web))); err != nil {
		t.Fatal(err)
	}
	edit := func() {
		t.Helper()
		u := getCCNP(t, c.dyn, "drift-web")
		ports := []any{map[string]any{"port": "22", "protocol": "TCP"}}
		if err := unstructured.SetNestedSlice(u.Object, []any{map[string]any{
			"fromEndpoints": []any{map[string]any{}},
			"toPorts":       []any{map[string]any{"ports": ports}},
		}}, "spec", "ingress"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.dyn.Resource(CCNPResource).Update(t.Context(), u, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
			t.Fatal(err)
		}
	}
	edit()
	edited := specJSON(t, getCCNP(t, c.dyn, "drift-web").Object["spec"])

	for _, desired := range []*ciliumv2.CiliumClusterwideNetworkPolicy{web, testPolicy("drift-web", "web", "8443")} {
		res, err := a.Sync(t.Context(), plan(promoted(desired)))
		if err != nil {
			t.Fatalf("Sync() = %v", err)
		}
		wantActions(t, res, map[string]Action{"drift-web": ActionDrift})
		var drift *DriftError
		if !errors.As(res.Changes[0].Err, &drift) || !slices.Contains(drift.Managers, "kubectl-edit") {
			t.Errorf("drift Err = %v, want a *DriftError naming kubectl-edit", res.Changes[0].Err)
		}
		if got := specJSON(t, getCCNP(t, c.dyn, "drift-web").Object["spec"]); got != edited {
			t.Errorf("drifted spec overwritten without --force-conflicts: %s", got)
		}
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP recommender_cluster_conflicts Desired policies the last sync could not write, by kind: not_owned (a same-name policy of another owner), drift (ours, changed by another field manager).
# TYPE recommender_cluster_conflicts gauge
recommender_cluster_conflicts{kind="drift"} 1
recommender_cluster_conflicts{kind="not_owned"} 0
`), "recommender_cluster_conflicts"); err != nil {
		t.Error(err)
	}

	force := enforce()
	force.ForceConflicts = true
	res, err := newApplier(t, c.dyn, force, nil).Sync(t.Context(), plan(promoted(web)))
	if err != nil {
		t.Fatal(err)
	}
	wantActions(t, res, map[string]Action{"drift-web": ActionDriftReverted})
	if got, want := specJSON(t, getCCNP(t, c.dyn, "drift-web").Object["spec"]), specJSON(t, web.Spec); got != want {
		t.Errorf("spec after --force-conflicts = %s, want %s", got, want)
	}
}

// Ensure a plan that is not destructive (a replica still warming up) creates what is new
// but neither prunes nor replaces the rules of a policy in force.
func TestSyncNotDestructive(t *testing.T) {
	c := admin(t)
	a := newApplier(t, c.dyn, enforce(), nil)
	old, gone := testPolicy("warm-old", "web", "80"), testPolicy("warm-gone", "db", "5432")
	if _, err := a.Sync(t.Context(), plan(promoted(old, gone))); err != nil {
		t.Fatal(err)
	}
	p := Plan{Desired: promoted(testPolicy("warm-old", "web", "443"), testPolicy("warm-new", "api", "8080")), Retired: []Retired{retire(gone)}}
	res, err := a.Sync(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	wantActions(t, res, map[string]Action{"warm-old": ActionDeferred, "warm-new": ActionCreated, "warm-gone": ActionDeferred})
	if s, want := specJSON(t, getCCNP(t, c.dyn, "warm-old").Object["spec"]), specJSON(t, old.Spec); s != want {
		t.Errorf("warm-old replaced while warming up: %s", s)
	}
	if getCCNP(t, c.dyn, "warm-gone") == nil {
		t.Error("warm-gone pruned while warming up")
	}
	if len(res.Settled) != 0 {
		t.Errorf("Settled = %v while warming up, want none", res.Settled)
	}

	// A retired name whose policy carries a revision the store never delivered is kept.
	other := testPolicy("warm-gone", "db", "5433")
	res, err = a.Sync(t.Context(), Plan{Desired: promoted(testPolicy("warm-old", "web", "443")), Retired: []Retired{retire(other)}, Destructive: true})
	if err != nil {
		t.Fatal(err)
	}
	wantActions(t, res, map[string]Action{"warm-old": ActionConfigured, "warm-gone": ActionKept, "warm-new": ActionKept})
	if !slices.Equal(res.Settled, []string{"warm-gone"}) {
		t.Errorf("Settled = %v, want [warm-gone]", res.Settled)
	}
}

// Ensure a service account without rights on the Lease gets one clear error at once instead
// of client-go retrying "forbidden" forever.
func TestLeaderElectionForbidden(t *testing.T) {
	c := admin(t)
	sa := rest.CopyConfig(env.Config)
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:default:no-role"}
	as := newClients(t, sa)
	cfg := DefaultElectionConfig("forbidden-replica")
	cfg.Namespace = "default"
	e, err := NewElector(as.coord, cfg, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = e.Run(t.Context(), func(context.Context) { t.Error("lead called without rights on the lease") })
	if !errors.Is(err, ErrLeaseForbidden) || !strings.Contains(err.Error(), "default/recommender") {
		t.Errorf("Run() without a Role = %v, want ErrLeaseForbidden naming default/recommender", err)
	}
	_ = c
}

// Ensure a service account that may read the Lease but not create it gets ErrLeaseForbidden
// at once, naming the verb, instead of client-go retrying the create forever.
func TestLeaderElectionCreateForbidden(t *testing.T) {
	c := admin(t)
	const user = "system:serviceaccount:default:lease-reader"
	for _, obj := range []map[string]any{
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": map[string]any{"name": "lease-reader", "namespace": "default"},
			"rules": []any{map[string]any{"apiGroups": []any{"coordination.k8s.io"}, "resources": []any{"leases"}, "verbs": []any{"get"}}}},
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": map[string]any{"name": "lease-reader", "namespace": "default"},
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lease-reader"},
			"subjects": []any{map[string]any{"kind": "User", "name": user}}},
	} {
		applyObject(t, c.dyn, &unstructured.Unstructured{Object: obj})
	}
	sa := rest.CopyConfig(env.Config)
	sa.Impersonate = rest.ImpersonationConfig{UserName: user}
	as := newClients(t, sa)
	cfg := DefaultElectionConfig("reader-replica")
	cfg.Namespace, cfg.Name = "default", "create-forbidden"
	e, err := NewElector(as.coord, cfg, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The role binding takes effect when the authorizer's cache has it: wait for the get to
	// be allowed, then check what the create gets.
	deadline := time.Now().Add(time.Minute)
	for {
		err = e.Run(t.Context(), func(context.Context) { t.Error("lead called without the right to create the lease") })
		if !strings.Contains(fmt.Sprint(err), "get lease") || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling the authorizer's cache, not a wait for a time
	}
	if !errors.Is(err, ErrLeaseForbidden) || !strings.Contains(err.Error(), "create lease default/create-forbidden") {
		t.Errorf("Run() with get only = %v, want ErrLeaseForbidden naming the create", err)
	}
	if _, err := c.coord.Leases("default").Get(t.Context(), "create-forbidden", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the dry run created the lease (get = %v)", err)
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
