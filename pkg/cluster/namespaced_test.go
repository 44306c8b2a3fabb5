package cluster

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/policy/api"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/recommender/recommender/pkg/synth"
)

// nsPolicy is testPolicy selecting pods app=<app> in namespace ns (a CNP of ns once delivered).
func nsPolicy(ns, name, app, port string) *ciliumv2.CiliumClusterwideNetworkPolicy {
	p := testPolicy(name, app, port)
	p.Spec.EndpointSelector = api.NewESFromLabels(
		labels.NewLabel("app", app, labels.LabelSourceK8s),
		labels.NewLabel("io.kubernetes.pod.namespace", ns, labels.LabelSourceK8s),
	)
	return p
}

// cnpConfig is enforce() writing CNPs in namespaces.
func cnpConfig(namespaces ...string) Config {
	c := enforce()
	c.PolicyKind, c.Namespaces = synth.KindCNP, namespaces
	return c
}

// newNamespace creates a namespace with a unique name.
func newNamespace(t *testing.T, c clients, prefix string) string {
	t.Helper()
	ns := unique(prefix)
	if _, err := c.core.Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deleteCNPs(t, c, ns)
		// Without a controller-manager the namespace stays Terminating; its name is unique.
		_ = c.core.Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	return ns
}

// deleteCNPs deletes every CNP in ns.
func deleteCNPs(t *testing.T, c clients, ns string) {
	ctx := context.Background()
	list, err := c.dyn.Resource(CNPResource).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for _, it := range list.Items {
		if err := c.dyn.Resource(CNPResource).Namespace(ns).Delete(ctx, it.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup: %v", err)
		}
	}
}

// getCNP returns the named CNP, or nil when it does not exist.
func getCNP(t *testing.T, dyn dynamic.Interface, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u, err := dyn.Resource(CNPResource).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// createCNP creates a CNP of spec p in ns, ours when managed.
func createCNP(t *testing.T, c clients, ns string, p *ciliumv2.CiliumClusterwideNetworkPolicy, managed bool) {
	t.Helper()
	cnp, err := synth.AsCNP(p)
	if err != nil {
		t.Fatal(err)
	}
	cnp.Namespace, cnp.Labels = ns, map[string]string{}
	if managed {
		cnp.Labels[synth.LabelManagedBy] = synth.ManagedByValue
		rev, err := synth.Revision(p.Spec)
		if err != nil {
			t.Fatal(err)
		}
		cnp.Annotations = map[string]string{synth.AnnotationRevision: "sha256:" + rev, AnnotationLifecycle: LifecycleEnforced}
	}
	if _, err := c.dyn.Resource(CNPResource).Namespace(ns).Create(t.Context(), toUnstructured(t, cnp), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Ensure --policy-kind CiliumNetworkPolicy delivers each policy as a CNP in its workload's
// namespace with the ownership rules of CCNPs: created and then left alone, the selectors'
// meaning written out, read back for adoption in the caller's form, a same-name foreign CNP
// not taken, a retired one pruned, drift reported; and that a daemon scoped to --namespace
// never sees, touches or prunes CNPs of other namespaces, nor accepts a policy for one.
func TestSyncCNP(t *testing.T) {
	c := admin(t)
	a, b, out := newNamespace(t, c, "cnp-a"), newNamespace(t, c, "cnp-b"), newNamespace(t, c, "cnp-out")
	ap := newApplier(t, c.dyn, cnpConfig(a, b), nil)
	web, api8080 := nsPolicy(a, "cnp-web", "web", "80"), nsPolicy(b, "cnp-api", "api", "8080")
	// Outside the scope: a foreign CNP named like ours, and one of ours that is retired below.
	createCNP(t, c, out, nsPolicy(out, "cnp-web", "web", "80"), false)
	gone := nsPolicy(out, "cnp-gone", "gone", "80")
	createCNP(t, c, out, gone, true)

	res, err := ap.Sync(t.Context(), plan(promoted(web, api8080)))
	if err != nil {
		t.Fatalf("Sync() = %v", err)
	}
	wantActions(t, res, map[string]Action{"cnp-web": ActionCreated, "cnp-api": ActionCreated})
	for _, ch := range res.Changes {
		if want := map[string]string{"cnp-web": a, "cnp-api": b}[ch.Name]; ch.Namespace != want {
			t.Errorf("change of %s in namespace %q, want %q", ch.Name, ch.Namespace, want)
		}
	}
	got := getCNP(t, c.dyn, a, "cnp-web")
	if got == nil || got.GetLabels()[synth.LabelManagedBy] != synth.ManagedByValue || got.GetAnnotations()[AnnotationLifecycle] != LifecycleEnforced {
		t.Fatalf("cnp-web in %s = %v, want ours, enforced", a, got)
	}
	want, err := synth.AsCNP(web)
	if err != nil {
		t.Fatal(err)
	}
	if s, w := specJSON(t, got.Object["spec"]), specJSON(t, want.Spec); s != w {
		t.Errorf("spec in cluster = %s, want %s", s, w)
	}
	// testPolicy's peer names no namespace: "any namespace" in the CCNP, written out in the CNP.
	if !strings.Contains(specJSON(t, got.Object["spec"]), `"operator":"Exists"`) {
		t.Errorf("peer of the CNP has no namespace requirement: %s", specJSON(t, got.Object["spec"]))
	}
	if getCCNP(t, c.dyn, "cnp-web") != nil {
		t.Error("a CCNP was written in CNP mode")
	}
	if u := getCNP(t, c.dyn, out, "cnp-web"); u.GetLabels()[synth.LabelManagedBy] != "" {
		t.Errorf("the foreign CNP outside the scope was taken: %v", u.GetLabels())
	}
	rv := got.GetResourceVersion()

	// Again: nothing written. Owned gives the caller's (clusterwide) form, in scope only.
	res, err = ap.Sync(t.Context(), plan(promoted(web, api8080)))
	if err != nil {
		t.Fatalf("second Sync() = %v", err)
	}
	wantActions(t, res, map[string]Action{"cnp-web": ActionUnchanged, "cnp-api": ActionUnchanged})
	if got := getCNP(t, c.dyn, a, "cnp-web").GetResourceVersion(); got != rv {
		t.Errorf("resourceVersion after idempotent Sync = %s, want %s", got, rv)
	}
	owned, err := ap.Owned(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range owned {
		names = append(names, p.Name)
		if p.Namespace != "" || p.Spec.EndpointSelector.MatchLabels["k8s:io.kubernetes.pod.namespace"] == "" {
			t.Errorf("Owned() %s: namespace %q selector %v, want the clusterwide form selecting in its namespace", p.Name, p.Namespace, p.Spec.EndpointSelector.MatchLabels)
		}
	}
	if !slices.Equal(names, []string{"cnp-web", "cnp-api"}) {
		t.Errorf("Owned() = %v, want [cnp-web cnp-api] (sorted by namespace, none outside the scope)", names)
	}
	if s, w := specJSON(t, owned[0].Spec), specJSON(t, synth.FromCNP(want).Spec); s != w {
		t.Errorf("Owned() spec = %s, want %s", s, w)
	}

	// A foreign CNP of a desired name in scope is reported, not taken.
	db := nsPolicy(a, "cnp-db", "db", "5432")
	createCNP(t, c, a, db, false)
	res, err = ap.Sync(t.Context(), plan(promoted(web, api8080, db)))
	if err != nil {
		t.Fatalf("Sync() with a foreign db = %v", err)
	}
	wantActions(t, res, map[string]Action{"cnp-web": ActionUnchanged, "cnp-api": ActionUnchanged, "cnp-db": ActionNotOwned})
	var notOwned *NotOwnedError
	if i := slices.IndexFunc(res.Changes, func(ch Change) bool { return ch.Name == "cnp-db" }); i < 0 || !errors.As(res.Changes[i].Err, &notOwned) || notOwned.Namespace != a {
		t.Errorf("cnp-db change = %+v, want a NotOwnedError in %s", res.Changes, a)
	}

	// Retired: ours in scope is pruned; ours outside the scope is not seen, so settled.
	res, err = ap.Sync(t.Context(), plan(promoted(web), api8080, gone))
	if err != nil {
		t.Fatalf("Sync() retiring = %v", err)
	}
	wantActions(t, res, map[string]Action{"cnp-web": ActionUnchanged, "cnp-api": ActionPruned})
	if slices.Sort(res.Settled); !slices.Equal(res.Settled, []string{"cnp-api", "cnp-gone"}) {
		t.Errorf("Settled = %v, want [cnp-api cnp-gone]", res.Settled)
	}
	if getCNP(t, c.dyn, b, "cnp-api") != nil || getCNP(t, c.dyn, out, "cnp-gone") == nil {
		t.Error("want cnp-api pruned in scope and cnp-gone kept outside it")
	}

	// Another field manager's edit is drift, reported with the namespace.
	patch := []byte(`{"spec":{"ingress":[{"toPorts":[{"ports":[{"port":"81","protocol":"TCP"}]}]}]}}`)
	if _, err := c.dyn.Resource(CNPResource).Namespace(a).Patch(t.Context(), "cnp-web", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	res, err = ap.Sync(t.Context(), plan(promoted(web)))
	if err != nil {
		t.Fatalf("Sync() after an edit = %v", err)
	}
	var drift *DriftError
	if i := slices.IndexFunc(res.Changes, func(ch Change) bool { return ch.Name == "cnp-web" }); i < 0 || res.Changes[i].Action != ActionDrift ||
		!errors.As(res.Changes[i].Err, &drift) || drift.Namespace != a || !strings.Contains(drift.Error(), "ciliumnetworkpolicy "+a+"/cnp-web") {
		t.Errorf("changes after an edit = %+v, want drift of %s/cnp-web", res.Changes, a)
	}

	// A policy for a namespace outside --namespace is refused before any write.
	if _, err := ap.Sync(t.Context(), plan(promoted(web, nsPolicy(out, "cnp-x", "x", "80")))); err == nil {
		t.Error("Sync() of a policy outside --namespace succeeded")
	}
	if getCNP(t, c.dyn, out, "cnp-x") != nil {
		t.Error("cnp-x was written outside --namespace")
	}

	// Server-side dry run: validated by the CNP CRD, nothing persisted.
	dry := newApplier(t, c.dyn, func() Config { c := cnpConfig(a); c.Apply, c.DryRun = ApplyOff, DryRunServer; return c }(), nil)
	res, err = dry.Sync(t.Context(), plan(promoted(nsPolicy(a, "cnp-new", "new", "80"))))
	if err != nil {
		t.Fatalf("dry-run Sync() = %v", err)
	}
	if !res.DryRun || res.Count(ActionCreated) != 1 || getCNP(t, c.dyn, a, "cnp-new") != nil {
		t.Errorf("dry run = %+v, want one creation and nothing persisted", res)
	}
}

// checkScopedReader reads the objects readerObjects made in ns through a Reader scoped to ns:
// the pods and CNPs of ns, no CCNPs.
func checkScopedReader(t *testing.T, r *Reader, ns string) {
	t.Helper()
	pws, err := r.PodWorkloads(t.Context())
	if err != nil {
		t.Fatalf("PodWorkloads() = %v", err)
	}
	got := map[string]Workload{}
	for _, pw := range pws {
		if pw.Namespace != ns {
			t.Errorf("scoped PodWorkloads() returned %s/%s", pw.Namespace, pw.Pod)
			continue
		}
		got[pw.Pod] = pw.Workload
	}
	want := map[string]Workload{
		"web-7d9f-abcde": {ns, "Deployment", "web"},
		"db-0":           {ns, "StatefulSet", "db"},
		"debug":          {ns, "Pod", "debug"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PodWorkloads() = %v, want %v", got, want)
	}
	pol, err := r.Policies(t.Context())
	if err != nil {
		t.Fatalf("Policies() = %v", err)
	}
	if len(pol.CCNPs) != 0 {
		t.Errorf("scoped Policies() read %d CCNPs, want none", len(pol.CCNPs))
	}
	found := false
	for _, p := range pol.CNPs {
		if p.Namespace != ns {
			t.Errorf("scoped Policies() returned %s/%s", p.Namespace, p.Name)
		}
		found = found || p.Name == "existing"
	}
	if !found {
		t.Errorf("scoped Policies() has no %s/existing", ns)
	}
}

// Ensure a Reader scoped to namespaces reads their pods and CNPs only, and no CCNP.
func TestReaderScoped(t *testing.T) {
	c := admin(t)
	ns := readerFixture(t, c, "scoped")
	readerFixture(t, c, "unscoped")
	checkScopedReader(t, NewReader(c.core, c.apps, c.dyn).Scoped([]string{ns}), ns)
}
