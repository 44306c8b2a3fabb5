package auditor

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

var (
	base = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	web  = flows.Peer{Kind: flows.PeerWorkload, Namespace: "shop", Labels: flows.NewLabels("k8s:app=web")}
	db   = flows.Peer{Kind: flows.PeerWorkload, Namespace: "shop", Labels: flows.NewLabels("k8s:app=db")}
	evil = flows.Peer{Kind: flows.PeerWorkload, Namespace: "shop", Labels: flows.NewLabels("k8s:app=evil")}
	host = flows.Peer{Kind: flows.PeerEntity, Entity: "host"}
)

func ev(sec int, src, dst flows.Peer, port uint16, v flows.Verdict) *flows.Event {
	return &flows.Event{Kind: flows.KindFlow, Time: base.Add(time.Duration(sec) * time.Second), Node: "n1",
		Type: flows.EventTrace, Src: src, Dst: dst, Proto: flows.ProtoTCP, Port: port, SrcPort: 40000, Verdict: v}
}

// learn proposes policies for web -> db:5432 and puts both workloads in audit.
func learn(t *testing.T, cfg lifecycle.Config) (*Auditor, *metrics, *aggregate.Snapshot) {
	t.Helper()
	agg, err := aggregate.NewAggregator(aggregate.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		agg.Add(ev(i*60, web, db, 5432, flows.VerdictForwarded))
	}
	sc := synth.DefaultConfig()
	sc.MinObserve = 0
	res, err := synth.Synthesize(agg.Snapshot(), sc)
	if err != nil || len(res.Proposals) != 2 {
		t.Fatalf("Synthesize = %d proposals, %v; want 2 (%s)", len(res.Proposals), err, res.Empty)
	}
	a, err := New(Config{Lifecycle: cfg}, emptyStore(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	t.Cleanup(a.Close)
	prometheus.NewPedanticRegistry().MustRegister(a.Collectors()...)
	snap := agg.Snapshot()
	if trs := a.Update(res, snap, nil); len(trs) != 2 {
		t.Fatalf("update = %d transitions, want 2 proposals", len(trs))
	}
	return a, a.m, snap
}

// see hands events to the auditor and waits until they are accounted.
func see(a *Auditor, evs ...*flows.Event) {
	for _, e := range evs {
		a.Observe(e)
	}
	a.Drain()
}

// commit commits to the store through an Ingester, as the daemon does, with before inside the
// transaction and after once it is on disk (when not nil).
func commit(t *testing.T, store *aggregate.Store, before func(*aggregate.Lifecycle) error, after func()) error {
	t.Helper()
	agg, err := aggregate.NewAggregator(aggregate.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	hooks := aggregate.IngestHooks{BeforeCommit: before}
	if after != nil {
		hooks.AfterCommit = func(aggregate.CommitInfo) { after() }
	}
	in, err := aggregate.NewIngester(store, agg, aggregate.IngesterConfig{Hooks: hooks}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return in.Commit(t.Context())
}

// emptyStore returns a new store in the test's directory.
func emptyStore(t *testing.T) *aggregate.Store {
	t.Helper()
	store, err := aggregate.Open(filepath.Join(t.TempDir(), "db"), aggregate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

func counter(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		sum += pb.GetCounter().GetValue()
	}
	return sum
}

func TestAuditorVerdicts(t *testing.T) {
	web2db := ev(2000, web, db, 5432, flows.VerdictForwarded)
	tests := []struct {
		name                         string
		cfg                          func(*lifecycle.Config)
		events                       []*flows.Event
		wouldDeny, ciliumAudit, drop float64
		state                        lifecycle.State // of db
	}{
		{name: "known traffic is clean", events: []*flows.Event{web2db, web2db}, state: lifecycle.Audit},
		{name: "a new client is would-be-denied at the server's ingress",
			events: []*flows.Event{ev(2000, evil, db, 5432, flows.VerdictForwarded)}, wouldDeny: 1, state: lifecycle.Audit},
		{name: "a known client on a new port is denied at both ends",
			events: []*flows.Event{ev(2000, web, db, 22, flows.VerdictForwarded)}, wouldDeny: 2, state: lifecycle.Audit},
		{name: "traffic Cilium dropped is no evidence against the proposal",
			events: []*flows.Event{ev(2000, evil, db, 5432, flows.VerdictDropped)}, state: lifecycle.Audit},
		{name: "host ingress is allowed (allow-localhost)",
			events: []*flows.Event{ev(2000, host, db, 5432, flows.VerdictForwarded)}, state: lifecycle.Audit},
		{name: "Cilium's own AUDIT verdict counts once, with the shadow verdict",
			events:    []*flows.Event{with(ev(2000, evil, db, 5432, flows.VerdictAudit), func(e *flows.Event) { e.Point = flows.DirectionIngress })},
			wouldDeny: 1, ciliumAudit: 1, state: lifecycle.Audit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := lifecycle.Config{Window: time.Hour, MinWindowFlows: 1, MaxLostRatio: 1, Learn: true}
			a, m, _ := learn(t, cfg)
			for _, e := range tt.events {
				see(a, e)
			}
			if got := counter(t, m.wouldDeny); got != tt.wouldDeny {
				t.Errorf("would-deny = %g, want %g", got, tt.wouldDeny)
			}
			if got := counter(t, m.auditDeny); got != tt.ciliumAudit {
				t.Errorf("cilium audit = %g, want %g", got, tt.ciliumAudit)
			}
			if got := a.machine.Record("shop/k8s:app=db").State; got != tt.state {
				t.Errorf("db state = %s, want %s", got, tt.state)
			}
		})
	}
}

func with(e *flows.Event, f func(*flows.Event)) *flows.Event { f(e); return e }

// Ensure a clean window promotes, a policy drop after enforcement is counted and, with
// DemoteOnDrop, returns the workload to audit; and that with Learn off a would-be-denied
// flow holds the revision.
func TestAuditorLifecycle(t *testing.T) {
	cfg := lifecycle.Config{Window: time.Hour, MinWindowFlows: 1, MaxLostRatio: 1, Learn: true, DemoteOnDrop: true}
	a, m, snap := learn(t, cfg)
	a.wall = func() time.Time { return base.Add(24 * time.Hour) }
	see(a, ev(2000, web, db, 5432, flows.VerdictForwarded))
	see(a, ev(2000+7200, web, db, 5432, flows.VerdictForwarded)) // two hours of flow time later
	if trs := a.Update(&synth.Result{}, snap, nil); len(trs) != 2 {
		t.Fatalf("update after a clean window = %v, want two promotions", trs)
	}
	see(a, with(ev(9300, evil, db, 5432, flows.VerdictDropped), func(e *flows.Event) {
		e.DropReason = "POLICY_DENIED"
		e.Point = flows.DirectionIngress
	}))
	if got := counter(t, m.policyDrops); got != 1 {
		t.Errorf("policy drops = %g, want 1", got)
	}
	if got := a.machine.Record("shop/k8s:app=db").State; got != lifecycle.Audit {
		t.Errorf("db after a policy drop with DemoteOnDrop = %s, want audit", got)
	}
	if got := a.machine.Record("shop/k8s:app=web").State; got != lifecycle.Enforced {
		t.Errorf("web (not the dropping side) = %s, want enforced", got)
	}

	cfg.Learn = false
	a, _, _ = learn(t, cfg)
	see(a, ev(2000, evil, db, 5432, flows.VerdictForwarded))
	if r := a.machine.Record("shop/k8s:app=db"); !r.Held {
		t.Errorf("db after a would-be-denied flow with Learn off: held = false, want true")
	}
}

// Ensure a lifecycle change survives a failed commit: it stays pending and the next commit
// writes it, even when nothing changed in between; and that a record written is read back by
// the next process's New.
func TestPersistKeepsPendingOnFailure(t *testing.T) {
	cfg := lifecycle.Config{Window: time.Hour, MinWindowFlows: 1, MaxLostRatio: 1, Learn: true}
	a, _, _ := learn(t, cfg)
	store := emptyStore(t)
	failed := errors.New("disk full")
	if err := commit(t, store, func(l *aggregate.Lifecycle) error {
		if err := a.persist(l); err != nil {
			return err
		}
		return failed
	}, a.persisted); !errors.Is(err, failed) {
		t.Fatalf("commit = %v, want the injected failure", err)
	}
	if b, _ := store.Lifecycle("shop/k8s:app=db"); b != nil {
		t.Fatalf("a rolled-back commit left a record: %s", b)
	}
	if err := commit(t, store, a.persist, a.persisted); err != nil {
		t.Fatal(err)
	}
	b, err := store.Lifecycle("shop/k8s:app=db")
	if err != nil || b == nil {
		t.Fatalf("record after the retry = %q, %v; want it written", b, err)
	}
	if len(a.pending) != 0 {
		t.Errorf("pending after a successful commit = %d records, want 0", len(a.pending))
	}
	again, err := New(Config{Lifecycle: cfg}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if r := again.machine.Record("shop/k8s:app=db"); r == nil || r.State != lifecycle.Audit {
		t.Errorf("record read back = %+v, want db in audit", r)
	}
}

// Ensure a workload forgotten and tracked again before the next commit keeps its record: the
// commit must not delete what is live.
func TestPersistForgetThenTrack(t *testing.T) {
	cfg := lifecycle.Config{Window: time.Hour, MinWindowFlows: 1, MaxLostRatio: 1, Learn: true}
	a, _, snap := learn(t, cfg)
	store := emptyStore(t)
	if err := commit(t, store, a.persist, a.persisted); err != nil {
		t.Fatal(err)
	}
	a.Update(&synth.Result{}, &aggregate.Snapshot{To: snap.To}, nil) // both left the store: forgotten (warm-up 0 retires)
	a.Update(&synth.Result{}, snap, nil)                             // and came back
	if err := commit(t, store, a.persist, a.persisted); err != nil {
		t.Fatal(err)
	}
	if b, err := store.Lifecycle("shop/k8s:app=db"); err != nil || b == nil {
		t.Errorf("record of a workload back in the store = %q, %v; want it kept", b, err)
	}
}

// Ensure a store whose lifecycle state cannot be decoded is an error that names the store and
// the record.
func TestNewCorruptLifecycle(t *testing.T) {
	for _, key := range []string{"shop/k8s:app=db", nodeTotalsKey, retiredKey} {
		store := emptyStore(t)
		if err := commit(t, store, func(l *aggregate.Lifecycle) error { return l.Put(key, []byte("not json")) }, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := New(Config{Lifecycle: lifecycle.DefaultConfig()}, store, nil); err == nil || !strings.Contains(err.Error(), store.Path()) {
			t.Errorf("%s: New = %v, want an error naming the store", key, err)
		}
	}
}

// Ensure repeated policy drops on one edge are counted each time but logged once (issue 17:
// logs are per state change, not per flow).
func TestAuditorLogsDropsOncePerEdge(t *testing.T) {
	cfg := lifecycle.Config{Window: time.Hour, MinWindowFlows: 1, MaxLostRatio: 1, Learn: true}
	a, m, snap := learn(t, cfg)
	var logs bytes.Buffer
	a.log = slog.New(slog.NewTextHandler(&logs, nil))
	a.wall = func() time.Time { return base.Add(24 * time.Hour) }
	see(a, ev(2000, web, db, 5432, flows.VerdictForwarded))
	see(a, ev(2000+7200, web, db, 5432, flows.VerdictForwarded))
	a.Update(&synth.Result{}, snap, nil)
	for i := range 5 {
		see(a, with(ev(9300+i, evil, db, 5432, flows.VerdictDropped), func(e *flows.Event) {
			e.DropReason = "POLICY_DENIED"
			e.Point = flows.DirectionIngress
		}))
	}
	if got := counter(t, m.policyDrops); got != 5 {
		t.Errorf("policy drops = %g, want 5", got)
	}
	if n := strings.Count(logs.String(), "enforced policy dropped a flow"); n != 1 {
		t.Errorf("drop logged %d times, want once per edge:\n%s", n, logs.String())
	}
}

// Ensure a policy drop after enforcement is blamed on the policy the flow names, or, when it
// names none, on what its drop reason says: a default deny blames the policy in force, an
// explicit deny or authentication rule (never generated) another policy; only a drop blamed
// on ours counts against it and demotes it.
func TestAuditorDropAttribution(t *testing.T) {
	const ours = "shop-db"
	drop := func(reason string, f func(*flows.Event)) *flows.Event {
		return with(ev(9300, evil, db, 5432, flows.VerdictDropped), func(e *flows.Event) {
			e.DropReason = reason
			e.Point = flows.DirectionIngress
			if f != nil {
				f(e)
			}
		})
	}
	tests := []struct {
		name              string
		ev                *flows.Event
		ours, foreign     float64
		policy, blamedWhy string
	}{
		{"default deny blames the policy in force", drop("POLICY_DENIED", nil), 1, 0, ours, AttributedDefaultDeny},
		{"Hubble names our policy", drop("POLICY_DENIED", func(e *flows.Event) {
			e.DeniedBy = []flows.PolicyRef{{Kind: "CiliumClusterwideNetworkPolicy", Name: ours}}
		}), 1, 0, ours, AttributedByHubble},
		{"our spec.log value in policy_log", drop("POLICY_DENIED", func(e *flows.Event) { e.PolicyLog = []string{ours} }), 1, 0, ours, AttributedByHubble},
		{"Hubble names another policy", drop("POLICY_DENY", func(e *flows.Event) {
			e.DeniedBy = []flows.PolicyRef{{Kind: "CiliumNetworkPolicy", Namespace: "shop", Name: "block-evil"}}
		}), 0, 1, "CiliumNetworkPolicy/shop/block-evil", AttributedByHubble},
		{"an unnamed explicit deny is another policy's", drop("POLICY_DENY", nil), 0, 1, "deny rule", AttributedDenyRule},
		{"authentication is another policy's", drop("AUTH_REQUIRED", nil), 0, 1, "authentication rule", AttributedAuthRequired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := lifecycle.Config{Window: time.Hour, MinWindowFlows: 1, MaxLostRatio: 1, Learn: true, DemoteOnDrop: true}
			a, m, snap := learn(t, cfg)
			a.wall = func() time.Time { return base.Add(24 * time.Hour) }
			see(a, ev(2000, web, db, 5432, flows.VerdictForwarded))
			see(a, ev(2000+7200, web, db, 5432, flows.VerdictForwarded))
			a.Update(&synth.Result{}, snap, nil)
			if p := a.machine.Record("shop/k8s:app=db").Policy; p != ours {
				t.Fatalf("db's policy is %q, want %q", p, ours)
			}
			see(a, tt.ev)
			if got := counter(t, m.policyDrops); got != tt.ours {
				t.Errorf("drops blamed on ours = %g, want %g", got, tt.ours)
			}
			if got := counter(t, m.foreignDrops); got != tt.foreign {
				t.Errorf("drops blamed on others = %g, want %g", got, tt.foreign)
			}
			wantState := lifecycle.Enforced
			if tt.ours > 0 {
				wantState = lifecycle.Audit // --demote-on-drop
			}
			if got := a.machine.Record("shop/k8s:app=db").State; got != wantState {
				t.Errorf("db after the drop = %s, want %s", got, wantState)
			}
			var drops []DroppedEdge
			for _, s := range a.States() {
				if s.Key == "shop/k8s:app=db" {
					drops = s.Drops
				}
			}
			if len(drops) != 1 || drops[0].Policy != tt.policy || drops[0].Attribution != tt.blamedWhy || drops[0].Ours != (tt.ours > 0) {
				t.Errorf("drops = %+v, want one blamed on %s (%s)", drops, tt.policy, tt.blamedWhy)
			}
		})
	}
}

// Ensure the cluster's own copies of our policies (older revisions, of either kind) are left
// out of shadow evaluation: they would allow what the revision under audit is judged without.
// A policy somebody else wrote is evaluated with ours.
func TestAuditorIgnoresOurPoliciesInCluster(t *testing.T) {
	const cnpYAML = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: allow-evil
  namespace: shop
  labels: {%s}
spec:
  endpointSelector:
    matchLabels: {k8s:app: db}
  ingress:
  - fromEndpoints:
    - matchLabels: {k8s:app: evil}
    toPorts:
    - ports: [{port: "5432", protocol: TCP}]
`
	for _, tc := range []struct {
		labels    string
		wouldDeny float64
	}{
		{labels: "app.kubernetes.io/managed-by: recommender", wouldDeny: 1},
		{labels: "team: shop", wouldDeny: 0},
	} {
		t.Run(tc.labels, func(t *testing.T) {
			cfg := lifecycle.Config{Window: time.Hour, MinWindowFlows: 1, MaxLostRatio: 1, Learn: true}
			a, m, snap := learn(t, cfg)
			var cnp v2.CiliumNetworkPolicy
			if err := yaml.Unmarshal([]byte(fmt.Sprintf(cnpYAML, tc.labels)), &cnp); err != nil {
				t.Fatal(err)
			}
			sc := synth.DefaultConfig()
			sc.MinObserve = 0
			res, err := synth.Synthesize(snap, sc)
			if err != nil {
				t.Fatal(err)
			}
			a.Update(res, snap, &audit.Decoded{CNPs: []*v2.CiliumNetworkPolicy{&cnp}})
			see(a, ev(2000, evil, db, 5432, flows.VerdictForwarded))
			if got := counter(t, m.wouldDeny); got != tc.wouldDeny {
				t.Errorf("would-deny = %g, want %g", got, tc.wouldDeny)
			}
		})
	}
}

// Ensure a commit carries the verdicts of every event handed over before it, although they are
// accounted on the audit stage's own goroutine: a window restarted by a would-be-denied flow
// reaches the disk with the batch that holds the flow.
func TestPersistWaitsForHandedEvents(t *testing.T) {
	cfg := lifecycle.Config{Window: time.Hour, MinWindowFlows: 1, MaxLostRatio: 1, Learn: true}
	a, _, _ := learn(t, cfg)
	store := emptyStore(t)
	denied := ev(2000, evil, db, 5432, flows.VerdictForwarded)
	a.Observe(denied) // no Drain: the commit must wait by itself
	if err := commit(t, store, a.persist, a.persisted); err != nil {
		t.Fatal(err)
	}
	b, err := store.Lifecycle("shop/k8s:app=db")
	if err != nil || b == nil {
		t.Fatalf("record = %q, %v", b, err)
	}
	r, err := lifecycle.UnmarshalRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if !r.WindowStart.Equal(denied.Time) {
		t.Errorf("window start on disk = %s, want %s (restarted by the would-be-denied flow)", r.WindowStart, denied.Time)
	}
}

// Ensure a sync charges every flow to the revision that judged it: a flow handed over before
// the sync is judged by the revision in force then (and learned from), and one after by the new
// revision, never the old policy set against the new revision's window.
func TestUpdateSwapsRevisionAndPolicies(t *testing.T) {
	cfg := lifecycle.Config{Window: time.Hour, MinWindowFlows: 1, MaxLostRatio: 1, Learn: true}
	a, m, _ := learn(t, cfg)
	a.Observe(ev(2000, evil, db, 5432, flows.VerdictForwarded)) // not drained: the sync must account it first

	agg, err := aggregate.NewAggregator(aggregate.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		agg.Add(ev(i*60, web, db, 5432, flows.VerdictForwarded))
		agg.Add(ev(i*60+1, evil, db, 5432, flows.VerdictForwarded))
	}
	sc := synth.DefaultConfig()
	sc.MinObserve = 0
	snap := agg.Snapshot()
	res, err := synth.Synthesize(snap, sc)
	if err != nil {
		t.Fatal(err)
	}
	a.Update(res, snap, nil)
	r := a.machine.Record("shop/k8s:app=db")
	if r.Revisions != 2 || r.WouldDeny != 0 || len(r.Learned) != 1 {
		t.Fatalf("db after the sync: %d revisions, %d would-be-denied, learned %+v; want the second revision, clean, having learned the flow",
			r.Revisions, r.WouldDeny, r.Learned)
	}
	see(a, ev(2100, evil, db, 5432, flows.VerdictForwarded))
	if got := counter(t, m.wouldDeny); got != 1 {
		t.Errorf("would-deny = %g, want 1 (the flow before the sync only)", got)
	}
	if r := a.machine.Record("shop/k8s:app=db"); r.WouldDeny != 0 {
		t.Errorf("the new revision was charged %d would-be-denied flows", r.WouldDeny)
	}
}

// Ensure replicas that split the nodes judge windows on their merged evidence: flows that
// neither replica saw enough of alone promote together, a would-be-denied flow on one
// replica restarts the other's window, and a promotion by one is followed by the other.
func TestAuditorMergesReplicas(t *testing.T) {
	cfg := lifecycle.Config{Window: time.Hour, MinWindowFlows: 3, MaxLostRatio: 1, Learn: true}
	pair := func(t *testing.T) (a, b *Auditor, snap *aggregate.Snapshot) {
		a, _, snap = learn(t, cfg)
		b, _, _ = learn(t, cfg)
		a.UsePeers(func() []lifecycle.Peer { return []lifecycle.Peer{{Replica: "b", Pulled: true, Evidence: b.Evidence()}} })
		b.UsePeers(func() []lifecycle.Peer { return []lifecycle.Peer{{Replica: "a", Pulled: true, Evidence: a.Evidence()}} })
		return a, b, snap
	}
	states := func(a *Auditor) (web, db lifecycle.State) {
		return a.machine.Record("shop/k8s:app=web").State, a.machine.Record("shop/k8s:app=db").State
	}

	t.Run("flows summed, promotion followed", func(t *testing.T) {
		a, b, snap := pair(t)
		see(a, ev(2000, web, db, 5432, flows.VerdictForwarded), ev(5000, web, db, 5432, flows.VerdictForwarded))
		see(b, ev(3000, web, db, 5432, flows.VerdictForwarded))
		trs := a.Update(&synth.Result{}, snap, nil)
		if len(trs) != 2 || trs[0].To != lifecycle.Enforced || !strings.Contains(trs[0].Reason, "3 flows") {
			t.Fatalf("a: update = %v, want two promotions on 2 + 1 flows", trs)
		}
		trs = b.Update(&synth.Result{}, snap, nil)
		if len(trs) != 2 || !strings.Contains(trs[0].Reason, "promoted by replica a") {
			t.Fatalf("b: update = %v, want both promotions followed", trs)
		}
		if w, d := states(b); w != lifecycle.Enforced || d != lifecycle.Enforced || len(b.machine.Record("shop/k8s:app=db").EnforcedPolicy) == 0 {
			t.Errorf("b after following: web %s, db %s; want both enforced with the policy recorded", w, d)
		}
	})

	t.Run("a would-be-denied flow on one replica restarts the other's window", func(t *testing.T) {
		a, b, snap := pair(t)
		see(a, ev(2000, web, db, 5432, flows.VerdictForwarded), ev(5000, web, db, 5432, flows.VerdictForwarded))
		see(b, ev(2500, web, db, 5432, flows.VerdictForwarded), ev(3000, evil, db, 5432, flows.VerdictForwarded))
		trs := a.Update(&synth.Result{}, snap, nil)
		if len(trs) != 1 || trs[0].Workload != "shop/k8s:app=web" {
			t.Fatalf("a: update = %v, want web promoted and db held back by b's would-be-denied flow", trs)
		}
		r := a.machine.Record("shop/k8s:app=db")
		if r.State != lifecycle.Audit || !r.WindowStart.Equal(base.Add(3000*time.Second)) {
			t.Errorf("a's db: %s, window from %s; want audit with the window restarted at b's flow (%s)", r.State, r.WindowStart, base.Add(3000*time.Second))
		}
		if got := a.machine.Blocker("shop/k8s:app=db", a.Clock()); !strings.Contains(got, "window clean for") {
			t.Errorf("a's db blocker = %q, want the restarted window", got)
		}
	})
}
