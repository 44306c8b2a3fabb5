package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strings"
	"time"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"
)

const (
	// FieldManager is the server-side apply field manager of every write.
	FieldManager = "recommender"
	// ManagedByLabel marks the objects this package may change or delete.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is ManagedByLabel's value on our objects.
	ManagedByValue = "recommender"
)

var (
	// CCNPResource is the resource Sync writes.
	CCNPResource = schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumclusterwidenetworkpolicies"}
	// CNPResource is read for context only.
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
)

// Change is the outcome for one policy.
type Change struct {
	Name   string
	Action Action
	// Err is a *NotOwnedError for ActionNotOwned and the API error for ActionFailed.
	Err error
}

// Result lists the outcome of one Sync, applies by name then prunes by name.
type Result struct {
	DryRun  bool
	Changes []Change
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

// Applier writes the desired CCNPs with server-side apply. It is safe for
// use by one goroutine at a time; the daemon calls Sync from one loop.
type Applier struct {
	ccnps   dynamic.NamespaceableResourceInterface
	cfg     Config
	gate    Gate
	log     *slog.Logger
	backoff wait.Backoff
}

// NewApplier returns an Applier writing through dyn. gate is consulted
// before every write; nil means this is the only replica.
func NewApplier(dyn dynamic.Interface, cfg Config, gate Gate, log *slog.Logger) (*Applier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Applier{ccnps: dyn.Resource(CCNPResource), cfg: cfg, gate: gate, log: log, backoff: defaultBackoff}, nil
}

// Sync makes the cluster's managed CCNPs equal to desired: it applies each
// admitted policy, reports same-name policies that are not ours, and deletes
// ours that are not desired. It is idempotent. Per-policy API errors are
// recorded as ActionFailed and joined into the returned error after all
// policies were tried; losing leadership (ErrNotLeader) or ctx ending stops
// Sync at once and returns the partial Result.
func (a *Applier) Sync(ctx context.Context, desired []Desired) (Result, error) {
	res := Result{DryRun: a.cfg.DryRun == DryRunServer}
	if a.cfg.Apply == ApplyOff && !res.DryRun {
		return res, ErrApplyDisabled
	}
	sorted, err := checkDesired(desired)
	if err != nil {
		return res, err
	}

	var errs []error
	keep := make(map[string]bool, len(sorted))
	for _, d := range sorted {
		name := d.Policy.Name
		if !a.cfg.admits(d.Promoted) {
			res.Changes = append(res.Changes, Change{Name: name, Action: ActionHeld})
			continue
		}
		keep[name] = true
		ch, err := a.applyOne(ctx, d.Policy)
		if fatal(ctx, err) {
			return res, err
		}
		if err != nil {
			ch = Change{Name: name, Action: ActionFailed, Err: err}
			errs = append(errs, fmt.Errorf("apply ciliumclusterwidenetworkpolicy %s: %w", name, err))
		}
		a.logChange(ch, res.DryRun)
		res.Changes = append(res.Changes, ch)
	}

	managed, err := a.listManaged(ctx)
	if err != nil {
		return res, errors.Join(append(errs, err)...)
	}
	for _, name := range managed {
		if keep[name] {
			continue
		}
		ch, err := a.pruneOne(ctx, name)
		if fatal(ctx, err) {
			return res, err
		}
		if err != nil {
			ch = Change{Name: name, Action: ActionFailed, Err: err}
			errs = append(errs, fmt.Errorf("prune ciliumclusterwidenetworkpolicy %s: %w", name, err))
		}
		if ch.Action != "" {
			a.logChange(ch, res.DryRun)
			res.Changes = append(res.Changes, ch)
		}
	}
	return res, errors.Join(errs...)
}

// checkDesired rejects input Sync cannot apply and sorts it by name so
// results and logs are stable.
func checkDesired(desired []Desired) ([]Desired, error) {
	sorted := slices.Clone(desired)
	seen := make(map[string]bool, len(sorted))
	for i, d := range sorted {
		switch {
		case d.Policy == nil:
			return nil, fmt.Errorf("desired policy %d: nil", i)
		case d.Policy.Name == "":
			return nil, fmt.Errorf("desired policy %d: no name", i)
		case seen[d.Policy.Name]:
			return nil, fmt.Errorf("desired policy %s: name given twice", d.Policy.Name)
		}
		seen[d.Policy.Name] = true
	}
	slices.SortFunc(sorted, func(x, y Desired) int { return strings.Compare(x.Policy.Name, y.Policy.Name) })
	return sorted, nil
}

// applyOne applies p if the same-name object is absent or ours. See the
// package doc for why existing objects are applied with a resourceVersion
// precondition and new ones without force.
func (a *Applier) applyOne(ctx context.Context, p *ciliumv2.CiliumClusterwideNetworkPolicy) (Change, error) {
	ch := Change{Name: p.Name}
	err := retry.OnError(a.backoff, retriable, func() error {
		if err := a.checkLeader(); err != nil {
			return err
		}
		cur, err := a.ccnps.Get(ctx, p.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			cur = nil
		case err != nil:
			return err
		case !owned(cur):
			ch.Action = ActionNotOwned
			ch.Err = &NotOwnedError{Name: p.Name, ManagedBy: cur.GetLabels()[ManagedByLabel]}
			return nil
		}
		rv := ""
		if cur != nil {
			rv = cur.GetResourceVersion()
		}
		body, err := encode(p, rv)
		if err != nil {
			return err
		}
		opts := metav1.PatchOptions{FieldManager: FieldManager, DryRun: a.dryRun()}
		if cur != nil {
			// Ours at rv: take back fields someone else edited.
			force := true
			opts.Force = &force
		}
		if err := a.checkLeader(); err != nil {
			return err
		}
		out, err := a.ccnps.Patch(ctx, p.Name, types.ApplyPatchType, body, opts)
		if err != nil {
			return err
		}
		ch.Action = classify(cur, out)
		return nil
	})
	return ch, err
}

// pruneOne deletes the named object if it is still ours. It returns an
// empty Change when the object vanished or stopped being ours meanwhile.
func (a *Applier) pruneOne(ctx context.Context, name string) (Change, error) {
	var ch Change
	err := retry.OnError(a.backoff, retriable, func() error {
		if err := a.checkLeader(); err != nil {
			return err
		}
		cur, err := a.ccnps.Get(ctx, name, metav1.GetOptions{})
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
		err = a.ccnps.Delete(ctx, name, opts)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		ch = Change{Name: name, Action: ActionPruned}
		return nil
	})
	return ch, err
}

// listManaged returns the names of our CCNPs in the cluster, sorted.
func (a *Applier) listManaged(ctx context.Context) ([]string, error) {
	var names []string
	err := retry.OnError(a.backoff, retriable, func() error {
		names = names[:0]
		opts := metav1.ListOptions{LabelSelector: ManagedByLabel + "=" + ManagedByValue, Limit: 500}
		for {
			list, err := a.ccnps.List(ctx, opts)
			if err != nil {
				return err
			}
			for _, it := range list.Items {
				names = append(names, it.GetName())
			}
			if opts.Continue = list.GetContinue(); opts.Continue == "" {
				return nil
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list managed ciliumclusterwidenetworkpolicies: %w", err)
	}
	slices.Sort(names)
	return names, nil
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

func (a *Applier) logChange(ch Change, dryRun bool) {
	switch ch.Action {
	case ActionUnchanged:
		a.log.Debug("policy unchanged", "policy", ch.Name, "dry_run", dryRun)
	case ActionNotOwned, ActionFailed:
		a.log.Warn("policy not applied", "policy", ch.Name, "action", ch.Action, "err", ch.Err)
	default:
		a.log.Info("policy "+string(ch.Action), "policy", ch.Name, "dry_run", dryRun)
	}
}

func owned(obj *unstructured.Unstructured) bool {
	return obj.GetLabels()[ManagedByLabel] == ManagedByValue
}

// encode returns the apply configuration of p: our label added, server-set
// metadata and the empty status dropped, resourceVersion set to rv (a
// precondition) when not empty.
func encode(p *ciliumv2.CiliumClusterwideNetworkPolicy, rv string) ([]byte, error) {
	obj := p.DeepCopy()
	obj.APIVersion = CCNPResource.GroupVersion().String()
	obj.Kind = "CiliumClusterwideNetworkPolicy"
	obj.ObjectMeta = metav1.ObjectMeta{
		Name:            p.Name,
		Labels:          map[string]string{},
		Annotations:     p.Annotations,
		ResourceVersion: rv,
	}
	for k, v := range p.Labels {
		obj.Labels[k] = v
	}
	obj.Labels[ManagedByLabel] = ManagedByValue
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode policy %s: %w", p.Name, err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("encode policy %s: %w", p.Name, err)
	}
	// status is the agent's; creationTimestamp is marshaled as null.
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
	}
	return json.Marshal(m)
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
