package replicas_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
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
	cancel context.CancelFunc
	done   chan error
}

func startMember(t *testing.T, cfg replicas.MembershipConfig) *member {
	t.Helper()
	mb := &member{done: make(chan error, 1)}
	rc := rest.CopyConfig(env.Config)
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			if mb.cut.Load() {
				return nil, errPartitioned
			}
			return rt.RoundTrip(r)
		})
	})
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	mb.assign, err = flows.NewRendezvous(strconv.Itoa(cfg.Self), flows.StaticReplicas(cfg.Replicas))
	if err != nil {
		t.Fatal(err)
	}
	mb.m, err = replicas.NewMembership(cs.CoordinationV1(), cfg, mb.assign, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	mb.cancel = cancel
	go func() { mb.done <- mb.m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-mb.done; err != nil {
			t.Errorf("Membership.Run() = %v", err)
		}
	})
	return mb
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
	cfg := replicas.MembershipConfig{
		Namespace: "default", Name: "members-" + strings.ToLower(rand.Text()[:8]), Replicas: 3,
		LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 200 * time.Millisecond,
	}
	var nodes []string
	for i := range 30 {
		nodes = append(nodes, fmt.Sprintf("node-%d", i))
	}
	var ms []*member
	for i := range cfg.Replicas {
		c := cfg
		c.Self, c.Identity = i, fmt.Sprintf("recommender-%d", i)
		ms = append(ms, startMember(t, c))
	}
	all := []string{"0", "1", "2"}
	waitFor(t, "all three replicas live", func() bool { return settled(ms, all, nodes) })

	// Replica 2 is partitioned: it must drop every node first, then the others take them.
	ms[2].cut.Store(true)
	waitFor(t, "partitioned replica 2 reading nothing", func() bool { return !slices.Contains(ms[2].m.Live(), "2") })
	for n, o := range readers(ms, nodes) {
		if slices.Contains(o, "2") {
			t.Errorf("node %s read by partitioned replica 2 (owners %v)", n, o)
		}
	}
	waitFor(t, "replicas 0 and 1 taking replica 2's nodes", func() bool { return settled(ms, []string{"0", "1"}, nodes) })

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
