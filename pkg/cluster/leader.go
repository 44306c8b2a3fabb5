package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/ptr"
)

// ElectionConfig names the Lease and sets the election timings.
type ElectionConfig struct {
	// Namespace and Name locate the Lease; deploy/rbac.yaml grants
	// kube-system/recommender.
	Namespace string
	Name      string
	// Identity is this replica's name in the Lease (the pod name).
	Identity string
	// LeaseDuration is how long others wait after the last renewal before
	// taking over; RenewDeadline is how long the leader keeps trying to renew
	// before it gives up; RetryPeriod spaces the tries.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

// DefaultElectionConfig uses client-go's customary timings (15 s, 10 s, 2 s).
func DefaultElectionConfig(identity string) ElectionConfig {
	return ElectionConfig{
		Namespace:     "kube-system",
		Name:          "recommender",
		Identity:      identity,
		LeaseDuration: 15 * time.Second,
		RenewDeadline: 10 * time.Second,
		RetryPeriod:   2 * time.Second,
	}
}

// Validate checks the values before anything starts.
func (c ElectionConfig) Validate() error {
	switch {
	case c.Namespace == "" || c.Name == "":
		return errors.New("leader election: lease namespace and name are required")
	case len(validation.IsDNS1123Subdomain(c.Name)) > 0 || len(validation.IsDNS1123Label(c.Namespace)) > 0:
		// client-go would only log the API server's refusal, forever.
		return fmt.Errorf("leader election: lease %s/%s: not a valid namespace and object name", c.Namespace, c.Name)
	case c.Identity == "":
		return errors.New("leader election: identity is required")
	case c.RetryPeriod <= 0 || c.RenewDeadline <= c.RetryPeriod || c.LeaseDuration <= c.RenewDeadline:
		return fmt.Errorf("leader election: want 0 < retry period (%s) < renew deadline (%s) < lease duration (%s)",
			c.RetryPeriod, c.RenewDeadline, c.LeaseDuration)
	}
	return nil
}

// Elector runs leader election on a coordination.k8s.io Lease and gates
// writes with IsLeader.
type Elector struct {
	cfg    ElectionConfig
	leases coordinationv1client.LeasesGetter
	log    *slog.Logger
	// leading is true from the moment the lease is acquired until the lease
	// is lost or given up; Applier checks it before every write.
	leading atomic.Bool
}

// NewElector returns an Elector using leases to read and write the Lease. It
// registers recommender_leader on reg.
func NewElector(leases coordinationv1client.LeasesGetter, cfg ElectionConfig, log *slog.Logger, reg prometheus.Registerer) (*Elector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Elector{cfg: cfg, leases: leases, log: log}
	if reg != nil {
		promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
			Name: "recommender_leader",
			Help: "1 while this replica holds the leader Lease (it alone writes to the cluster and opens pull requests), else 0.",
		}, func() float64 {
			if e.IsLeader() {
				return 1
			}
			return 0
		})
	}
	return e, nil
}

// TakeoverBound is the longest a standby waits to lead after the leader died
// without releasing the Lease (SIGKILL, node loss): the lease must expire
// (LeaseDuration after its last renewal) and the standby's next try comes at
// most RetryPeriod later, stretched by client-go's jitter (factor 1.2).
func (c ElectionConfig) TakeoverBound() time.Duration {
	return c.LeaseDuration + c.RetryPeriod + c.RetryPeriod*2/10
}

// preflight checks the rights on the Lease once, so that missing rights are one clear error
// instead of client-go retrying and logging "forbidden" every RetryPeriod: it reads the Lease,
// then asks the API server to create it (when absent) or update it (when present) as a dry
// run, which authorizes the write without making it.
func (e *Elector) preflight(ctx context.Context) error {
	leases := e.leases.Leases(e.cfg.Namespace)
	dryRun := []string{metav1.DryRunAll}
	cur, err := leases.Get(ctx, e.cfg.Name, metav1.GetOptions{})
	verb := "get"
	switch {
	case apierrors.IsNotFound(err):
		verb = "create"
		_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: e.cfg.Name, Namespace: e.cfg.Namespace}},
			metav1.CreateOptions{DryRun: dryRun})
		if apierrors.IsAlreadyExists(err) {
			err = nil // another replica created it meanwhile
		}
	case err == nil:
		verb = "update"
		_, err = leases.Update(ctx, cur, metav1.UpdateOptions{DryRun: dryRun})
		if apierrors.IsConflict(err) {
			err = nil // renewed meanwhile: the right was checked before the conflict
		}
	}
	switch {
	case err == nil:
		return nil
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w: %s lease %s/%s: %v (the service account needs get, create and update on this Lease: a Role in namespace %s, see deploy/rbac.yaml)",
			ErrLeaseForbidden, verb, e.cfg.Namespace, e.cfg.Name, err, e.cfg.Namespace)
	default:
		return fmt.Errorf("leader election: %s lease %s/%s: %w", verb, e.cfg.Namespace, e.cfg.Name, err)
	}
}

// IsLeader reports whether this replica holds the lease now.
func (e *Elector) IsLeader() bool { return e.leading.Load() }

// Run campaigns for the lease and calls lead while holding it, with a
// context that ends when the lease is lost or ctx ends. Run returns when ctx
// ends (nil), when lead returns (nil; the lease is released), or when the
// lease is lost (ErrLeaseLost); the daemon then exits or campaigns again.
// Before campaigning it checks its rights on the Lease once: missing rights
// return ErrLeaseForbidden at once.
//
// The protocol is client-go's (tools/leaderelection) on a Lease, without its
// dependency tree (issue 19): a follower takes the lease only when its holder
// has not renewed it for LeaseDuration as measured on the follower's own clock
// (the time it last saw the lease change, so clocks need not agree); the
// leader renews every RetryPeriod and gives up when it could not renew for
// RenewDeadline, shorter than LeaseDuration, so it stops before anyone may
// take over. Every write is a compare-and-swap on the Lease's
// resourceVersion. The lease is released only after lead has returned, so no
// write of this replica can overlap the next leader's. IsLeader turns false
// the moment the lease is lost, before lead has noticed its context.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) error {
	if err := e.preflight(ctx); err != nil {
		return err
	}
	var obs observation
	for {
		ok, err := e.acquireOrRenew(ctx, &obs)
		if ok {
			break
		}
		if err != nil && ctx.Err() == nil {
			e.log.Debug("leader election: try to acquire", "lease", e.lease(), "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(jittered(e.cfg.RetryPeriod)):
		}
	}

	e.leading.Store(true)
	e.log.Info("leader lease acquired", "lease", e.lease(), "identity", e.cfg.Identity)
	// lead's context ends only after IsLeader turned false, whatever ends it: lead must never
	// see its context done while IsLeader still says yes.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	stopWork := func() {
		e.leading.Store(false)
		cancelWork()
	}
	defer stopWork()
	defer context.AfterFunc(ctx, stopWork)()
	leadDone := make(chan struct{})
	go func() {
		defer close(leadDone)
		lead(workCtx)
	}()

	lost := e.hold(ctx, &obs, leadDone)
	stopWork()
	<-leadDone
	if lost {
		e.log.Warn("leader lease lost", "lease", e.lease(), "identity", e.cfg.Identity)
		return ErrLeaseLost
	}
	// Released with a context of its own: ctx may be what ended the lead.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.RenewDeadline)
	defer cancel()
	if err := e.release(rctx); err != nil {
		e.log.Warn("leader election: release lease; the next leader waits for it to expire", "lease", e.lease(), "err", err)
	}
	return nil
}

// hold renews the lease every RetryPeriod until lead returns or ctx ends
// (false), or until no renewal succeeded for RenewDeadline (true: lost).
func (e *Elector) hold(ctx context.Context, obs *observation, leadDone <-chan struct{}) (lost bool) {
	renewed := time.Now()
	tick := time.NewTicker(e.cfg.RetryPeriod)
	defer tick.Stop()
	for {
		select {
		case <-leadDone:
			return false
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
		deadline := renewed.Add(e.cfg.RenewDeadline)
		if time.Now().After(deadline) {
			return true
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		ok, err := e.acquireOrRenew(rctx, obs)
		cancel()
		switch {
		case ok:
			renewed = time.Now()
		case ctx.Err() != nil:
			return false
		case time.Now().After(deadline):
			return true
		case err != nil:
			e.log.Debug("leader election: renew", "lease", e.lease(), "err", err)
		}
	}
}

// observation is what a replica last saw of the lease and when, on its own
// clock: expiry is judged from it, never from the holder's timestamps.
type observation struct {
	holder      string
	renew       time.Time
	transitions int32
	at          time.Time
}

// acquireOrRenew takes the lease if it is free, expired or ours, and renews
// it if it is ours. It reports whether this replica holds it afterwards.
func (e *Elector) acquireOrRenew(ctx context.Context, obs *observation) (bool, error) {
	leases := e.leases.Leases(e.cfg.Namespace)
	now := time.Now()
	seconds := int32(e.cfg.LeaseDuration / time.Second)
	micro := metav1.NewMicroTime(now)
	cur, err := leases.Get(ctx, e.cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		id := e.cfg.Identity
		created, err := leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: e.cfg.Name, Namespace: e.cfg.Namespace},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &seconds,
				AcquireTime: &micro, RenewTime: &micro},
		}, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		obs.see(created.Spec, now)
		return true, nil
	}
	if err != nil {
		return false, err
	}
	obs.see(cur.Spec, now)
	holder := ptr.Deref(cur.Spec.HolderIdentity, "")
	if holder != "" && holder != e.cfg.Identity {
		ttl := e.cfg.LeaseDuration
		if d := cur.Spec.LeaseDurationSeconds; d != nil && *d > 0 {
			ttl = time.Duration(*d) * time.Second
		}
		if now.Before(obs.at.Add(ttl)) {
			return false, nil // held, and renewed within its duration as far as we saw
		}
	}
	next := cur.DeepCopy()
	if holder != e.cfg.Identity {
		next.Spec.AcquireTime = &micro
		next.Spec.LeaseTransitions = ptr.To(ptr.Deref(cur.Spec.LeaseTransitions, 0) + 1)
	}
	id := e.cfg.Identity
	next.Spec.HolderIdentity, next.Spec.RenewTime, next.Spec.LeaseDurationSeconds = &id, &micro, &seconds
	updated, err := leases.Update(ctx, next, metav1.UpdateOptions{})
	if err != nil {
		return false, err // a conflict: someone else wrote it first
	}
	obs.see(updated.Spec, now)
	return true, nil
}

// see records the lease as observed at now, keeping the time of the last
// change: a lease whose record did not change for its duration has expired.
func (o *observation) see(spec coordinationv1.LeaseSpec, now time.Time) {
	holder, transitions := ptr.Deref(spec.HolderIdentity, ""), ptr.Deref(spec.LeaseTransitions, 0)
	var renew time.Time
	if spec.RenewTime != nil {
		renew = spec.RenewTime.Time
	}
	if o.at.IsZero() || holder != o.holder || !renew.Equal(o.renew) || transitions != o.transitions {
		*o = observation{holder: holder, renew: renew, transitions: transitions, at: now}
	}
}

// release gives the lease up if this replica still holds it, so the next
// leader need not wait for it to expire (client-go's ReleaseOnCancel).
func (e *Elector) release(ctx context.Context) error {
	leases := e.leases.Leases(e.cfg.Namespace)
	cur, err := leases.Get(ctx, e.cfg.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if ptr.Deref(cur.Spec.HolderIdentity, "") != e.cfg.Identity {
		return nil
	}
	next := cur.DeepCopy()
	empty, one, micro := "", int32(1), metav1.NewMicroTime(time.Now())
	next.Spec.HolderIdentity, next.Spec.LeaseDurationSeconds = &empty, &one
	next.Spec.RenewTime, next.Spec.AcquireTime = &micro, &micro
	_, err = leases.Update(ctx, next, metav1.UpdateOptions{})
	return err
}

func (e *Elector) lease() string { return e.cfg.Namespace + "/" + e.cfg.Name }

// jittered spaces acquisition tries as client-go does: d plus up to a fifth
// (TakeoverBound counts with it).
func jittered(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}
