package lifecycle

import (
	"strings"
	"testing"
	"time"
)

// Ensure a replica merges the other replicas' evidence before it judges a window: a window
// restarted elsewhere restarts here, a revision held elsewhere is held here, flows are
// summed, lost ratios maxed, and a replica that did not answer or audits another revision
// holds the promotion back.
func TestMergePeers(t *testing.T) {
	const w = "shop/k8s:app=db"
	audit := func(mut func(*Evidence)) Evidence {
		e := Evidence{Workload: w, State: Audit, Revision: "r1", WindowStart: t0, WindowFlows: 2}
		if mut != nil {
			mut(&e)
		}
		return e
	}
	peer := func(pulled bool, es ...Evidence) []Peer { return []Peer{{Replica: "1", Pulled: pulled, Evidence: es}} }
	tests := []struct {
		name     string
		learnOff bool
		peers    []Peer
		blocker  string // substring; "" is promoted
		start    time.Time
		flows    uint64 // merged, after the merge
		held     bool
	}{
		{name: "no peers: the local window alone", peers: nil, blocker: "2 of 3 flows", flows: 2},
		{name: "flows are summed", peers: peer(true, audit(nil)), flows: 4},
		{name: "a replica that did not answer holds the promotion", peers: peer(false, audit(nil)), blocker: "replica 1 did not answer", flows: 4},
		{name: "a replica never pulled holds the promotion", peers: []Peer{{Replica: "1"}}, blocker: "replica 1 did not answer", flows: 2},
		{name: "a replica without the workload holds it", peers: peer(true), blocker: "does not audit this workload", flows: 2},
		{name: "a replica auditing another revision holds it", peers: peer(true, audit(func(e *Evidence) { e.Revision = "r2" })), blocker: "audits revision r2", flows: 2},
		{name: "a window restarted on a replica restarts here",
			peers: peer(true, audit(func(e *Evidence) { e.WindowStart = t0.Add(90 * time.Minute); e.WindowFlows = 5 })),
			start: t0.Add(90 * time.Minute), blocker: "window clean for 30m0s", flows: 5},
		{name: "a replica's earlier window counts none of its flows",
			peers:   peer(true, audit(func(e *Evidence) { e.WindowStart = t0.Add(-time.Hour); e.WindowFlows = 50 })),
			blocker: "2 of 3 flows", flows: 2},
		{name: "a revision held on a replica is held here (learn off)", learnOff: true,
			peers: peer(true, audit(func(e *Evidence) { e.Held = true })), blocker: "held for review", held: true, flows: 4},
		{name: "the highest lost ratio decides", peers: peer(true, audit(func(e *Evidence) { e.LostRatio = 0.5 })), blocker: "lost 0.5000", flows: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Learn = !tc.learnOff
			m := New(cfg, nil)
			m.Propose(w, "r1", t0)
			m.Evaluated(w, "n1", false, t0.Add(time.Minute))
			m.Evaluated(w, "n1", false, t0.Add(2*time.Minute))
			now := t0.Add(2 * time.Hour)
			m.MergePeers(tc.peers, now)
			r := m.Record(w)
			want := tc.start
			if want.IsZero() {
				want = t0
			}
			if !r.WindowStart.Equal(want) || m.WindowFlows(w) != tc.flows || r.Held != tc.held {
				t.Errorf("after merge: window %s, %d flows, held %v; want %s, %d, %v", r.WindowStart, m.WindowFlows(w), r.Held, want, tc.flows, tc.held)
			}
			got := m.Blocker(w, now)
			if tc.blocker == "" && got != "" || !strings.Contains(got, tc.blocker) {
				t.Errorf("Blocker = %q, want %q", got, tc.blocker)
			}
			trs := m.Tick(now)
			if promoted := len(trs) == 1; promoted != (tc.blocker == "") {
				t.Errorf("Tick = %v, promoted %v, want %v", trs, promoted, tc.blocker == "")
			}
			if tc.blocker == "" && m.Record(w).PromotedWindowFlows != tc.flows {
				t.Errorf("promoted with %d flows, want the merged %d", m.Record(w).PromotedWindowFlows, tc.flows)
			}
		})
	}
}

// Ensure replicas converge on promotions and demotions: one that promoted on the merged
// evidence is followed, one that a policy drop demoted afterwards demotes the others, and a
// replica demoted after another's promotion does not follow that promotion back.
func TestMergePeersFollows(t *testing.T) {
	const w = "shop/k8s:app=db"
	cfg := testConfig()
	cfg.DemoteOnDrop = true
	a, b := New(cfg, nil), New(cfg, nil)
	for _, m := range []*Machine{a, b} {
		m.Propose(w, "r1", t0)
		for i := range 2 {
			m.Evaluated(w, "n1", false, t0.Add(time.Duration(i+1)*time.Minute))
		}
	}
	exchange := func(now time.Time) (ta, tb []Transition) {
		ea, eb := a.Evidence(), b.Evidence()
		return a.MergePeers([]Peer{{Replica: "b", Pulled: true, Evidence: eb}}, now), b.MergePeers([]Peer{{Replica: "a", Pulled: true, Evidence: ea}}, now)
	}
	now := t0.Add(2 * time.Hour)
	exchange(now)
	if trs := a.Tick(now); len(trs) != 1 {
		t.Fatalf("a: Tick = %v, want a promotion on 4 merged flows", trs)
	}
	_, tb := exchange(now.Add(time.Minute))
	if len(tb) != 1 || tb[0].To != Enforced || b.Record(w).State != Enforced || !strings.Contains(tb[0].Reason, "promoted by replica a") {
		t.Fatalf("b after a promoted: %v, state %s; want it to follow", tb, b.Record(w).State)
	}

	drop := now.Add(10 * time.Minute)
	if tr := b.PolicyDrop(w, drop); tr == nil || tr.To != Audit {
		t.Fatalf("b: PolicyDrop = %v, want a demotion", tr)
	}
	ta, tb := exchange(drop.Add(time.Minute))
	if len(ta) != 1 || ta[0].To != Audit || a.Record(w).State != Audit || !a.Record(w).WindowStart.Equal(drop) {
		t.Fatalf("a after b was demoted: %v, state %s, window %s; want demoted with a window from the drop", ta, a.Record(w).State, a.Record(w).WindowStart)
	}
	if len(tb) != 0 || b.Record(w).State != Audit {
		t.Errorf("b after the exchange: %v, state %s; want it to stay in audit", tb, b.Record(w).State)
	}
	// a promotes again on a clean window, b follows, then a is demoted: b follows the
	// demotion, and neither promotes back on the other's older promotion.
	later := drop.Add(2 * time.Hour)
	for _, m := range []*Machine{a, b} {
		for i := range 4 {
			m.Evaluated(w, "n1", false, later.Add(-time.Duration(i+1)*time.Minute))
		}
	}
	exchange(later)
	if trs := a.Tick(later); len(trs) != 1 {
		t.Fatalf("a: second Tick = %v, want a promotion", trs)
	}
	if _, tb := exchange(later.Add(time.Minute)); len(tb) != 1 || b.Record(w).State != Enforced {
		t.Fatalf("b after a's second promotion: %v, state %s; want it followed", tb, b.Record(w).State)
	}
	// The drop's node clock lags the promotion: the demotion still counts as after it.
	if tr := a.PolicyDrop(w, later.Add(-time.Hour)); tr == nil {
		t.Fatal("a: PolicyDrop = nil, want a demotion")
	}
	ta, tb = exchange(later.Add(2 * time.Minute))
	if len(ta) != 0 || a.Record(w).State != Audit || len(tb) != 1 || b.Record(w).State != Audit {
		t.Errorf("after a's demotion: a %v (%s), b %v (%s); want both in audit, a not promoted back", ta, a.Record(w).State, tb, b.Record(w).State)
	}

	// The round trip of records must keep what the merge compares.
	raw, err := a.Record(w).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalRecord(raw)
	if err != nil || !back.DemotedAt.Equal(a.Record(w).DemotedAt) || back.DemotedAt.IsZero() {
		t.Errorf("DemotedAt after a store round trip = %v (%v), want %s", back.DemotedAt, err, a.Record(w).DemotedAt)
	}
}

// Ensure a replica does not follow a promotion that its own evidence contradicts: a revision
// it holds for review, or a window it restarted after the promoting one began.
func TestMergePeersRefusesToFollow(t *testing.T) {
	const w = "shop/k8s:app=db"
	promoted := Evidence{Workload: w, State: Enforced, Revision: "r1", EnforcedAt: t0.Add(2 * time.Hour), PromotedWindowStart: t0}
	// Either way a would-be-denied flow after the promoting window began: with learning off
	// it holds the revision, with learning on it restarts the window.
	for _, tc := range []struct {
		name  string
		learn bool
	}{{name: "held for review", learn: false}, {name: "window restarted after the promoting one", learn: true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Learn = tc.learn
			m := New(cfg, nil)
			m.Propose(w, "r1", t0)
			m.Evaluated(w, "n1", true, t0.Add(time.Minute))
			if trs := m.MergePeers([]Peer{{Replica: "1", Pulled: true, Evidence: []Evidence{promoted}}}, t0.Add(3*time.Hour)); len(trs) != 0 || m.Record(w).State != Audit {
				t.Errorf("MergePeers = %v, state %s; want no promotion followed", trs, m.Record(w).State)
			}
		})
	}
	// Another replica's window restarted after the promoting one: not followed either.
	m := New(testConfig(), nil)
	m.Propose(w, "r1", t0)
	restarted := Evidence{Workload: w, State: Audit, Revision: "r1", WindowStart: t0.Add(90 * time.Minute)}
	peers := []Peer{{Replica: "1", Pulled: true, Evidence: []Evidence{promoted}}, {Replica: "2", Pulled: true, Evidence: []Evidence{restarted}}}
	if trs := m.MergePeers(peers, t0.Add(3*time.Hour)); m.Record(w).State != Audit {
		t.Errorf("MergePeers with replica 2's window restarted after the promotion = %v, state %s; want no promotion followed", trs, m.Record(w).State)
	}

	m = New(testConfig(), nil)
	m.Propose(w, "r1", t0)
	if trs := m.MergePeers([]Peer{{Replica: "1", Pulled: true, Evidence: []Evidence{promoted}}}, t0.Add(3*time.Hour)); len(trs) != 1 || !m.Record(w).EnforcedAt.Equal(promoted.EnforcedAt) {
		t.Errorf("MergePeers with nothing against it = %v, enforced at %s; want followed at the promoting replica's time", trs, m.Record(w).EnforcedAt)
	}
	if got := m.Record(w).PromotedWindowStart; !got.Equal(promoted.PromotedWindowStart) {
		t.Errorf("followed promotion's window from %s, want the promoting replica's %s", got, promoted.PromotedWindowStart)
	}
}
