package lifecycle

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// State is a workload's place in the lifecycle.
type State string

const (
	Observing State = "observing"
	Audit     State = "audit"
	Enforced  State = "enforced"
)

// States lists the states in order, for metrics.
var States = []State{Observing, Audit, Enforced}

// Config holds the promotion gates; field names follow the `run` flags. The evidence a
// first revision needs (--min-flows, --min-observe) is synthesis's gate: a workload gets a
// revision to propose only once synthesis writes a policy for it.
type Config struct {
	Window         time.Duration // --window: how long a revision must stay clean
	MinWindowFlows uint64        // --min-window-flows: flows evaluated in the window before promotion
	MaxLostRatio   float64       // --max-lost-ratio: lost/seen events on the workload's nodes
	Learn          bool          // --learn: a would-be-denied flow leads to a new revision
	DemoteOnDrop   bool          // --demote-on-drop: enforced policy drops return the workload to audit
}

// DefaultConfig returns the defaults of the `run` command.
func DefaultConfig() Config {
	return Config{
		Window:         7 * 24 * time.Hour,
		MinWindowFlows: 100,
		MaxLostRatio:   0.001,
		Learn:          true,
	}
}

// Validate checks the gates before the daemon starts.
func (c Config) Validate() error {
	var errs []error
	if c.Window <= 0 {
		errs = append(errs, fmt.Errorf("--window %s: must be positive", c.Window))
	}
	if c.MaxLostRatio < 0 || c.MaxLostRatio > 1 {
		errs = append(errs, fmt.Errorf("--max-lost-ratio %g: must be within [0, 1]", c.MaxLostRatio))
	}
	return errors.Join(errs...)
}

// Record is the persisted lifecycle of one workload.
type Record struct {
	Workload string `json:"workload"`
	State    State  `json:"state"`
	// Revision is the proposed (audit) or enforced policy revision; Held is a revision that a
	// would-be-denied flow called for while learning is off, waiting for a human.
	Revision string `json:"revision,omitempty"`
	Held     bool   `json:"held,omitempty"`
	// WindowStart is when the current revision was proposed: the observation window's start.
	WindowStart time.Time `json:"windowStart,omitzero"`
	// WindowFlows counts the workload's flows evaluated against Revision since WindowStart.
	WindowFlows uint64 `json:"windowFlows"`
	// WouldDeny counts would-be-denied flows against Revision since WindowStart.
	WouldDeny     uint64    `json:"wouldDeny"`
	LastWouldDeny time.Time `json:"lastWouldDeny,omitzero"`
	EnforcedAt    time.Time `json:"enforcedAt,omitzero"`
	PolicyDrops   uint64    `json:"policyDrops"`
	Revisions     uint64    `json:"revisions"`
	// Nodes the workload was seen on during the window, with the node's totals at the time it
	// was first seen there in the window: the lost ratio is computed over the deltas.
	Nodes map[string]NodeMark `json:"nodes,omitempty"`
}

// NodeMark is a node's event totals when the window started watching it.
type NodeMark struct {
	Seen uint64 `json:"seen"`
	Lost uint64 `json:"lost"`
}

// Marshal encodes a record for the store.
func (r *Record) Marshal() ([]byte, error) { return json.Marshal(r) }

// UnmarshalRecord decodes a stored record.
func UnmarshalRecord(b []byte) (*Record, error) {
	r := &Record{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("decode lifecycle record: %w", err)
	}
	switch r.State {
	case Observing, Audit, Enforced:
	default:
		return nil, fmt.Errorf("decode lifecycle record %q: unknown state %q", r.Workload, r.State)
	}
	return r, nil
}

// Transition reports a state change, for logs, metrics and delivery.
type Transition struct {
	Workload string
	From, To State
	Revision string
	Reason   string
	At       time.Time
}

// Machine runs the lifecycle of all workloads. It is not safe for concurrent use; the daemon
// serializes calls.
type Machine struct {
	cfg     Config
	records map[string]*Record
	// nodeSeen and nodeLost are running totals of events seen and lost per node.
	nodeSeen map[string]uint64
	nodeLost map[string]uint64
	// dirty holds the workloads whose records changed since the last Dirty call.
	dirty map[string]bool
}

// New returns a Machine holding the given persisted records.
func New(cfg Config, records []*Record) *Machine {
	m := &Machine{
		cfg:      cfg,
		records:  make(map[string]*Record, len(records)),
		nodeSeen: make(map[string]uint64),
		nodeLost: make(map[string]uint64),
		dirty:    make(map[string]bool),
	}
	for _, r := range records {
		m.records[r.Workload] = r
	}
	return m
}

// Record returns the workload's record (nil when unknown). The caller must not modify it.
func (m *Machine) Record(workload string) *Record { return m.records[workload] }

// Records returns all records sorted by workload.
func (m *Machine) Records() []*Record {
	out := make([]*Record, 0, len(m.records))
	for _, r := range m.records {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *Record) int { return compareStrings(a.Workload, b.Workload) })
	return out
}

// Dirty returns the records changed since the last call, for persisting, and forgets them.
func (m *Machine) Dirty() []*Record {
	out := make([]*Record, 0, len(m.dirty))
	for w := range m.dirty {
		out = append(out, m.records[w])
	}
	clear(m.dirty)
	slices.SortFunc(out, func(a, b *Record) int { return compareStrings(a.Workload, b.Workload) })
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (m *Machine) get(workload string) *Record {
	r := m.records[workload]
	if r == nil {
		r = &Record{Workload: workload, State: Observing}
		m.records[workload] = r
	}
	m.dirty[workload] = true
	return r
}

// Counts returns how many workloads are in each state.
func (m *Machine) Counts() map[State]int {
	c := make(map[State]int, len(States))
	for _, r := range m.records {
		c[r.State]++
	}
	return c
}

// Track makes sure a workload has a record; new workloads start observing.
func (m *Machine) Track(workload string) {
	if _, ok := m.records[workload]; !ok {
		m.get(workload)
	}
}

// NodeEvent accounts one event seen on a node (any workload), for the lost ratio.
func (m *Machine) NodeEvent(node string) { m.nodeSeen[node]++ }

// NodeLost accounts events Hubble lost on a node.
func (m *Machine) NodeLost(node string, n uint64) { m.nodeLost[node] += n }

// Propose records the policy revision synthesized for a workload whose evidence met the
// gates. A new revision (re)starts the window; the same revision changes nothing. While a
// would-be-denied revision is held (Learn off), new revisions wait for Release.
func (m *Machine) Propose(workload, revision string, now time.Time) *Transition {
	r := m.records[workload]
	if r != nil && r.Revision == revision {
		return nil
	}
	if r != nil && r.Held {
		return nil
	}
	r = m.get(workload)
	from := r.State
	r.Revision = revision
	r.Revisions++
	m.restartWindow(r, now)
	if r.State == Enforced {
		// An enforced workload keeps its enforced revision until the new one proves itself:
		// the caller keeps serving the old one. Here, the new revision starts in audit.
		r.EnforcedAt = time.Time{}
	}
	r.State = Audit
	return &Transition{Workload: workload, From: from, To: Audit, Revision: revision, Reason: "revision proposed", At: now}
}

func (m *Machine) restartWindow(r *Record, now time.Time) {
	r.WindowStart = now
	r.WindowFlows = 0
	r.WouldDeny = 0
	r.Nodes = nil
}

// Evaluated accounts one flow of a workload in audit evaluated against its revision on node;
// denied says the revision would have denied it. It returns a transition when the verdict
// restarts the window.
func (m *Machine) Evaluated(workload, node string, denied bool, now time.Time) *Transition {
	r := m.records[workload]
	if r == nil || r.State != Audit {
		return nil
	}
	m.dirty[workload] = true
	if node != "" {
		if r.Nodes == nil {
			r.Nodes = make(map[string]NodeMark)
		}
		if _, ok := r.Nodes[node]; !ok {
			r.Nodes[node] = NodeMark{Seen: m.nodeSeen[node], Lost: m.nodeLost[node]}
		}
	}
	if !denied {
		r.WindowFlows++
		return nil
	}
	r.WouldDeny++
	r.LastWouldDeny = now
	if !m.cfg.Learn {
		r.Held = true
		return &Transition{Workload: workload, From: Audit, To: Audit, Revision: r.Revision, Reason: "would-be-denied flow; revision held for review (--learn=false)", At: now}
	}
	// Learning: the flow's edge is in the store; the next synthesis proposes a new revision,
	// which restarts the window. Until then the window is already dirty (WouldDeny > 0).
	return &Transition{Workload: workload, From: Audit, To: Audit, Revision: r.Revision, Reason: "would-be-denied flow; window restarts with the next revision", At: now}
}

// Release lets a held workload take new revisions again (a human reviewed it).
func (m *Machine) Release(workload string) {
	if r := m.records[workload]; r != nil && r.Held {
		r.Held = false
		m.dirty[workload] = true
	}
}

// PolicyDrop accounts a flow Cilium dropped for policy reasons on an enforced workload. With
// DemoteOnDrop the workload returns to audit.
func (m *Machine) PolicyDrop(workload string, now time.Time) *Transition {
	r := m.records[workload]
	if r == nil || r.State != Enforced {
		return nil
	}
	m.dirty[workload] = true
	r.PolicyDrops++
	if !m.cfg.DemoteOnDrop {
		return nil
	}
	r.State = Audit
	r.EnforcedAt = time.Time{}
	m.restartWindow(r, now)
	return &Transition{Workload: workload, From: Enforced, To: Audit, Revision: r.Revision, Reason: "policy drop after enforcement (--demote-on-drop)", At: now}
}

// Clean returns how long the workload's window has been clean at now (0 when it is not in
// audit or saw a would-be-denied flow), for the clean-seconds metric.
func (m *Machine) Clean(workload string, now time.Time) time.Duration {
	r := m.records[workload]
	if r == nil || r.State != Audit || r.WouldDeny > 0 || now.Before(r.WindowStart) {
		return 0
	}
	return now.Sub(r.WindowStart)
}

// LostRatio returns the events lost over events seen on the workload's nodes since its window
// started watching them.
func (m *Machine) LostRatio(workload string) float64 {
	r := m.records[workload]
	if r == nil {
		return 0
	}
	var seen, lost uint64
	for node, mark := range r.Nodes {
		seen += m.nodeSeen[node] - min(mark.Seen, m.nodeSeen[node])
		lost += m.nodeLost[node] - min(mark.Lost, m.nodeLost[node])
	}
	if lost == 0 {
		return 0
	}
	if seen == 0 {
		return 1
	}
	return float64(lost) / float64(seen+lost)
}

// Blocker says why an audit workload is not promoted yet ("" when it is ready).
func (m *Machine) Blocker(workload string, now time.Time) string {
	r := m.records[workload]
	switch {
	case r == nil:
		return "unknown workload"
	case r.State != Audit:
		return "not in audit"
	case r.Held:
		return "revision held for review after a would-be-denied flow"
	case r.WouldDeny > 0:
		return fmt.Sprintf("%d would-be-denied flows in the window", r.WouldDeny)
	case now.Sub(r.WindowStart) < m.cfg.Window:
		return fmt.Sprintf("window clean for %s of %s", now.Sub(r.WindowStart).Truncate(time.Second), m.cfg.Window)
	case r.WindowFlows < m.cfg.MinWindowFlows:
		return fmt.Sprintf("%d of %d flows evaluated in the window", r.WindowFlows, m.cfg.MinWindowFlows)
	}
	if lr := m.LostRatio(workload); lr > m.cfg.MaxLostRatio {
		return fmt.Sprintf("Hubble lost %.4f of events on its nodes (max %.4f)", lr, m.cfg.MaxLostRatio)
	}
	return ""
}

// Tick promotes every audit workload whose window is clean at now.
func (m *Machine) Tick(now time.Time) []Transition {
	var out []Transition
	for _, r := range m.Records() {
		if r.State != Audit || m.Blocker(r.Workload, now) != "" {
			continue
		}
		r.State = Enforced
		r.EnforcedAt = now
		m.dirty[r.Workload] = true
		out = append(out, Transition{Workload: r.Workload, From: Audit, To: Enforced, Revision: r.Revision,
			Reason: fmt.Sprintf("window of %s clean with %d flows evaluated", m.cfg.Window, r.WindowFlows), At: now})
	}
	return out
}
