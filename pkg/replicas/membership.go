package replicas

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/ptr"
)

// MembershipConfig names the replicas' Leases and sets their timings. Field names follow the
// lease flags of `run`.
type MembershipConfig struct {
	// Namespace and Name locate the Leases: replica i holds Name-replica-i (LeaseName).
	Namespace string
	Name      string
	// Self is this replica's index and Replicas the size of the set (--replica-index,
	// --replicas): the Leases of every index are watched.
	Self     int
	Replicas int
	// Identity is the holder this replica writes in its Lease (the pod name).
	Identity string
	// LeaseDuration is how long a Lease not seen to change counts as held; RenewDeadline is
	// how long this replica keeps reading after its last renewal; RetryPeriod spaces the
	// renewals and the reads of the others' Leases.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

// Validate checks the values before anything starts.
func (c MembershipConfig) Validate() error {
	switch {
	case c.Namespace == "" || c.Name == "":
		return errors.New("replica membership: lease namespace and name are required")
	case c.Replicas < 1 || c.Self < 0 || c.Self >= c.Replicas:
		return fmt.Errorf("replica membership: index %d of %d replicas", c.Self, c.Replicas)
	case c.Identity == "":
		return errors.New("replica membership: identity is required")
	case c.RetryPeriod <= 0 || c.RenewDeadline <= c.RetryPeriod || c.LeaseDuration <= c.RenewDeadline+2*c.RetryPeriod:
		// A replica notices its deadline passed at its next loop, which may wait one
		// RetryPeriod and block one more in API calls: it must have stopped reading before
		// any other replica counts its Lease expired.
		return fmt.Errorf("replica membership: want 0 < retry period (%s) < renew deadline (%s), and renew deadline + 2 x retry period < lease duration (%s)",
			c.RetryPeriod, c.RenewDeadline, c.LeaseDuration)
	}
	return nil
}

// LeaseName is the Lease replica i holds.
func (c MembershipConfig) LeaseName(i int) string { return c.Name + "-replica-" + strconv.Itoa(i) }

// Members is what a Membership drives: the node assignment (flows.Rendezvous.SetMembers)
// and, after a change, the node source re-evaluating which streams it holds
// (flows.NodesSource.Reassign).
type Members interface {
	SetMembers(members []string) error
}

// Membership keeps this replica's Lease renewed and tells the assignment which replicas are
// live: those whose Lease is held and was seen to change within its duration, judged on this
// replica's own clock (as client-go's leader election does, so clocks need not agree). This
// replica counts itself live only while its last renewal is younger than RenewDeadline
// (checked every RetryPeriod; Validate wants RenewDeadline + 2 x RetryPeriod below
// LeaseDuration): it stops reading every node before any other replica may count its Lease
// expired and take its nodes, as long as the replicas' clocks run at the same rate (their
// offsets do not matter).
//
// Two more rules keep one node from being read twice. A Lease that cannot be read keeps its
// last verdict (a replica is never taken for dead because this one could not see it), and a
// replica that could not read some Lease for RenewDeadline counts itself out, as when it
// cannot renew, and stops renewing, so that the others take its nodes once its Lease
// expires (it renews and joins again once it reads them all). And a replica counts itself in
// only once it has held its Lease for JoinDelay (RenewDeadline + 2 x RetryPeriod): by then
// every other replica has looked at the Leases since it joined and let go of the nodes that
// move to it, or has counted itself out.
type Membership struct {
	cfg      MembershipConfig
	leases   coordinationv1client.LeasesGetter
	members  Members
	onChange func()
	log      *slog.Logger

	// mu guards live (the last live set handed to members), unread (the other replicas
	// whose Lease was never read) and looked (Run looked at the Leases at least once).
	mu     sync.Mutex
	live   []string
	unread []int
	looked bool
}

// NewMembership returns the Membership of cfg.Self; onChange (may be nil) runs after every
// change of the live set, once members holds it.
func NewMembership(leases coordinationv1client.LeasesGetter, cfg MembershipConfig, members Members, onChange func(), log *slog.Logger) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if onChange == nil {
		onChange = func() {}
	}
	return &Membership{cfg: cfg, leases: leases, members: members, onChange: onChange, log: log.With("replica", cfg.Self)}, nil
}

// Live returns the replicas last found live, by index, sorted.
func (m *Membership) Live() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.live)
}

// Others returns the other replicas that may be live, by index, and false before the first
// look at the Leases: those found live at the last look, and those whose Lease could never be
// read (a replica is never taken for dead because this one could not see it). A replica
// whose Lease was read expired or released is not among them: it cannot answer
// (Set.WaitFor).
func (m *Membership) Others() ([]int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Clone(m.unread)
	for _, l := range m.live {
		if i, err := strconv.Atoi(l); err == nil && i != m.cfg.Self {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), m.looked
}

// JoinDelay is how long this replica holds its Lease before it counts itself live.
func (c MembershipConfig) JoinDelay() time.Duration { return c.RenewDeadline + 2*c.RetryPeriod }

// Run renews this replica's Lease and reads the others' every RetryPeriod until ctx ends,
// then releases the Lease so that the others take its nodes at once. It returns nil when ctx
// ends; API errors are retried (they cost this replica its nodes after RenewDeadline).
func (m *Membership) Run(ctx context.Context) error {
	obs := make([]observation, m.cfg.Replicas)
	for i := range obs {
		obs[i].read = time.Now() // blind only after RenewDeadline of failed reads
	}
	var renewed, heldSince time.Time
	renewing, blind := true, false
	tick := time.NewTicker(m.cfg.RetryPeriod)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, m.cfg.RetryPeriod)
		// The try's start, not its end: the write happened after it, so this replica's
		// deadline runs out no later than the others' view of its Lease does.
		start := time.Now()
		err := errBlind
		if !blind {
			err = m.renew(rctx, &obs[m.cfg.Self])
		}
		cancel()
		switch {
		case err == nil:
			if renewed.IsZero() || start.Sub(renewed) >= m.cfg.RenewDeadline {
				heldSince = start // (re)joined: the others have not seen it yet
			}
			renewed = start
			if !renewing {
				m.log.Info("replica membership: lease renewed again", "lease", m.cfg.LeaseName(m.cfg.Self))
			}
			renewing = true
		case ctx.Err() == nil:
			if renewing {
				m.log.Warn("replica membership: lease not renewed; this replica reads no node once the renew deadline passed or while it cannot read every Lease",
					"lease", m.cfg.LeaseName(m.cfg.Self), "deadline", m.cfg.RenewDeadline, "err", err)
			}
			renewing = false
		}
		var live []string
		live, blind = m.observe(ctx, obs, renewed, heldSince)
		m.update(live, obs)
		select {
		case <-ctx.Done():
			m.update(nil, obs)
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.RenewDeadline)
			defer cancel()
			if err := m.release(rctx); err != nil {
				m.log.Warn("replica membership: release lease; the others take its nodes once it expires", "lease", m.cfg.LeaseName(m.cfg.Self), "err", err)
			}
			return nil
		case <-tick.C:
		}
	}
}

// observe reads every other replica's Lease, each with its own timeout and all at once, and
// returns the live set. Self is in it only when renewed lies within RenewDeadline, heldSince
// is at least JoinDelay ago, and every other Lease was read within RenewDeadline (else it
// reports blind).
func (m *Membership) observe(ctx context.Context, obs []observation, renewed, heldSince time.Time) (live []string, blind bool) {
	var wg sync.WaitGroup
	read := make([]bool, m.cfg.Replicas)
	for i := range m.cfg.Replicas {
		if i == m.cfg.Self {
			continue
		}
		wg.Go(func() {
			gctx, cancel := context.WithTimeout(ctx, m.cfg.RetryPeriod)
			defer cancel()
			// read counts from when the request left, so a slow answer does not delay
			// counting this replica out when reads fail; freshness counts from the answer.
			sent := time.Now()
			cur, err := m.leases.Leases(m.cfg.Namespace).Get(gctx, m.cfg.LeaseName(i), metav1.GetOptions{})
			// Observed when the answer arrived: the Lease may have been written after the request left.
			now := time.Now()
			switch {
			case apierrors.IsNotFound(err):
				obs[i] = observation{read: sent, everRead: true}
				read[i] = true
			case err != nil:
				// Unread: its last verdict stands (see the type's doc), and read does not move.
				if ctx.Err() == nil {
					m.log.Debug("replica membership: read lease", "lease", m.cfg.LeaseName(i), "err", err)
				}
			default:
				obs[i].see(cur.Spec, now)
				obs[i].read, obs[i].everRead, read[i] = sent, true, true
			}
		})
	}
	wg.Wait()
	now := time.Now()
	for i := range m.cfg.Replicas {
		if i == m.cfg.Self {
			continue
		}
		o := &obs[i]
		if now.Sub(o.read) >= m.cfg.RenewDeadline {
			blind = true
		}
		if read[i] {
			o.live = o.fresh(now, m.cfg.LeaseDuration)
		}
		if o.live {
			live = append(live, strconv.Itoa(i))
		}
	}
	self := !renewed.IsZero() && now.Sub(renewed) < m.cfg.RenewDeadline && now.Sub(heldSince) >= m.cfg.JoinDelay() && !blind
	if self {
		live = append(live, strconv.Itoa(m.cfg.Self))
	}
	slices.Sort(live)
	return live, blind
}

// errBlind is the renewal skipped while this replica cannot read every other Lease.
var errBlind = errors.New("other replicas' Leases unreadable for the renew deadline: renewal paused so they take this replica's nodes")

// update records a look at the Leases (obs) and hands a changed live set to members and runs
// onChange.
func (m *Membership) update(live []string, obs []observation) {
	var unread []int
	for i := range obs {
		if i != m.cfg.Self && !obs[i].everRead {
			unread = append(unread, i)
		}
	}
	m.mu.Lock()
	same := slices.Equal(live, m.live) && (live != nil) == (m.live != nil)
	prev := m.live
	m.live, m.unread, m.looked = live, unread, true
	m.mu.Unlock()
	if same {
		return
	}
	if err := m.members.SetMembers(live); err != nil {
		m.log.Warn("replica membership: set members", "err", err)
		return
	}
	m.log.Info("replica set changed", "live", live, "was", prev)
	m.onChange()
}

// renew takes this replica's Lease (creating it when absent) and renews it: a
// compare-and-swap on its resourceVersion, so a restarted replica with the same index and a
// stale one cannot both think they renewed the same version.
func (m *Membership) renew(ctx context.Context, o *observation) error {
	leases := m.leases.Leases(m.cfg.Namespace)
	name := m.cfg.LeaseName(m.cfg.Self)
	now := time.Now()
	micro := metav1.NewMicroTime(now)
	// Rounded up: an observer must never judge the Lease expired before this replica's
	// RenewDeadline passed.
	seconds := int32((m.cfg.LeaseDuration + time.Second - 1) / time.Second)
	id := m.cfg.Identity
	cur, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		created, err := leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: m.cfg.Namespace},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &seconds,
				AcquireTime: &micro, RenewTime: &micro},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create lease %s/%s: %w", m.cfg.Namespace, name, err)
		}
		o.see(created.Spec, time.Now())
		return nil
	}
	if err != nil {
		return fmt.Errorf("get lease %s/%s: %w", m.cfg.Namespace, name, err)
	}
	// Observed when the answer arrived, so another holder's Lease is never judged expired early.
	seen := time.Now()
	o.see(cur.Spec, seen)
	holder := ptr.Deref(cur.Spec.HolderIdentity, "")
	if holder != "" && holder != id && o.fresh(seen, m.cfg.LeaseDuration) {
		// Another process claims this index (two pods with one index): wait for its Lease to
		// expire rather than both reading the same nodes.
		return fmt.Errorf("lease %s/%s is held by %s", m.cfg.Namespace, name, holder)
	}
	next := cur.DeepCopy()
	if holder != id {
		next.Spec.AcquireTime = &micro
		next.Spec.LeaseTransitions = ptr.To(ptr.Deref(cur.Spec.LeaseTransitions, 0) + 1)
	}
	next.Spec.HolderIdentity, next.Spec.RenewTime, next.Spec.LeaseDurationSeconds = &id, &micro, &seconds
	updated, err := leases.Update(ctx, next, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("update lease %s/%s: %w", m.cfg.Namespace, name, err)
	}
	o.see(updated.Spec, time.Now())
	return nil
}

// release empties this replica's Lease if it still holds it.
func (m *Membership) release(ctx context.Context) error {
	leases := m.leases.Leases(m.cfg.Namespace)
	cur, err := leases.Get(ctx, m.cfg.LeaseName(m.cfg.Self), metav1.GetOptions{})
	if err != nil {
		return err
	}
	if ptr.Deref(cur.Spec.HolderIdentity, "") != m.cfg.Identity {
		return nil
	}
	next := cur.DeepCopy()
	empty, micro := "", metav1.NewMicroTime(time.Now())
	next.Spec.HolderIdentity, next.Spec.RenewTime = &empty, &micro
	_, err = leases.Update(ctx, next, metav1.UpdateOptions{})
	return err
}

// observation is what this replica last saw of a Lease and when, on its own clock.
type observation struct {
	holder      string
	renew       time.Time
	transitions int32
	ttl         time.Duration
	at          time.Time
	// read is when the Lease was last read (or found absent); live the last verdict, which
	// stands while the Lease cannot be read; everRead whether it was read at all.
	read     time.Time
	live     bool
	everRead bool
}

// see records spec as observed at now, keeping the time of the last change.
func (o *observation) see(spec coordinationv1.LeaseSpec, now time.Time) {
	holder, transitions := ptr.Deref(spec.HolderIdentity, ""), ptr.Deref(spec.LeaseTransitions, 0)
	var renew time.Time
	if spec.RenewTime != nil {
		renew = spec.RenewTime.Time
	}
	var ttl time.Duration
	if d := ptr.Deref(spec.LeaseDurationSeconds, 0); d > 0 {
		ttl = time.Duration(d) * time.Second
	}
	if o.at.IsZero() || holder != o.holder || !renew.Equal(o.renew) || transitions != o.transitions {
		*o = observation{holder: holder, renew: renew, transitions: transitions, at: now, read: o.read, live: o.live, everRead: o.everRead}
	}
	o.ttl = ttl
}

// fresh reports whether the Lease is held and was seen to change within its duration: the
// longer of the Lease's own and def (this replica's), so a holder configured longer is
// never judged expired early.
func (o *observation) fresh(now time.Time, def time.Duration) bool {
	if o.holder == "" || o.at.IsZero() {
		return false
	}
	return now.Before(o.at.Add(max(o.ttl, def)))
}
