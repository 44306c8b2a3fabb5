package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"reflect"
	"slices"
	"strings"
	"time"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/recommender/recommender/pkg/synth"
)

// FieldManager is the server-side apply field manager of every write. The objects this
// package may change or delete carry synth.LabelManagedBy=synth.ManagedByValue.
const FieldManager = "recommender"

// listPage is the page size of every list call.
const listPage = 500

// AnnotationLifecycle says whether a policy was applied as enforced (promoted by a clean
// window) or as audit (Cilium in policy-audit-mode, not proven): a new leader adopts only
// the first kind, and an enforcing cluster never keeps the second.
const (
	AnnotationLifecycle = "recommender.io/lifecycle"
	LifecycleEnforced   = "enforced"
	LifecycleAudit      = "audit"
)

var (
	// CCNPResource is the resource Sync writes by default.
	CCNPResource = schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumclusterwidenetworkpolicies"}
	// CNPResource is the resource Sync writes with Config.PolicyKind synth.KindCNP, and
	// read for context.
	CNPResource = schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumnetworkpolicies"}
)

// defaultBackoff spaces retries of one object's write: 0.2 s doubling to a
// 5 s cap, six tries, about 10 s in all.
var defaultBackoff = wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 6, Cap: 5 * time.Second}

// Desired is one policy the cluster should hold.
type Desired struct {
	Policy *ciliumv2.CiliumClusterwideNetworkPolicy
	// Promoted is true once the audit lifecycle promoted the policy to
	// enforcement. Policies not promoted are applied only in cluster audit mode.
	Promoted bool
}

// Retired is a policy the caller's store proposed and later retired: the
// workload's edges expired after retention, or the workload is gone.
type Retired struct {
	Name string
	// Revisions are the revisions the store delivered under Name. A policy in
	// the cluster carrying another revision was written by someone who knew
	// more than this store (another replica, a store since lost) and is kept.
	Revisions []string
}

// Plan is what one Sync is asked to achieve. Deletion is never inferred from
// absence: only Retired policies are pruned, and only when Destructive.
type Plan struct {
	// Desired are the policies the cluster should hold.
	Desired []Desired
	// Retired are the only policies Sync may delete.
	Retired []Retired
	// Destructive allows writes that take rules out of force: pruning, and
	// replacing the revision of a policy already in the cluster. The daemon
	// withholds it until this replica has observed for --delivery-warmup, so
	// a replica that has not seen the cluster's traffic yet changes nothing
	// that is in force.
	Destructive bool
}

// Gate says whether this replica may write. *Elector implements it.
type Gate interface {
	IsLeader() bool
}

// Action is what Sync did, or would do in dry-run, with one policy.
type Action string

const (
	ActionCreated    Action = "created"
	ActionConfigured Action = "configured"
	ActionUnchanged  Action = "unchanged"
	ActionPruned     Action = "pruned"
	// ActionNotOwned: a same-name policy that is not ours exists; left alone.
	ActionNotOwned Action = "not-owned"
	// ActionHeld: desired but still in audit and the cluster enforces; not applied.
	ActionHeld Action = "held"
	// ActionFailed: the API server refused the write (Err says why).
	ActionFailed Action = "failed"
	// ActionKept: ours in the cluster but neither desired nor retired by the
	// caller's store (a store that was lost or restored, another replica's
	// work): adopted as it is, never deleted for not being known.
	ActionKept Action = "kept"
	// ActionDrift: ours, but another field manager changed it (a hand edit);
	// left as it is unless Config.ForceConflicts. Err is a *DriftError.
	ActionDrift Action = "drift"
	// ActionDriftReverted: a drifted policy taken back (Config.ForceConflicts).
	ActionDriftReverted Action = "drift-reverted"
	// ActionDeferred: a destructive write (prune, new revision over one in
	// force) postponed because the Plan was not Destructive.
	ActionDeferred Action = "deferred"
	// ActionPruneRefused: more prunes in one Sync than Config.MaxPruneRatio
	// allows; none of them was made. Err says how many.
	ActionPruneRefused Action = "prune-refused"
)

// Change is the outcome for one policy.
type Change struct {
	Name string
	// Namespace is the CiliumNetworkPolicy's namespace; "" for a CCNP.
	Namespace string
	Action    Action
	// Err is a *NotOwnedError for ActionNotOwned, a *DriftError for
	// ActionDrift, the API error for ActionFailed and ErrPruneRefused for
	// ActionPruneRefused.
	Err error
}

// Result lists the outcome of one Sync, applies by name then prunes by name.
type Result struct {
	DryRun  bool
	Changes []Change
	// Settled are the retired names that need no further prune: deleted now,
	// already absent, no longer ours, or holding a revision the store never
	// delivered. The caller may forget them.
	Settled []string
}

// Count returns how many changes have action a.
func (r Result) Count(a Action) int {
	n := 0
	for _, c := range r.Changes {
		if c.Action == a {
			n++
		}
	}
	return n
}

// Conflicts returns the changes a human has to look at: same-name policies
// that are not ours, drift that was not reverted, refused prunes.
func (r Result) Conflicts() []Change {
	var out []Change
	for _, c := range r.Changes {
		switch c.Action {
		case ActionNotOwned, ActionDrift, ActionPruneRefused:
			out = append(out, c)
		}
	}
	return out
}

// Applier writes the desired policies with server-side apply: as CCNPs, or
// with Config.PolicyKind synth.KindCNP as CiliumNetworkPolicies in their
// workloads' namespaces (synth.AsCNP), under the same ownership rules. The
// caller's policies are CCNPs either way (Desired, Owned): the kind is this
// package's business. It is safe for use by one goroutine at a time; the
// daemon calls Sync from one loop.
type Applier struct {
	// res is the resource written: CCNPResource or CNPResource.
	res     dynamic.NamespaceableResourceInterface
	cfg     Config
	gate    Gate
	log     *slog.Logger
	m       *metrics
	backoff wait.Backoff
	// reported holds the last action logged at Warn or Info per policy (by
	// key), so a conflict or a kept policy is logged when it appears, not on
	// every sync.
	reported map[string]Action
}

// target is a desired policy and the namespace it goes to ("" for a CCNP).
type target struct {
	Desired
	ns string
}

// key identifies a policy object: its name for a CCNP, namespace/name for a CNP.
func key(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

func keyOf(u *unstructured.Unstructured) string { return key(u.GetNamespace(), u.GetName()) }

// client is the resource interface for objects in namespace ns ("" for a CCNP).
func (a *Applier) client(ns string) dynamic.ResourceInterface {
	if ns == "" {
		return a.res
	}
	return a.res.Namespace(ns)
}

// NewApplier returns an Applier writing through dyn. gate is consulted
// before every write; nil means this is the only replica. Metrics are
// registered on reg.
func NewApplier(dyn dynamic.Interface, cfg Config, gate Gate, log *slog.Logger, reg prometheus.Registerer) (*Applier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	gvr := CCNPResource
	if cfg.PolicyKind.Namespaced() {
		gvr = CNPResource
	}
	return &Applier{
		res: dyn.Resource(gvr), cfg: cfg, gate: gate, log: log, m: newMetrics(reg),
		backoff: defaultBackoff, reported: make(map[string]Action),
	}, nil
}

// Owned returns our policies in the cluster (in Config.Namespaces, when
// set), sorted by namespace and name: what a new leader adopts as the state
// in force before it changes anything. CNPs are returned in their
// clusterwide form (synth.FromCNP), as the caller keeps its policies.
func (a *Applier) Owned(ctx context.Context) ([]*ciliumv2.CiliumClusterwideNetworkPolicy, error) {
	listed, err := a.list(ctx)
	if err != nil {
		return nil, err
	}
	var out []*ciliumv2.CiliumClusterwideNetworkPolicy
	for _, k := range sortedNames(listed) {
		u := listed[k]
		if !owned(u) {
			continue
		}
		if a.cfg.PolicyKind.Namespaced() {
			var c ciliumv2.CiliumNetworkPolicy
			if err := decode(u, &c); err != nil {
				return nil, err
			}
			out = append(out, synth.FromCNP(&c))
			continue
		}
		var p ciliumv2.CiliumClusterwideNetworkPolicy
		if err := decode(u, &p); err != nil {
			return nil, err
		}
		out = append(out, &p)
	}
	return out, nil
}

// Enforced returns the policies that were applied to be enforced: what a leader may adopt.
// One applied as audit (Cilium in policy-audit-mode) proved nothing.
func Enforced(policies []*ciliumv2.CiliumClusterwideNetworkPolicy) []*ciliumv2.CiliumClusterwideNetworkPolicy {
	var out []*ciliumv2.CiliumClusterwideNetworkPolicy
	for _, p := range policies {
		if p.Annotations[AnnotationLifecycle] != LifecycleAudit {
			out = append(out, p)
		}
	}
	return out
}

// Sync makes the cluster hold plan.Desired and prunes what plan.Retired
// names, under the ownership rules of the package doc. It writes only what
// changed: a policy whose revision, labels and annotations are in the
// cluster already costs no request. It is idempotent. Per-policy API errors
// are recorded as ActionFailed and joined into the returned error after all
// policies were tried, and so is a refused prune; conflicts (not owned,
// drift) are in the Result, not errors. Losing leadership (ErrNotLeader) or
// ctx ending stops Sync at once and returns the partial Result.
func (a *Applier) Sync(ctx context.Context, plan Plan) (Result, error) {
	res := Result{DryRun: a.cfg.DryRun == DryRunServer}
	if a.cfg.Apply == ApplyOff && !res.DryRun {
		return res, ErrApplyDisabled
	}
	sorted, err := a.checkDesired(plan.Desired)
	if err != nil {
		return res, err
	}
	if err := a.checkLeader(); err != nil {
		return res, err
	}
	listed, err := a.list(ctx)
	if err != nil {
		return res, err
	}

	var errs []error
	desired := make(map[string]bool, len(sorted))      // by key
	desiredNames := make(map[string]bool, len(sorted)) // by name, as Retired names policies
	for _, d := range sorted {
		name, k := d.Policy.Name, key(d.ns, d.Policy.Name)
		desired[k], desiredNames[name] = true, true
		if !a.cfg.admits(d.Promoted) {
			ch, err := a.hold(ctx, d, listed[k])
			if fatal(ctx, err) {
				return res, err
			}
			if err != nil {
				ch = Change{Name: name, Namespace: d.ns, Action: ActionFailed, Err: err}
				errs = append(errs, fmt.Errorf("withdraw %s: %w", objectName(d.ns, name), err))
			}
			res.Changes = append(res.Changes, ch)
			continue
		}
		ch, err := a.applyOne(ctx, d, listed[k], plan.Destructive)
		if fatal(ctx, err) {
			return res, err
		}
		if err != nil {
			ch = Change{Name: name, Namespace: d.ns, Action: ActionFailed, Err: err}
			errs = append(errs, fmt.Errorf("apply %s: %w", objectName(d.ns, name), err))
		}
		res.Changes = append(res.Changes, ch)
	}

	prunes, err := a.prune(ctx, plan, listed, desiredNames, &res)
	if err != nil {
		if fatal(ctx, err) {
			return res, err
		}
		errs = append(errs, err)
	}
	for _, k := range sortedNames(listed) {
		if u := listed[k]; owned(u) && !desired[k] && !prunes[k] {
			res.Changes = append(res.Changes, Change{Name: u.GetName(), Namespace: u.GetNamespace(), Action: ActionKept})
		}
	}
	a.report(res)
	return res, errors.Join(errs...)
}

// prune deletes the retired policies that are still ours at a revision the
// store delivered, unless the plan is not destructive or there are more of
// them than MaxPruneRatio allows. A retired name matches our object of that
// name in whichever listed namespace it is (CNPs). It returns the keys it
// handled.
func (a *Applier) prune(ctx context.Context, plan Plan, listed map[string]*unstructured.Unstructured, desired map[string]bool, res *Result) (map[string]bool, error) {
	handled := make(map[string]bool)
	byName := make(map[string][]string) // name -> keys of our listed objects of that name
	for _, k := range sortedNames(listed) {
		if u := listed[k]; owned(u) {
			byName[u.GetName()] = append(byName[u.GetName()], k)
		}
	}
	var candidates []string // keys
	for _, r := range sortedRetired(plan.Retired) {
		if desired[r.Name] {
			continue // proposed again: not retired any more
		}
		var mine []string
		for _, k := range byName[r.Name] {
			// Another revision was written with knowledge this store lacks: kept, and
			// reported as such.
			if slices.Contains(r.Revisions, revisionOf(listed[k])) {
				mine = append(mine, k)
			}
		}
		if len(mine) == 0 {
			res.Settled = append(res.Settled, r.Name)
			continue
		}
		candidates = append(candidates, mine...)
	}
	if len(candidates) == 0 {
		return handled, nil
	}
	for _, k := range candidates {
		handled[k] = true
	}
	change := func(k string, act Action, err error) Change {
		u := listed[k]
		return Change{Name: u.GetName(), Namespace: u.GetNamespace(), Action: act, Err: err}
	}
	if !plan.Destructive {
		for _, k := range candidates {
			res.Changes = append(res.Changes, change(k, ActionDeferred, nil))
		}
		return handled, nil
	}
	ownedCount := 0
	for _, u := range listed {
		if owned(u) {
			ownedCount++
		}
	}
	if limit := a.cfg.pruneLimit(ownedCount); len(candidates) > limit {
		err := fmt.Errorf("%w: %d of %d owned policies retired in one sync, at most %d allowed (--max-prune-ratio %g)",
			ErrPruneRefused, len(candidates), ownedCount, limit, a.cfg.MaxPruneRatio)
		for _, k := range candidates {
			res.Changes = append(res.Changes, change(k, ActionPruneRefused, err))
		}
		a.m.pruneRefused.Inc()
		return handled, err
	}
	var errs []error
	for _, k := range candidates {
		u := listed[k]
		ch, err := a.pruneOne(ctx, u.GetNamespace(), u.GetName())
		if fatal(ctx, err) {
			return handled, err
		}
		if err != nil {
			res.Changes = append(res.Changes, change(k, ActionFailed, err))
			errs = append(errs, fmt.Errorf("prune %s: %w", objectName(u.GetNamespace(), u.GetName()), err))
			continue
		}
		res.Settled = append(res.Settled, u.GetName())
		if ch.Action != "" {
			res.Changes = append(res.Changes, ch)
		}
	}
	return handled, errors.Join(errs...)
}

func sortedRetired(rs []Retired) []Retired {
	out := slices.Clone(rs)
	slices.SortFunc(out, func(x, y Retired) int { return strings.Compare(x.Name, y.Name) })
	return slices.CompactFunc(out, func(x, y Retired) bool { return x.Name == y.Name })
}

func sortedNames(m map[string]*unstructured.Unstructured) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// checkDesired rejects input Sync cannot apply, finds each policy's
// namespace (CNPs), and sorts them by namespace and name so results and
// logs are stable.
func (a *Applier) checkDesired(desired []Desired) ([]target, error) {
	sorted := make([]target, 0, len(desired))
	seen := make(map[string]bool, len(desired))
	for i, d := range desired {
		switch {
		case d.Policy == nil:
			return nil, fmt.Errorf("desired policy %d: nil", i)
		case d.Policy.Name == "":
			return nil, fmt.Errorf("desired policy %d: no name", i)
		case seen[d.Policy.Name]:
			return nil, fmt.Errorf("desired policy %s: name given twice", d.Policy.Name)
		}
		seen[d.Policy.Name] = true
		t := target{Desired: d}
		if a.cfg.PolicyKind.Namespaced() {
			ns, err := synth.PolicyNamespace(d.Policy)
			if err != nil {
				return nil, fmt.Errorf("desired policy %s: %w", d.Policy.Name, err)
			}
			if !a.cfg.inScope(ns) {
				return nil, fmt.Errorf("desired policy %s: namespace %s is not one of --namespace %v", d.Policy.Name, ns, a.cfg.Namespaces)
			}
			t.ns = ns
		}
		sorted = append(sorted, t)
	}
	slices.SortFunc(sorted, func(x, y target) int { return strings.Compare(key(x.ns, x.Policy.Name), key(y.ns, y.Policy.Name)) })
	return sorted, nil
}

// applyOne applies p if the same-name object is absent or ours; cur is the
// object as the Sync's list saw it (nil: absent). See the package doc for why
// existing objects are applied with a resourceVersion precondition and new
// ones without force.
func (a *Applier) applyOne(ctx context.Context, t target, cur *unstructured.Unstructured, destructive bool) (Change, error) {
	p, rc := t.Policy, a.client(t.ns)
	ch := Change{Name: p.Name, Namespace: t.ns}
	fresh := false // the listed copy is used for the first try only
	err := retry.OnError(a.backoff, retriable, func() error {
		if err := a.checkLeader(); err != nil {
			return err
		}
		if fresh {
			got, err := rc.Get(ctx, p.Name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				cur = nil
			case err != nil:
				return err
			default:
				cur = got
			}
		}
		fresh = true
		if cur != nil && !owned(cur) {
			ch.Action = ActionNotOwned
			ch.Err = &NotOwnedError{Name: p.Name, Namespace: t.ns, ManagedBy: cur.GetLabels()[synth.LabelManagedBy]}
			return nil
		}
		rv := ""
		if cur != nil {
			rv = cur.GetResourceVersion()
		}
		body, want, err := encode(p, t.Promoted, rv, a.cfg.PolicyKind)
		if err != nil {
			return err
		}
		opts := metav1.PatchOptions{FieldManager: FieldManager, DryRun: a.dryRun()}
		reverting := false
		if cur != nil {
			switch {
			case inSync(cur, want):
				ch.Action = ActionUnchanged
				return nil
			case sameRules(cur, want):
				// Our labels or annotations moved (findings, promotion): not destructive.
			case revisionOf(cur) == revisionOf(want):
				// Same revision, other rules: somebody edited our policy.
				if !a.cfg.ForceConflicts {
					ch.Action, ch.Err = ActionDrift, &DriftError{Name: p.Name, Namespace: t.ns, Managers: otherManagers(cur)}
					return nil
				}
				reverting = true
			case !destructive:
				ch.Action = ActionDeferred
				return nil
			}
			if reverting || a.cfg.ForceConflicts {
				force := true
				opts.Force = &force
			}
		}
		if err := a.checkLeader(); err != nil {
			return err
		}
		out, err := rc.Patch(ctx, p.Name, types.ApplyPatchType, body, opts)
		if cur != nil && isFieldManagerConflict(err) {
			now, gerr := rc.Get(ctx, p.Name, metav1.GetOptions{})
			if gerr != nil || now.GetResourceVersion() != cur.GetResourceVersion() {
				return err // it changed meanwhile: look again
			}
			// Another manager owns fields of the new revision: that is drift
			// too, and taking them over is the operator's call.
			ch.Action, ch.Err = ActionDrift, &DriftError{Name: p.Name, Namespace: t.ns, Managers: otherManagers(cur), Err: err}
			return nil
		}
		if err != nil {
			return err
		}
		ch.Action = classify(cur, out)
		if reverting {
			ch.Action = ActionDriftReverted
		}
		return nil
	})
	return ch, err
}

// hold handles a desired policy still in audit while the cluster enforces:
// whatever the cluster holds under its name stays (an earlier revision in
// force is never withdrawn for a newer one in audit), except a policy applied
// as audit while Cilium ran in policy-audit-mode and never proven: enforcing
// it now would skip its window, so it is taken out.
func (a *Applier) hold(ctx context.Context, t target, cur *unstructured.Unstructured) (Change, error) {
	held := Change{Name: t.Policy.Name, Namespace: t.ns, Action: ActionHeld}
	if cur == nil || !owned(cur) || lifecycleOf(cur) != LifecycleAudit {
		return held, nil
	}
	ch, err := a.pruneOne(ctx, t.ns, t.Policy.Name)
	if err != nil || ch.Action == "" {
		return held, err
	}
	return ch, nil
}

// inSync reports whether cur already holds what want sets as far as it
// matters: the same rules, revision and lifecycle, and our labels (ownership).
// Other annotations (the workload's name, the count of review findings) go
// along with the next write that is needed anyway: a write for them alone
// would wake every Cilium agent for nothing. Fields others added are not
// ours to compare.
func inSync(cur, want *unstructured.Unstructured) bool {
	return sameRules(cur, want) && subset(want.GetLabels(), cur.GetLabels()) &&
		revisionOf(cur) == revisionOf(want) && lifecycleOf(cur) == lifecycleOf(want)
}

// sameRules reports whether cur and want hold the same spec and specs.
func sameRules(cur, want *unstructured.Unstructured) bool {
	for _, path := range [][]string{{"spec"}, {"specs"}} {
		c, _, _ := unstructured.NestedFieldNoCopy(cur.Object, path...)
		w, _, _ := unstructured.NestedFieldNoCopy(want.Object, path...)
		if !reflect.DeepEqual(c, w) {
			return false
		}
	}
	return true
}

// subset reports whether have holds every key of want with the same value.
func subset(want, have map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// revisionOf returns the policy's revision annotation.
func revisionOf(u *unstructured.Unstructured) string {
	return u.GetAnnotations()[synth.AnnotationRevision]
}

// lifecycleOf returns the policy's lifecycle annotation.
func lifecycleOf(u *unstructured.Unstructured) string {
	return u.GetAnnotations()[AnnotationLifecycle]
}

// otherManagers lists the field managers of u other than ours, sorted.
func otherManagers(u *unstructured.Unstructured) []string {
	var out []string
	for _, mf := range u.GetManagedFields() {
		if mf.Manager != FieldManager && !slices.Contains(out, mf.Manager) {
			out = append(out, mf.Manager)
		}
	}
	slices.Sort(out)
	return out
}

// isFieldManagerConflict tells a server-side apply conflict with another
// field manager from an optimistic-concurrency conflict (resourceVersion).
func isFieldManagerConflict(err error) bool {
	var status apierrors.APIStatus
	if !apierrors.IsConflict(err) || !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	if d == nil {
		return false
	}
	for _, c := range d.Causes {
		if c.Type == metav1.CauseTypeFieldManagerConflict {
			return true
		}
	}
	return false
}

// pruneOne deletes the named object (in namespace ns, for a CNP) if it is
// still ours. It returns an empty Change when the object vanished or stopped
// being ours meanwhile.
func (a *Applier) pruneOne(ctx context.Context, ns, name string) (Change, error) {
	var ch Change
	rc := a.client(ns)
	err := retry.OnError(a.backoff, retriable, func() error {
		if err := a.checkLeader(); err != nil {
			return err
		}
		cur, err := rc.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if !owned(cur) {
			return nil
		}
		uid, rv := cur.GetUID(), cur.GetResourceVersion()
		opts := metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv},
			DryRun:        a.dryRun(),
		}
		if err := a.checkLeader(); err != nil {
			return err
		}
		err = rc.Delete(ctx, name, opts)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		ch = Change{Name: name, Namespace: ns, Action: ActionPruned}
		return nil
	})
	return ch, err
}

// list returns every policy of the kind Sync writes by key: every CCNP, or
// the CNPs of Config.Namespaces (of all namespaces when none is set). Ours
// are there to adopt, keep or prune, the others because their names must not
// be taken.
func (a *Applier) list(ctx context.Context) (map[string]*unstructured.Unstructured, error) {
	out := make(map[string]*unstructured.Unstructured)
	scopes := []string{""} // CCNPs, or CNPs of every namespace
	if a.cfg.PolicyKind.Namespaced() && len(a.cfg.Namespaces) > 0 {
		scopes = a.cfg.Namespaces
	}
	for _, ns := range scopes {
		err := retry.OnError(a.backoff, retriable, func() error {
			maps.DeleteFunc(out, func(_ string, u *unstructured.Unstructured) bool { return u.GetNamespace() == ns || ns == "" })
			opts := metav1.ListOptions{Limit: listPage}
			for {
				list, err := a.client(ns).List(ctx, opts)
				if err != nil {
					return err
				}
				for i := range list.Items {
					out[keyOf(&list.Items[i])] = &list.Items[i]
				}
				if opts.Continue = list.GetContinue(); opts.Continue == "" {
					return nil
				}
			}
		})
		if err != nil {
			if ns != "" {
				return nil, fmt.Errorf("list %s in %s: %w", a.resource(), ns, err)
			}
			return nil, fmt.Errorf("list %s: %w", a.resource(), err)
		}
	}
	return out, nil
}

// resource is the plural resource name Sync writes, for messages.
func (a *Applier) resource() string {
	if a.cfg.PolicyKind.Namespaced() {
		return CNPResource.Resource
	}
	return CCNPResource.Resource
}

func (a *Applier) checkLeader() error {
	if a.gate != nil && !a.gate.IsLeader() {
		return ErrNotLeader
	}
	return nil
}

func (a *Applier) dryRun() []string {
	if a.cfg.DryRun == DryRunServer {
		return []string{metav1.DryRunAll}
	}
	return nil
}

// report logs and counts a Sync's outcome. Writes are logged each time they
// happen; a standing condition (not owned, drift, kept, deferred, refused,
// failed) is logged when it appears or changes, not on every sync.
func (a *Applier) report(res Result) {
	counts := map[Action]int{}
	seen := make(map[string]bool, len(res.Changes))
	for _, ch := range res.Changes {
		counts[ch.Action]++
		k := key(ch.Namespace, ch.Name)
		seen[k] = true
		prev := a.reported[k]
		a.reported[k] = ch.Action
		log := a.log
		if ch.Namespace != "" {
			log = log.With("namespace", ch.Namespace)
		}
		switch ch.Action {
		case ActionCreated, ActionConfigured, ActionPruned, ActionDriftReverted:
			if !res.DryRun {
				a.m.writes.WithLabelValues(string(ch.Action)).Inc()
			}
			log.Info("policy "+string(ch.Action), "policy", ch.Name, "dry_run", res.DryRun)
		case ActionFailed:
			a.m.failures.Inc()
			log.Warn("policy not applied", "policy", ch.Name, "action", ch.Action, "err", ch.Err)
		case ActionNotOwned, ActionDrift, ActionPruneRefused:
			if prev != ch.Action {
				log.Warn("policy conflict", "policy", ch.Name, "action", ch.Action, "err", ch.Err)
			}
		case ActionKept:
			if prev != ch.Action {
				log.Info("policy kept: in the cluster, not proposed by this replica's store; adopted as it is",
					"policy", ch.Name)
			}
		case ActionDeferred:
			if prev != ch.Action {
				log.Info("policy change deferred until the replica has observed long enough (--delivery-warmup)",
					"policy", ch.Name)
			}
		default:
			log.Debug("policy "+string(ch.Action), "policy", ch.Name, "dry_run", res.DryRun)
		}
	}
	for name := range a.reported {
		if !seen[name] {
			delete(a.reported, name)
		}
	}
	a.m.conflicts.WithLabelValues("not_owned").Set(float64(counts[ActionNotOwned]))
	a.m.conflicts.WithLabelValues("drift").Set(float64(counts[ActionDrift]))
	a.m.policies.WithLabelValues("kept").Set(float64(counts[ActionKept]))
	a.m.policies.WithLabelValues("deferred").Set(float64(counts[ActionDeferred]))
	a.m.policies.WithLabelValues("held").Set(float64(counts[ActionHeld]))
}

func owned(obj *unstructured.Unstructured) bool {
	return obj.GetLabels()[synth.LabelManagedBy] == synth.ManagedByValue
}

// encode returns the apply configuration of p, as JSON and as the object it
// decodes to: our label added, the revision annotation set (computed from
// the spec when p lacks it), the lifecycle annotation set from promoted,
// server-set metadata and the empty status dropped, resourceVersion set to rv
// (a precondition) when not empty; rendered as a CNP in its namespace
// (synth.AsCNP) when kind is synth.KindCNP.
func encode(p *ciliumv2.CiliumClusterwideNetworkPolicy, promoted bool, rv string, kind synth.PolicyKind) ([]byte, *unstructured.Unstructured, error) {
	obj := p.DeepCopy()
	obj.APIVersion = CCNPResource.GroupVersion().String()
	obj.Kind = "CiliumClusterwideNetworkPolicy"
	obj.ObjectMeta = metav1.ObjectMeta{
		Name:            p.Name,
		Labels:          map[string]string{},
		Annotations:     maps.Clone(p.Annotations),
		ResourceVersion: rv,
	}
	maps.Copy(obj.Labels, p.Labels)
	obj.Labels[synth.LabelManagedBy] = synth.ManagedByValue
	if obj.Annotations == nil {
		obj.Annotations = map[string]string{}
	}
	if obj.Annotations[synth.AnnotationRevision] == "" && p.Spec != nil {
		rev, err := synth.Revision(p.Spec)
		if err != nil {
			return nil, nil, fmt.Errorf("encode policy %s: %w", p.Name, err)
		}
		obj.Annotations[synth.AnnotationRevision] = "sha256:" + rev
	}
	obj.Annotations[AnnotationLifecycle] = LifecycleAudit
	if promoted {
		obj.Annotations[AnnotationLifecycle] = LifecycleEnforced
	}
	var apply any = obj
	if kind.Namespaced() {
		c, err := synth.AsCNP(obj)
		if err != nil {
			return nil, nil, fmt.Errorf("encode policy %s: %w", p.Name, err)
		}
		c.ResourceVersion = rv
		apply = c
	}
	raw, err := json.Marshal(apply)
	if err != nil {
		return nil, nil, fmt.Errorf("encode policy %s: %w", p.Name, err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, nil, fmt.Errorf("encode policy %s: %w", p.Name, err)
	}
	// status is the agent's; creationTimestamp is marshaled as null.
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
	}
	body, err := json.Marshal(m)
	if err != nil {
		return nil, nil, fmt.Errorf("encode policy %s: %w", p.Name, err)
	}
	return body, &unstructured.Unstructured{Object: m}, nil
}

// classify compares the object before and after apply on what we manage.
// It works for dry-run too, where resourceVersion does not move.
func classify(before, after *unstructured.Unstructured) Action {
	if before == nil {
		return ActionCreated
	}
	for _, path := range [][]string{{"metadata", "labels"}, {"metadata", "annotations"}, {"spec"}, {"specs"}} {
		b, _, _ := unstructured.NestedFieldNoCopy(before.Object, path...)
		x, _, _ := unstructured.NestedFieldNoCopy(after.Object, path...)
		if !reflect.DeepEqual(b, x) {
			return ActionConfigured
		}
	}
	return ActionUnchanged
}

// retriable says whether an error may go away on its own: optimistic
// concurrency conflicts, throttling, server-side and network failures.
func retriable(err error) bool {
	if errors.Is(err, ErrNotLeader) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	switch {
	case apierrors.IsConflict(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err),
		apierrors.IsTooManyRequests(err), apierrors.IsInternalError(err),
		apierrors.IsServiceUnavailable(err), apierrors.IsUnexpectedServerError(err):
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return true
	}
	return utilnet.IsConnectionReset(err) || utilnet.IsConnectionRefused(err) || utilnet.IsProbableEOF(err)
}

// fatal says whether Sync must stop instead of moving to the next policy.
func fatal(ctx context.Context, err error) bool {
	return err != nil && (errors.Is(err, ErrNotLeader) || ctx.Err() != nil)
}
