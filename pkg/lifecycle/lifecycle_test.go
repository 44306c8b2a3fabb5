package lifecycle

import (
	"reflect"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func testConfig() Config {
	return Config{Window: time.Hour, MinWindowFlows: 3, MaxLostRatio: 0.1, Learn: true}
}

// step is one input to the machine in a scenario.
type step struct {
	at      time.Duration // since t0
	propose string        // revision proposed
	flow    string        // "ok" or "deny": a flow evaluated on node n1
	drop    bool          // a policy drop seen
	seen    int           // events seen on n1
	lost    uint64        // events lost on n1
}

func run(m *Machine, w string, steps []step) []Transition {
	var out []Transition
	for _, s := range steps {
		now := t0.Add(s.at)
		for range s.seen {
			m.NodeEvent("n1")
		}
		if s.lost > 0 {
			m.NodeLost("n1", s.lost)
		}
		if s.propose != "" {
			if tr := m.Propose(w, s.propose, now); tr != nil {
				out = append(out, *tr)
			}
		}
		switch s.flow {
		case "ok", "deny":
			if tr := m.Evaluated(w, "n1", s.flow == "deny", now); tr != nil {
				out = append(out, *tr)
			}
		}
		if s.drop {
			if tr := m.PolicyDrop(w, now); tr != nil {
				out = append(out, *tr)
			}
		}
		out = append(out, m.Tick(now)...)
	}
	return out
}

func TestLifecycle(t *testing.T) {
	tests := []struct {
		name    string
		cfg     func(*Config)
		steps   []step
		want    State
		blocker string
	}{
		{
			name:  "clean window promotes",
			steps: []step{{propose: "r1"}, {at: time.Minute, flow: "ok"}, {at: 2 * time.Minute, flow: "ok"}, {at: 3 * time.Minute, flow: "ok"}, {at: 61 * time.Minute}},
			want:  Enforced,
		},
		{
			name:    "too few flows in the window",
			steps:   []step{{propose: "r1"}, {at: time.Minute, flow: "ok"}, {at: 2 * time.Hour}},
			want:    Audit,
			blocker: "1 of 3 flows evaluated in the window",
		},
		{
			name:    "window not over",
			steps:   []step{{propose: "r1"}, {at: time.Minute, flow: "ok"}, {at: 2 * time.Minute, flow: "ok"}, {at: 3 * time.Minute, flow: "ok"}, {at: 30 * time.Minute}},
			want:    Audit,
			blocker: "window clean for 30m0s of 1h0m0s",
		},
		{
			name: "a would-be-denied flow restarts the window",
			steps: []step{{propose: "r1"}, {at: time.Minute, flow: "ok"}, {at: 2 * time.Minute, flow: "deny"}, {at: 3 * time.Minute, flow: "ok"},
				{at: 4 * time.Minute, flow: "ok"}, {at: 5 * time.Minute, flow: "ok"}, {at: 61 * time.Minute}},
			want:    Audit,
			blocker: "window clean for 59m0s of 1h0m0s",
		},
		{
			name: "a full clean window after a would-be-denied flow promotes",
			steps: []step{{propose: "r1"}, {at: time.Minute, flow: "ok"}, {at: 2 * time.Minute, flow: "deny"}, {at: 3 * time.Minute, flow: "ok"},
				{at: 4 * time.Minute, flow: "ok"}, {at: 5 * time.Minute, flow: "ok"}, {at: 63 * time.Minute}},
			want: Enforced,
		},
		{
			name: "flows older than the window are no evidence (replay after a restart)",
			steps: []step{{at: time.Hour, propose: "r1"}, {at: 10 * time.Minute, flow: "deny"}, {at: 20 * time.Minute, flow: "ok"},
				{at: 61 * time.Minute, flow: "ok"}, {at: 62 * time.Minute, flow: "ok"}, {at: 63 * time.Minute, flow: "ok"}, {at: 121 * time.Minute}},
			want: Enforced,
		},
		{
			name: "new revision restarts the window",
			steps: []step{{propose: "r1"}, {at: time.Minute, flow: "ok"}, {at: 50 * time.Minute, propose: "r2"},
				{at: 51 * time.Minute, flow: "ok"}, {at: 52 * time.Minute, flow: "ok"}, {at: 53 * time.Minute, flow: "ok"}, {at: 90 * time.Minute}},
			want:    Audit,
			blocker: "window clean for 40m0s of 1h0m0s",
		},
		{
			name: "same revision again keeps the window",
			steps: []step{{propose: "r1"}, {at: time.Minute, flow: "ok", propose: "r1"}, {at: 2 * time.Minute, flow: "ok"},
				{at: 3 * time.Minute, flow: "ok", propose: "r1"}, {at: 61 * time.Minute}},
			want: Enforced,
		},
		{
			name:    "learning off holds the revision",
			cfg:     func(c *Config) { c.Learn = false },
			steps:   []step{{propose: "r1"}, {at: time.Minute, flow: "deny"}, {at: 2 * time.Minute, propose: "r2"}, {at: 3 * time.Hour}},
			want:    Audit,
			blocker: "revision held for review after a would-be-denied flow",
		},
		{
			name: "lost events on the workload's node block promotion",
			steps: []step{{propose: "r1"}, {at: time.Minute, flow: "ok", seen: 10}, {at: 2 * time.Minute, flow: "ok", seen: 10, lost: 50},
				{at: 3 * time.Minute, flow: "ok"}, {at: 2 * time.Hour}},
			want:    Audit,
			blocker: "Hubble lost 0.8333 of events on its nodes (max 0.1000)",
		},
		{
			name: "lost events before the window do not count",
			steps: []step{{lost: 1000, seen: 10}, {propose: "r1"}, {at: time.Minute, flow: "ok", seen: 100}, {at: 2 * time.Minute, flow: "ok"},
				{at: 3 * time.Minute, flow: "ok"}, {at: 2 * time.Hour}},
			want: Enforced,
		},
		{
			name: "policy drop after enforcement demotes with DemoteOnDrop",
			cfg:  func(c *Config) { c.DemoteOnDrop = true },
			steps: []step{{propose: "r1"}, {at: time.Minute, flow: "ok"}, {at: 2 * time.Minute, flow: "ok"}, {at: 3 * time.Minute, flow: "ok"},
				{at: 61 * time.Minute}, {at: 62 * time.Minute, drop: true}},
			want:    Audit,
			blocker: "window clean for 0s of 1h0m0s",
		},
		{
			name: "policy drop after enforcement is only counted by default",
			steps: []step{{propose: "r1"}, {at: time.Minute, flow: "ok"}, {at: 2 * time.Minute, flow: "ok"}, {at: 3 * time.Minute, flow: "ok"},
				{at: 61 * time.Minute}, {at: 62 * time.Minute, drop: true}},
			want: Enforced,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			m := New(cfg, nil)
			run(m, "shop/app=cart", tt.steps)
			r := m.Record("shop/app=cart")
			if r.State != tt.want {
				t.Fatalf("state = %s, want %s (record %+v)", r.State, tt.want, r)
			}
			last := t0.Add(tt.steps[len(tt.steps)-1].at)
			if tt.want == Audit {
				if got := m.Blocker("shop/app=cart", last); got != tt.blocker {
					t.Errorf("Blocker = %q, want %q", got, tt.blocker)
				}
			}
		})
	}
}

// Ensure a restart in the middle of a window keeps the window's start: records round-trip
// through Marshal and a new Machine promotes at the original deadline, not a later one.
func TestRestartKeepsWindowStart(t *testing.T) {
	m := New(testConfig(), nil)
	run(m, "w", []step{{propose: "r1"}, {at: time.Minute, flow: "ok"}, {at: 2 * time.Minute, flow: "ok"}, {at: 3 * time.Minute, flow: "ok"}})
	var stored [][]byte
	for _, r := range m.Dirty() {
		b, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, b)
	}
	var recs []*Record
	for _, b := range stored {
		r, err := UnmarshalRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	m2 := New(testConfig(), recs)
	if tr := m2.Propose("w", "r1", t0.Add(30*time.Minute)); tr != nil {
		t.Fatalf("re-proposing the same revision after restart = %+v, want no transition", tr)
	}
	if got := m2.Tick(t0.Add(59 * time.Minute)); len(got) != 0 {
		t.Fatalf("Tick before the window ends = %+v, want none", got)
	}
	got := m2.Tick(t0.Add(61 * time.Minute))
	if len(got) != 1 || got[0].To != Enforced {
		t.Fatalf("Tick after the window = %+v, want one promotion", got)
	}
}

func TestUnmarshalRecordRejectsUnknownState(t *testing.T) {
	if _, err := UnmarshalRecord([]byte(`{"workload":"w","state":"bogus"}`)); err == nil {
		t.Fatal("UnmarshalRecord accepted an unknown state")
	}
	if _, err := UnmarshalRecord([]byte(`{`)); err == nil {
		t.Fatal("UnmarshalRecord accepted truncated JSON")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	bad := Config{Window: 0, MaxLostRatio: 2}
	if err := bad.Validate(); err == nil {
		t.Fatal("Validate accepted a zero window, no window flows and a ratio above 1")
	}
}

// Ensure node totals survive a restart: losses before it still count, and marks taken before
// it are not compared with counters that restarted at zero.
func TestNodeTotalsRoundTrip(t *testing.T) {
	m := New(testConfig(), nil)
	m.Propose("w", "r1", t0)
	for range 100 {
		m.NodeEvent("n1")
	}
	m.Evaluated("w", "n1", false, t0.Add(time.Minute))
	m.NodeLost("n1", 50)
	recs := m.Records()
	m2 := New(testConfig(), recs)
	m2.RestoreTotals(m.Totals())
	m2.NodeEvent("n1")
	if got := m2.LostRatio("w"); got < 0.9 {
		t.Errorf("LostRatio after restart = %g, want the 50 lost of 51 events since the mark", got)
	}
}

// Ensure a held revision is released by learning again, and a forgotten workload is reported.
func TestHeldAndForget(t *testing.T) {
	cfg := testConfig()
	cfg.Learn = false
	m := New(cfg, nil)
	m.Propose("w", "r1", t0)
	m.Evaluated("w", "n1", true, t0.Add(time.Minute))
	if tr := m.Propose("w", "r2", t0.Add(2*time.Minute)); tr != nil || m.Record("w").Revision != "r1" {
		t.Fatalf("Propose while held = %+v, revision %s; want held at r1", tr, m.Record("w").Revision)
	}
	cfg.Learn = true
	m2 := New(cfg, m.Records())
	if tr := m2.Propose("w", "r2", t0.Add(3*time.Minute)); tr == nil || m2.Record("w").Held {
		t.Fatalf("Propose with learning back on = %+v, held %v; want r2 proposed and released", tr, m2.Record("w").Held)
	}
	m2.Forget("w")
	if g := m2.Gone(); len(g) != 1 || g[0] != "w" || m2.Record("w") != nil {
		t.Fatalf("Forget: gone %v, record %v", g, m2.Record("w"))
	}
}

// Ensure time the daemon did not see (a gap in the flow clock) does not count towards a window.
func TestAdvanceSkipsUnseenTime(t *testing.T) {
	cfg := testConfig()
	cfg.MaxFlowGap = 5 * time.Minute
	m := New(cfg, nil)
	m.Propose("w", "r1", t0)
	for i := range 3 {
		m.Evaluated("w", "n1", false, t0.Add(time.Duration(i+1)*time.Minute))
	}
	if n := m.Advance(t0.Add(4*time.Minute), t0.Add(3*time.Hour)); n != 1 {
		t.Fatalf("Advance over a 3h gap shifted %d windows, want 1", n)
	}
	if got := m.Blocker("w", t0.Add(3*time.Hour)); got != "window clean for 4m0s of 1h0m0s" {
		t.Errorf("Blocker after the gap = %q, want only the observed 4m counted", got)
	}
	if n := m.Advance(t0.Add(3*time.Hour), t0.Add(3*time.Hour+time.Minute)); n != 0 {
		t.Errorf("Advance within the gap limit shifted %d windows, want 0", n)
	}
}

// Ensure a policy found in force in the cluster is adopted as the starting state instead of
// being replaced by what a new, lost or restored store believes (issue 20).
func TestAdopt(t *testing.T) {
	enforced := func(m *Machine, rev string) {
		m.Propose("w", rev, t0)
		for i := range 10 {
			m.Evaluated("w", "n1", false, t0.Add(time.Duration(i)*time.Second))
		}
		if trs := m.Tick(t0.Add(2 * time.Hour)); len(trs) != 1 {
			t.Fatalf("Tick = %v, want w promoted", trs)
		}
		m.SetEnforcedPolicy("w", rev, []byte("policy "+rev))
	}
	tests := []struct {
		name        string
		setup       func(m *Machine)
		adopt       string
		wantState   State
		wantRev     string // Record.Revision afterwards
		wantInForce string // Record.EnforcedRevision afterwards
		wantTr      bool
	}{
		{"unknown workload", func(m *Machine) {}, "rX", "", "", "", false},
		{"same revision in audit", func(m *Machine) { m.Propose("w", "r1", t0) }, "r1", Enforced, "r1", "r1", true},
		{"other revision in audit", func(m *Machine) { m.Propose("w", "r1", t0) }, "rX", Audit, "r1", "rX", false},
		{"other revision enforced here", func(m *Machine) { enforced(m, "r1") }, "rX", Audit, "r1", "rX", true},
		{"our own revision", func(m *Machine) { enforced(m, "r1") }, "r1", Enforced, "r1", "r1", false},
		{"our previous revision, newer promoted", func(m *Machine) {
			enforced(m, "r1")
			m.Propose("w", "r2", t0.Add(3*time.Hour))
			for i := range 10 {
				m.Evaluated("w", "n1", false, t0.Add(3*time.Hour+time.Duration(i)*time.Second))
			}
			m.Tick(t0.Add(5 * time.Hour))
			m.SetEnforcedPolicy("w", "r2", []byte("policy r2"))
		}, "r1", Enforced, "r2", "r2", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(testConfig(), nil)
			tt.setup(m)
			tr := m.Adopt("w", tt.adopt, []byte("cluster "+tt.adopt), t0.Add(6*time.Hour))
			if (tr != nil) != tt.wantTr {
				t.Errorf("Adopt() = %+v, want a transition: %v", tr, tt.wantTr)
			}
			r := m.Record("w")
			if tt.wantState == "" {
				if r != nil {
					t.Errorf("record of an unknown workload created: %+v", r)
				}
				return
			}
			if r.State != tt.wantState || r.Revision != tt.wantRev || r.EnforcedRevision != tt.wantInForce {
				t.Errorf("after Adopt: state %s revision %s in force %s; want %s %s %s",
					r.State, r.Revision, r.EnforcedRevision, tt.wantState, tt.wantRev, tt.wantInForce)
			}
		})
	}
}

// Ensure only a workload this store knew, with a policy, is retired; that a
// name proposed again is no longer retired; and that Settle forgets a retirement.
func TestRetirements(t *testing.T) {
	m := New(testConfig(), nil)
	m.Propose("a", "ra", t0)
	m.Named("a", "ns-a")
	m.Propose("b", "rb", t0)
	m.SetEnforcedPolicy("b", "rb0", []byte("b"))
	m.Named("b", "ns-b")
	m.Track("c") // observing: no policy yet
	m.RetiredChanged()

	m.Retire("a", t0.Add(time.Hour))
	m.Retire("b", t0.Add(time.Hour))
	m.Retire("c", t0.Add(time.Hour))
	m.Propose("d", "rd", t0)
	m.Named("d", "ns-d")
	m.Forget("d") // gone before this store observed long enough: not retired
	if !m.RetiredChanged() {
		t.Error("RetiredChanged = false after retiring")
	}
	got := m.Retirements()
	want := []Retirement{
		{Policy: "ns-a", Workload: "a", Revisions: []string{"ra"}, At: t0.Add(time.Hour)},
		{Policy: "ns-b", Workload: "b", Revisions: []string{"rb0", "rb"}, At: t0.Add(time.Hour)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Retirements() = %+v, want %+v", got, want)
	}
	m.Propose("a", "ra", t0.Add(2*time.Hour))
	m.Named("a", "ns-a")
	m.Settle("ns-b")
	if got := m.Retirements(); len(got) != 0 {
		t.Errorf("Retirements() after re-proposal and Settle = %+v, want none", got)
	}
	m2 := New(testConfig(), nil)
	m2.RestoreRetired(want)
	if got := m2.Retirements(); !reflect.DeepEqual(got, want) {
		t.Errorf("restored Retirements() = %+v, want %+v", got, want)
	}
}

// Ensure learned would-be-denied edges add up per edge, survive a restart with the record, and
// are forgotten when a new audit cycle starts.
func TestLearned(t *testing.T) {
	m := New(testConfig(), nil)
	m.Propose("w", "r1", t0)
	e := DeniedEdge{Direction: "egress", Peer: "reserved:kube-apiserver", Protocol: "TCP", Port: 443, Count: 1}
	m.Learn("w", []DeniedEdge{e})
	m.Learn("w", []DeniedEdge{e, {Direction: "ingress", Peer: "x", Protocol: "UDP", Port: 53, Count: 2}})
	b, err := m.Record("w").Marshal()
	if err != nil {
		t.Fatal(err)
	}
	r, err := UnmarshalRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Learned) != 2 || r.Learned[0].Count != 2 || r.Learned[1].Count != 2 {
		t.Errorf("Learned after restart = %+v, want the API server edge twice and one other", r.Learned)
	}
	m.ResetLearned("w")
	if got := m.Record("w").Learned; got != nil {
		t.Errorf("Learned after ResetLearned = %+v, want none", got)
	}
}
