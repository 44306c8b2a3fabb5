package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// ElectionConfig names the Lease and sets client-go's election timings.
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
// Before campaigning it reads the Lease once: missing rights return
// ErrLeaseForbidden at once.
//
// The lease is released only after lead has returned, so no write of this
// replica can overlap the next leader's (client-go's ReleaseOnCancel
// contract). IsLeader turns false the moment the lease is lost, before lead
// has noticed its context.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) error {
	if err := e.preflight(ctx); err != nil {
		return err
	}
	// The election loop gets its own context so that cancelling ctx first
	// stops lead and only then releases the lease.
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()

	var (
		// mu guards stopping and the Add on running: once stopping is set
		// no new lead starts, so running.Wait cannot race with Add.
		mu       sync.Mutex
		stopping bool
		running  sync.WaitGroup
		led      atomic.Bool
		returned atomic.Bool
	)
	onStarted := func(leaseCtx context.Context) {
		mu.Lock()
		if stopping {
			mu.Unlock()
			return
		}
		running.Add(1)
		mu.Unlock()
		defer running.Done()

		workCtx, cancel := context.WithCancel(leaseCtx)
		defer cancel()
		stopOnParent := context.AfterFunc(ctx, cancel)
		defer stopOnParent()
		context.AfterFunc(workCtx, func() { e.leading.Store(false) })
		e.leading.Store(true)
		led.Store(true)
		e.log.Info("leader lease acquired", "lease", e.cfg.Namespace+"/"+e.cfg.Name, "identity", e.cfg.Identity)

		lead(workCtx)

		e.leading.Store(false)
		if ctx.Err() == nil && leaseCtx.Err() == nil {
			returned.Store(true)
			stopElection()
		}
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-electCtx.Done():
		}
		mu.Lock()
		stopping = true
		mu.Unlock()
		running.Wait()
		stopElection()
	}()

	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: e.cfg.Namespace, Name: e.cfg.Name},
			Client:     e.leases,
			LockConfig: resourcelock.ResourceLockConfig{Identity: e.cfg.Identity},
		},
		LeaseDuration:   e.cfg.LeaseDuration,
		RenewDeadline:   e.cfg.RenewDeadline,
		RetryPeriod:     e.cfg.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            e.cfg.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: onStarted,
			OnStoppedLeading: func() { e.leading.Store(false) },
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	le.Run(electCtx)
	// client-go starts lead in its own goroutine; wait for it so Run never
	// returns while lead still writes.
	mu.Lock()
	stopping = true
	mu.Unlock()
	running.Wait()

	switch {
	case ctx.Err() != nil || returned.Load() || !led.Load():
		return nil
	default:
		e.log.Warn("leader lease lost", "lease", e.cfg.Namespace+"/"+e.cfg.Name, "identity", e.cfg.Identity)
		return ErrLeaseLost
	}
}
