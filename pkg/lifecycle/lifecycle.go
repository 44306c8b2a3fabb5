package lifecycle

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
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
	// MaxFlowGap (--max-flow-gap): when the flow clock jumps further than this (the daemon was
	// down, Relay unreachable, the cluster silent), the unseen time does not count towards any
	// window. Zero counts every gap.
	MaxFlowGap   time.Duration
	Learn        bool // --learn: a would-be-denied flow leads to a new revision
	DemoteOnDrop bool // --demote-on-drop: enforced policy drops return the workload to audit
}

// DefaultConfig returns the defaults of the `run` command.
func DefaultConfig() Config {
	return Config{
		Window:         7 * 24 * time.Hour,
		MaxFlowGap:     5 * time.Minute,
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
	if c.MaxFlowGap < 0 {
		errs = append(errs, fmt.Errorf("--max-flow-gap %s: must not be negative", c.MaxFlowGap))
	}
	if c.MinWindowFlows < 1 {
		errs = append(errs, fmt.Errorf("--min-window-flows %d: a window without traffic proves nothing, want at least 1", c.MinWindowFlows))
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
	// WouldDeny counts would-be-denied flows against Revision since it was proposed; each one
	// restarted the window (LastWouldDeny is the latest).
	WouldDeny     uint64    `json:"wouldDeny"`
	LastWouldDeny time.Time `json:"lastWouldDeny,omitzero"`
	EnforcedAt    time.Time `json:"enforcedAt,omitzero"`
	// DemotedAt is when a policy drop last returned the workload from enforced to audit
	// (--demote-on-drop): replicas merging evidence follow a demotion newer than their
	// promotion, and a promotion newer than their demotion (MergePeers).
	DemotedAt time.Time `json:"demotedAt,omitzero"`
	// PromotedWindowStart and PromotedWindowFlows are the window that promoted the revision in
	// force (it ended at EnforcedAt): the evidence a promotion's review shows.
	PromotedWindowStart time.Time `json:"promotedWindowStart,omitzero"`
	PromotedWindowFlows uint64    `json:"promotedWindowFlows,omitempty"`
	// EnforcedPolicy is the policy last promoted (opaque to this package: the daemon stores the
	// rendered policy). It stays enforced while a newer revision is audited, until that one is
	// promoted in turn or a demotion withdraws it.
	EnforcedPolicy []byte `json:"enforcedPolicy,omitempty"`
	// EnforcedRevision is EnforcedPolicy's revision.
	EnforcedRevision string `json:"enforcedRevision,omitempty"`
	// Delivered are the revisions put in force for the workload while this store knew it
	// (promoted here or adopted from the cluster), newest last, at most maxDelivered: a
	// revision in the cluster that is not among them was written by someone who knew more.
	Delivered []string `json:"delivered,omitempty"`
	// Policy is the name of the workload's policy, for retiring it when the workload is gone.
	Policy string `json:"policy,omitempty"`
	// Learned are the would-be-denied edges of earlier windows of this audit cycle that a newer
	// revision learned: kept across restarts for the review of the revision that allows them.
	Learned     []DeniedEdge `json:"learned,omitempty"`
	PolicyDrops uint64       `json:"policyDrops"`
	Revisions   uint64       `json:"revisions"`
	// Nodes the workload was seen on during the window, with the node's totals at the time it
	// was first seen there in the window: the lost ratio is computed over the deltas.
	Nodes map[string]NodeMark `json:"nodes,omitempty"`
}

// DeniedEdge is a would-be-denied edge and how many flows were seen on it.
type DeniedEdge struct {
	Direction string `json:"direction"`
	Peer      string `json:"peer"`
	Protocol  string `json:"protocol"`
	Port      uint16 `json:"port,omitempty"`
	Count     uint64 `json:"count"`
}

// maxLearned bounds Record.Learned.
const maxLearned = 20

// Learn adds the would-be-denied edges of the window a new revision replaced to the workload's
// learned edges (counts summed, at most maxLearned edges). A revision proposed after
// enforcement starts a new audit cycle: call ResetLearned first.
func (m *Machine) Learn(workload string, edges []DeniedEdge) {
	r := m.records[workload]
	if r == nil || len(edges) == 0 {
		return
	}
	for _, e := range edges {
		i := slices.IndexFunc(r.Learned, func(x DeniedEdge) bool {
			return x.Direction == e.Direction && x.Peer == e.Peer && x.Protocol == e.Protocol && x.Port == e.Port
		})
		switch {
		case i >= 0:
			r.Learned[i].Count += e.Count
		case len(r.Learned) < maxLearned:
			r.Learned = append(r.Learned, e)
		}
	}
	m.dirty[workload] = true
}

// ResetLearned forgets the learned edges of the workload's previous audit cycle.
func (m *Machine) ResetLearned(workload string) {
	if r := m.records[workload]; r != nil && r.Learned != nil {
		r.Learned = nil
		m.dirty[workload] = true
	}
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
	// gone holds the workloads forgotten since the last Gone call.
	gone []string
	// retired holds the retired policies by name; retiredDirty says it changed.
	retired      map[string]Retirement
	retiredDirty bool
	// peers is the other replicas' evidence of the last MergePeers, sorted by replica.
	peers []peerView
}

// New returns a Machine holding the given persisted records.
func New(cfg Config, records []*Record) *Machine {
	m := &Machine{
		cfg:      cfg,
		records:  make(map[string]*Record, len(records)),
		nodeSeen: make(map[string]uint64),
		nodeLost: make(map[string]uint64),
		dirty:    make(map[string]bool),
		retired:  make(map[string]Retirement),
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
	if r != nil && r.Held && !m.cfg.Learn {
		return nil // a human reviews; restarting with --learn releases it
	}
	r = m.get(workload)
	from := r.State
	r.Revision = revision
	r.Revisions++
	r.Held = false
	r.WouldDeny = 0
	m.restartWindow(r, now)
	// An enforced workload keeps EnforcedPolicy in force while the new revision is audited.
	r.EnforcedAt = time.Time{}
	r.State = Audit
	return &Transition{Workload: workload, From: from, To: Audit, Revision: revision, Reason: "revision proposed", At: now}
}

func (m *Machine) restartWindow(r *Record, now time.Time) {
	r.WindowStart = now
	r.WindowFlows = 0
	r.Nodes = nil
}

// Evaluated accounts one flow of a workload in audit evaluated against its revision on node;
// denied says the revision would have denied it. A would-be-denied flow restarts the window
// (the whole window must be free of them); with Learn off it also holds the revision for a
// human. Flows older than the window's start (a replay after a restart) are not evidence for
// it. It returns a transition when the verdict restarts the window.
func (m *Machine) Evaluated(workload, node string, denied bool, at time.Time) *Transition {
	r := m.records[workload]
	if r == nil || r.State != Audit || at.Before(r.WindowStart) {
		return nil
	}
	m.dirty[workload] = true
	if !denied {
		if node != "" {
			if r.Nodes == nil {
				r.Nodes = make(map[string]NodeMark)
			}
			if _, ok := r.Nodes[node]; !ok {
				r.Nodes[node] = NodeMark{Seen: m.nodeSeen[node], Lost: m.nodeLost[node]}
			}
		}
		r.WindowFlows++
		return nil
	}
	r.WouldDeny++
	r.LastWouldDeny = at
	m.restartWindow(r, at)
	if !m.cfg.Learn {
		r.Held = true
		return &Transition{Workload: workload, From: Audit, To: Audit, Revision: r.Revision, Reason: "would-be-denied flow; revision held for review (--learn=false)", At: at}
	}
	return &Transition{Workload: workload, From: Audit, To: Audit, Revision: r.Revision, Reason: "would-be-denied flow; window restarted, the edge is learned into the next revision", At: at}
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
	m.demote(r, now)
	return &Transition{Workload: workload, From: Enforced, To: Audit, Revision: r.Revision, Reason: "policy drop after enforcement (--demote-on-drop)", At: now}
}

// Clean returns how long the workload's window has been clean at now (0 when it is not in
// audit or saw a would-be-denied flow), for the clean-seconds metric.
func (m *Machine) Clean(workload string, now time.Time) time.Duration {
	r := m.records[workload]
	if r == nil || r.State != Audit || r.Held || now.Before(r.WindowStart) {
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
	}
	if b := m.peerBlocker(r); b != "" {
		return b
	}
	if now.Sub(r.WindowStart) < m.cfg.Window {
		return fmt.Sprintf("window clean for %s of %s", now.Sub(r.WindowStart).Truncate(time.Second), m.cfg.Window)
	}
	if n := m.windowFlows(r); n < m.cfg.MinWindowFlows {
		return fmt.Sprintf("%d of %d flows evaluated in the window", n, m.cfg.MinWindowFlows)
	}
	if lr := max(m.LostRatio(workload), m.peerLostRatio(r)); lr > m.cfg.MaxLostRatio {
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
		flows := m.windowFlows(r)
		m.enforce(r, now, flows)
		out = append(out, Transition{Workload: r.Workload, From: Audit, To: Enforced, Revision: r.Revision,
			Reason: fmt.Sprintf("window of %s clean with %d flows evaluated", m.cfg.Window, flows), At: now})
	}
	return out
}

// enforce promotes r at now after a window of flows evaluated.
func (m *Machine) enforce(r *Record, now time.Time, flows uint64) {
	r.State = Enforced
	r.EnforcedAt = now
	r.PromotedWindowStart, r.PromotedWindowFlows = r.WindowStart, flows
	m.dirty[r.Workload] = true
}

// demote returns an enforced r to audit at at, with a new window from at. DemotedAt is
// later than the promotion it undoes, whatever the clock of the node that dropped the flow
// says, so replicas comparing the two (MergePeers) follow it.
func (m *Machine) demote(r *Record, at time.Time) {
	r.DemotedAt = at
	if !at.After(r.EnforcedAt) {
		r.DemotedAt = r.EnforcedAt.Add(time.Nanosecond)
	}
	r.State = Audit
	r.EnforcedAt = time.Time{}
	r.EnforcedPolicy = nil
	m.restartWindow(r, at)
	m.dirty[r.Workload] = true
}

// maxDelivered bounds Record.Delivered.
const maxDelivered = 8

// SetEnforcedPolicy records the policy a promotion put in force and its revision.
func (m *Machine) SetEnforcedPolicy(workload, revision string, policy []byte) {
	if r := m.records[workload]; r != nil {
		r.EnforcedPolicy = policy
		r.EnforcedRevision = revision
		r.delivered(revision)
		m.dirty[workload] = true
	}
}

func (r *Record) delivered(revision string) {
	if revision == "" || slices.Contains(r.Delivered, revision) {
		return
	}
	r.Delivered = append(r.Delivered, revision)
	if len(r.Delivered) > maxDelivered {
		r.Delivered = slices.Delete(r.Delivered, 0, len(r.Delivered)-maxDelivered)
	}
}

// Named records the name of the workload's policy. A name proposed again is no longer
// retired.
func (m *Machine) Named(workload, policy string) {
	r := m.records[workload]
	if r == nil || policy == "" {
		return
	}
	if _, ok := m.retired[policy]; ok {
		delete(m.retired, policy)
		m.retiredDirty = true
	}
	if r.Policy != policy {
		r.Policy = policy
		m.dirty[workload] = true
	}
}

// Adopt takes a policy of ours found in force in the cluster as the starting state of the
// workload whose policy carries that name, instead of letting this store's view replace it:
// a store that was lost, restored from a backup or is new must not undo enforcement that
// somebody proved. It returns a transition when the workload's state changed:
//
//	cluster revision                       record             result
//	one this store delivered               any                nothing (ours, as known)
//	the revision in audit                  audit              enforced: the same rules are in force
//	any other                              audit              kept in force while ours is audited
//	any other                              enforced           ours back to audit, a new window
func (m *Machine) Adopt(workload, revision string, policy []byte, now time.Time) *Transition {
	r := m.records[workload]
	if r == nil || revision == "" || slices.Contains(r.Delivered, revision) {
		return nil
	}
	if r.State == Enforced && r.Revision == revision {
		return nil
	}
	m.dirty[workload] = true
	r.EnforcedPolicy = policy
	r.EnforcedRevision = revision
	r.delivered(revision)
	from := r.State
	switch {
	case r.State == Audit && r.Revision == revision:
		r.State = Enforced
		r.EnforcedAt = now
		r.Held = false
		return &Transition{Workload: workload, From: from, To: Enforced, Revision: revision,
			Reason: "adopted: the cluster enforces this revision already", At: now}
	case r.State == Enforced:
		// A demotion of our revision: replicas merging evidence follow it (MergePeers).
		m.demote(r, now)
		r.EnforcedPolicy, r.EnforcedRevision = policy, revision
		return &Transition{Workload: workload, From: from, To: Audit, Revision: r.Revision,
			Reason: "adopted the cluster's revision " + short(revision) + "; this store's revision is audited before it replaces it", At: now}
	}
	return nil
}

func short(rev string) string {
	rev = strings.TrimPrefix(rev, "sha256:")
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

// Retirement is a policy whose workload this store saw and then lost (its edges expired
// after retention, or it left the shard): the only kind of policy delivery may delete.
type Retirement struct {
	Policy   string `json:"policy"`
	Workload string `json:"workload"`
	// Revisions are those the store delivered under Policy (in audit or in force).
	Revisions []string  `json:"revisions"`
	At        time.Time `json:"at"`
}

// Forget drops a workload that no longer exists without retiring its policy: what this
// store did not observe long enough is no evidence that the policy may go.
func (m *Machine) Forget(workload string) {
	delete(m.records, workload)
	m.gone = append(m.gone, workload)
	delete(m.dirty, workload)
}

// Retire drops a workload that no longer exists (its edges expired from the store) and, if
// it had a policy, retires the policy: delivery may then prune it.
func (m *Machine) Retire(workload string, now time.Time) {
	if r := m.records[workload]; r != nil && r.Policy != "" {
		revs := slices.Clone(r.Delivered)
		if r.Revision != "" && !slices.Contains(revs, r.Revision) {
			revs = append(revs, r.Revision)
		}
		m.retired[r.Policy] = Retirement{Policy: r.Policy, Workload: workload, Revisions: revs, At: now}
		m.retiredDirty = true
	}
	m.Forget(workload)
}

// Retirements returns the retired policies, sorted by name.
func (m *Machine) Retirements() []Retirement {
	out := make([]Retirement, 0, len(m.retired))
	for _, r := range m.retired {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Retirement) int { return strings.Compare(a.Policy, b.Policy) })
	return out
}

// Settle forgets a retired policy that needs no prune any more (deleted, or no longer ours).
func (m *Machine) Settle(policy string) {
	if _, ok := m.retired[policy]; ok {
		delete(m.retired, policy)
		m.retiredDirty = true
	}
}

// RetiredChanged reports whether the retired set changed since the last call.
func (m *Machine) RetiredChanged() bool {
	c := m.retiredDirty
	m.retiredDirty = false
	return c
}

// RestoreRetired replaces the retired set with a persisted one.
func (m *Machine) RestoreRetired(rs []Retirement) {
	clear(m.retired)
	for _, r := range rs {
		m.retired[r.Policy] = r
	}
}

// Gone returns the workloads forgotten since the last call, for deleting their records.
func (m *Machine) Gone() []string {
	g := m.gone
	m.gone = nil
	return g
}

// NodeTotals are the per-node event totals the lost ratio is computed from; they are
// persisted with the records, so a restart neither forgets losses nor misreads the marks.
type NodeTotals struct {
	Seen map[string]uint64 `json:"seen"`
	Lost map[string]uint64 `json:"lost"`
}

// Totals returns a copy of the per-node totals.
func (m *Machine) Totals() NodeTotals {
	return NodeTotals{Seen: maps.Clone(m.nodeSeen), Lost: maps.Clone(m.nodeLost)}
}

// RestoreTotals replaces the per-node totals with persisted ones.
func (m *Machine) RestoreTotals(t NodeTotals) {
	if t.Seen != nil {
		m.nodeSeen = maps.Clone(t.Seen)
	}
	if t.Lost != nil {
		m.nodeLost = maps.Clone(t.Lost)
	}
}

// HeldCount is the number of workloads whose revision is held for review.
func (m *Machine) HeldCount() int {
	n := 0
	for _, r := range m.records {
		if r.Held {
			n++
		}
	}
	return n
}

// Advance tells the machine the flow clock moved from one time to the next. A jump longer
// than MaxFlowGap was not observed: every window in audit is shifted by it, so a window we
// could not see does not count as clean. It returns how many windows were shifted.
func (m *Machine) Advance(from, to time.Time) int {
	gap := to.Sub(from)
	if m.cfg.MaxFlowGap <= 0 || from.IsZero() || gap <= m.cfg.MaxFlowGap {
		return 0
	}
	n := 0
	for _, r := range m.records {
		if r.State == Audit && !r.WindowStart.After(from) {
			r.WindowStart = r.WindowStart.Add(gap)
			m.dirty[r.Workload] = true
			n++
		}
	}
	return n
}
