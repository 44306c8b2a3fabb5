package replicas_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/recommender/recommender/internal/k8stest"
	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replicas"
)

var env *k8stest.Cluster

func TestMain(m *testing.M) { os.Exit(k8stest.Main(m, &env)) }

// errPartitioned is what a cut replica's API requests fail with.
var errPartitioned = errors.New("partitioned from the API server")

// member is one replica of TestMembershipFollowsLeases: its Lease loop, its assignment, and a
// switch that cuts it off the API server as a network partition (or a frozen process) would.
type member struct {
	m      *replicas.Membership
	assign *flows.Rendezvous
	cut    atomic.Bool
	// blindTo, when set, is a Lease name whose reads fail (a slow or flaky API server).
	blindTo atomic.Pointer[string]
	cancel  context.CancelFunc
	done    chan error
}

// startMember runs replica cfg.Self's Membership over assign (nil: a static one of its own)
// with onChange (may be nil).
func startMember(t *testing.T, cfg replicas.MembershipConfig, assign *flows.Rendezvous, onChange func()) *member {
	t.Helper()
	mb := newMember(t, cfg, assign, onChange)
	mb.run(t)
	return mb
}

// newMember is startMember without the start: the switches can be set before its first look.
func newMember(t *testing.T, cfg replicas.MembershipConfig, assign *flows.Rendezvous, onChange func()) *member {
	t.Helper()
	mb := &member{done: make(chan error, 1), assign: assign}
	rc := rest.CopyConfig(env.Config)
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			if mb.cut.Load() {
				return nil, errPartitioned
			}
			if b := mb.blindTo.Load(); b != nil && r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/"+*b) {
				return nil, errPartitioned
			}
			return rt.RoundTrip(r)
		})
	})
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if mb.assign == nil {
		if mb.assign, err = flows.NewRendezvous(strconv.Itoa(cfg.Self), flows.StaticReplicas(cfg.Replicas)); err != nil {
			t.Fatal(err)
		}
	}
	mb.m, err = replicas.NewMembership(cs.CoordinationV1(), cfg, mb.assign, onChange, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return mb
}

// run starts the member's Lease loop, stopped at the test's end.
func (mb *member) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	mb.cancel = cancel
	go func() { mb.done <- mb.m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-mb.done; err != nil {
			t.Errorf("Membership.Run() = %v", err)
		}
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// waitFor polls cond until it holds, failing after a generous bound (never a fixed sleep).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readers maps each node to the replicas whose assignment reads it.
func readers(ms []*member, nodes []string) map[string][]string {
	out := make(map[string][]string)
	for _, n := range nodes {
		for i, mb := range ms {
			if mb.assign.Owns(n) {
				out[n] = append(out[n], strconv.Itoa(i))
			}
		}
	}
	return out
}

// settled reports whether every replica sees live as the live set, and every node is read by
// exactly one replica of live: the one rendezvous hashing over live picks.
func settled(ms []*member, live []string, nodes []string) bool {
	for i, mb := range ms {
		if slices.Contains(live, strconv.Itoa(i)) && !slices.Equal(mb.m.Live(), live) {
			return false
		}
	}
	want, err := flows.NewRendezvous(live[0], live)
	if err != nil {
		return false
	}
	for n, o := range readers(ms, nodes) {
		if len(o) != 1 || o[0] != want.Owner(n) {
			return false
		}
	}
	return len(readers(ms, nodes)) == len(nodes)
}

// Ensure each node is read by exactly one live replica: replicas join, one is cut off the API
// server (it stops reading all nodes before its Lease expires, the others then take its
// nodes), it returns and gets them back, and one that shuts down hands its nodes over at once.
func TestMembershipFollowsLeases(t *testing.T) {
	env.Require(t)
	cfg := shortLeases(3)
	var nodes []string
	for i := range 30 {
		nodes = append(nodes, fmt.Sprintf("node-%d", i))
	}
	var ms []*member
	for i := range cfg.Replicas {
		c := cfg
		c.Self, c.Identity = i, fmt.Sprintf("recommender-%d", i)
		ms = append(ms, startMember(t, c, nil, nil))
	}
	// No node is read by two replicas at any moment: while replicas join, are cut off, return
	// (each joins only once the others let go) and cannot read a Lease.
	stop := make(chan struct{})
	overlaps := make(chan string, 1)
	go func() {
		defer close(overlaps)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for n, o := range readers(ms, nodes) {
				if len(o) > 1 {
					overlaps <- fmt.Sprintf("node %s read by replicas %v at once", n, o)
					return
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		close(stop)
		if o, ok := <-overlaps; ok {
			t.Error(o)
		}
	})
	all := []string{"0", "1", "2"}
	waitFor(t, "all three replicas live", func() bool { return settled(ms, all, nodes) })
	if others, looked := ms[0].m.Others(); !looked || !slices.Equal(others, []int{1, 2}) {
		t.Errorf("replica 0's Others() = %v, %v; want [1 2], true", others, looked)
	}

	// Replica 0 cannot read replica 2's Lease: it never takes 2's nodes on that account; it
	// counts itself out and stops renewing, so 1 and 2 take its nodes, and it rejoins once it
	// reads every Lease again.
	blind := cfg.LeaseName(2)
	ms[0].blindTo.Store(&blind)
	waitFor(t, "replicas 1 and 2 taking blind replica 0's nodes", func() bool { return settled(ms, []string{"1", "2"}, nodes) })
	ms[0].blindTo.Store(nil)
	waitFor(t, "replica 0 back", func() bool { return settled(ms, all, nodes) })

	// Replica 2 is partitioned: it must drop every node first, then the others take them.
	ms[2].cut.Store(true)
	waitFor(t, "partitioned replica 2 reading nothing", func() bool { return !slices.Contains(ms[2].m.Live(), "2") })
	for n, o := range readers(ms, nodes) {
		if slices.Contains(o, "2") {
			t.Errorf("node %s read by partitioned replica 2 (owners %v)", n, o)
		}
	}
	waitFor(t, "replicas 0 and 1 taking replica 2's nodes", func() bool { return settled(ms, []string{"0", "1"}, nodes) })
	if others, looked := ms[0].m.Others(); !looked || !slices.Equal(others, []int{1}) {
		t.Errorf("replica 0's Others() with replica 2 partitioned = %v, %v; want [1], true", others, looked)
	}

	// It returns: it renews its Lease and gets its nodes back.
	ms[2].cut.Store(false)
	waitFor(t, "replica 2 back", func() bool { return settled(ms, all, nodes) })

	// Replica 1 shuts down: it releases its Lease, the others do not wait for it to expire.
	ms[1].cancel()
	if err := <-ms[1].done; err != nil {
		t.Fatalf("Membership.Run() = %v", err)
	}
	ms[1].done <- nil // for the cleanup
	if got := ms[1].assign.Members(); len(got) != 0 {
		t.Errorf("stopped replica's members = %v, want none", got)
	}
	waitFor(t, "replicas 0 and 2 taking replica 1's nodes", func() bool { return settled(ms, []string{"0", "2"}, nodes) })
}

// shortLeases is a Membership configuration of n replicas on fresh Leases with timings short
// enough for a test (the waits poll; none of them is asserted).
func shortLeases(n int) replicas.MembershipConfig {
	return replicas.MembershipConfig{
		Namespace: "default", Name: "members-" + strings.ToLower(rand.Text()[:8]), Replicas: n,
		LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 200 * time.Millisecond,
	}
}

// readBy reports whether the replicas read exactly the nodes want maps to them, each node
// by one replica.
func readBy(rs []*replica, want map[string]int) bool {
	got := map[string]int{}
	for i, r := range rs {
		for _, n := range r.nodes.Nodes() {
			if n.Read {
				if _, twice := got[n.Name]; twice {
					return false
				}
				got[n.Name] = i
			}
		}
	}
	return maps.Equal(got, want)
}

// Ensure that replicas whose membership follows their Leases synthesize from the same totals
// as one daemon: a replica partitioned and killed hands its nodes to the live ones, which
// start where its summary says it read them to (no event delivered again), and it gets them
// back when it returns, again with nothing delivered twice.
func TestLeaseReplicasMatchOneDaemon(t *testing.T) {
	env.Require(t)
	c, dir, want := oneDaemon(t)

	cfg := shortLeases(3)
	own3, own2 := owners(t, c, 3), map[string]int{}
	{
		r, err := flows.NewRendezvous("0", []string{"0", "1"})
		if err != nil {
			t.Fatal(err)
		}
		for _, node := range c.nodes {
			own2[node], _ = strconv.Atoi(r.Owner(node))
		}
	}
	moved := 0
	for node, o := range own3 {
		if o == 2 {
			moved++
			if own2[node] == 2 {
				t.Fatalf("node %s stays on replica 2 of 2", node)
			}
		}
	}
	if moved == 0 {
		t.Fatalf("replica 2 owns no node (%v): the handover is untested", own3)
	}

	rs := replicaSet(dir, nil, ports(t, 3))
	ms := make([]*member, len(rs))
	startAll := func(i int, want int) {
		r := rs[i]
		r.readNone = true
		r.start(t, c, want)
		mc := cfg
		mc.Self, mc.Identity = i, fmt.Sprintf("recommender-%d", i)
		ms[i] = startMember(t, mc, r.set.Assignment(), r.set.Handover(r.nodes.Release, r.nodes.Reassign))
	}
	for i := range rs {
		n := 0
		for node, o := range own3 {
			if o == i {
				n += c.raw[node]
			}
		}
		startAll(i, n)
	}
	waitFor(t, "three replicas reading their nodes", func() bool { return readBy(rs, own3) })
	for _, r := range rs {
		r.wait(t)
	}
	sameTotals(t, "three lease replicas", merged(t, rs[0], want), want)

	// Replica 2 is partitioned, then dies: the others take its nodes, from its cursor.
	rs[0].set.Snapshot(t.Context()) // pulls replica 2's final positions before it goes
	rs[1].set.Snapshot(t.Context())
	ms[2].cut.Store(true)
	waitFor(t, "partitioned replica 2 reading nothing", func() bool { return !slices.Contains(ms[2].m.Live(), "2") })
	rs[2].kill(t)
	waitFor(t, "replicas 0 and 1 reading replica 2's nodes", func() bool { return readBy(rs[:2], own2) })
	sameTotals(t, "replica 2 dead, its nodes read by 0 and 1", merged(t, rs[0], want), want)

	// It returns on its store: it gets its nodes back, read from where 0 and 1 stopped.
	ms[2].cancel()
	<-ms[2].done
	ms[2].done <- nil
	startAll(2, 0)
	waitFor(t, "replica 2 reading its nodes again", func() bool { return readBy(rs, own3) })
	sameTotals(t, "replica 2 back", merged(t, rs[0], want), want)
	var stores []*aggregate.Snapshot
	for i, r := range rs {
		ms[i].cancel()
		r.kill(t)
		stores = append(stores, storeSnapshot(t, r.db))
	}
	sameTotals(t, "three stores", aggregate.Merge(stores...), want)
}

// Ensure Others counts a replica whose Lease this one could never read as possibly live (the
// first Snapshot then waits for it), and drops one whose Lease it read released.
func TestOthersCountsUnreadLeases(t *testing.T) {
	env.Require(t)
	cfg := shortLeases(3)
	ms := make([]*member, cfg.Replicas)
	for _, i := range []int{1, 2} {
		c := cfg
		c.Self, c.Identity = i, fmt.Sprintf("recommender-%d", i)
		ms[i] = startMember(t, c, nil, nil)
	}
	both := []string{"1", "2"}
	waitFor(t, "replicas 1 and 2 live", func() bool {
		return slices.Equal(ms[1].m.Live(), both) && slices.Equal(ms[2].m.Live(), both)
	})

	c := cfg
	c.Identity = "recommender-0"
	ms[0] = newMember(t, c, nil, nil)
	blind := cfg.LeaseName(1)
	ms[0].blindTo.Store(&blind)
	if others, looked := ms[0].m.Others(); looked || others != nil {
		t.Errorf("Others() before the first look = %v, %v; want none, false", others, looked)
	}
	ms[0].run(t)
	waitFor(t, "replica 0's first look", func() bool { _, looked := ms[0].m.Others(); return looked })
	if others, _ := ms[0].m.Others(); !slices.Equal(others, []int{1, 2}) {
		t.Errorf("Others() with replica 1's Lease unreadable = %v, want [1 2]", others)
	}

	ms[0].blindTo.Store(nil)
	ms[1].cancel() // releases its Lease
	<-ms[1].done
	ms[1].done <- nil // for the cleanup
	waitFor(t, "replica 0 seeing replica 1's Lease released", func() bool {
		others, _ := ms[0].m.Others()
		return slices.Equal(others, []int{2})
	})
}
