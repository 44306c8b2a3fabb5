package lifecycle

import (
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"
)

// Evidence is what one replica's audit holds about a workload (issue 19.3): replicas that
// split the nodes each evaluate only the flows of their own nodes, so each merges the others'
// Evidence into its own lifecycle (MergePeers) before it promotes anything. WindowFlows and
// LostRatio are the replica's own: what it evaluated and what its nodes lost, never what it
// merged from others, so merging cannot echo.
type Evidence struct {
	Workload    string    `json:"workload"`
	State       State     `json:"state"`
	Revision    string    `json:"revision"`
	Held        bool      `json:"held,omitempty"`
	WindowStart time.Time `json:"windowStart,omitzero"`
	WindowFlows uint64    `json:"windowFlows"`
	LostRatio   float64   `json:"lostRatio,omitempty"`
	EnforcedAt  time.Time `json:"enforcedAt,omitzero"`
	DemotedAt   time.Time `json:"demotedAt,omitzero"`
	// PromotedWindowStart is the start of the window that promoted the revision in force.
	PromotedWindowStart time.Time `json:"promotedWindowStart,omitzero"`
}

// Peer is the evidence of one other replica of the set, as pulled for this sync.
type Peer struct {
	Replica string
	// Pulled says Evidence was pulled for this sync. A replica that did not answer keeps its
	// last Evidence here (or none), and nothing is promoted while it is missing: its nodes'
	// flows may hold a would-be-denied one.
	Pulled   bool
	Evidence []Evidence
}

// peerView is a Peer indexed by workload.
type peerView struct {
	replica string
	pulled  bool
	by      map[string]Evidence
}

// Evidence returns this replica's evidence of every workload in audit or enforced, sorted by
// workload: what the other replicas merge (MergePeers).
func (m *Machine) Evidence() []Evidence {
	out := make([]Evidence, 0, len(m.records))
	for _, r := range m.Records() {
		if r.State == Observing || r.Revision == "" {
			continue
		}
		out = append(out, Evidence{
			Workload: r.Workload, State: r.State, Revision: r.Revision, Held: r.Held,
			WindowStart: r.WindowStart, WindowFlows: r.WindowFlows, LostRatio: m.LostRatio(r.Workload),
			EnforcedAt: r.EnforcedAt, DemotedAt: r.DemotedAt, PromotedWindowStart: r.PromotedWindowStart,
		})
	}
	return out
}

// MergePeers takes the other replicas' evidence for this sync (all of them: a replica of the
// set that is missing from peers is not waited for) and merges it into the records, so that
// every replica decides on the evidence of every node:
//
//	peer's record of the same revision       this replica's       result
//	audit, window started later               audit                window restarted there (a would-be-denied flow or a later proposal)
//	audit, held for review                    audit                held here too
//	enforced after this record's demotion     audit, not held, no  enforced: a replica promoted it on the merged evidence
//	                                          later window start
//	audit, demoted after this promotion       enforced             back to audit: a replica saw it drop traffic
//
// Flows and lost events are summed and maxed when a window is judged (Blocker), not here. It
// returns the transitions, promotions followed included.
func (m *Machine) MergePeers(peers []Peer, now time.Time) []Transition {
	m.peers = m.peers[:0]
	for _, p := range peers {
		v := peerView{replica: p.Replica, pulled: p.Pulled, by: make(map[string]Evidence, len(p.Evidence))}
		for _, e := range p.Evidence {
			v.by[e.Workload] = e
		}
		m.peers = append(m.peers, v)
	}
	slices.SortFunc(m.peers, func(a, b peerView) int { return strings.Compare(a.replica, b.replica) })
	var out []Transition
	for _, r := range m.Records() {
		for replica, e := range m.sameRevision(r) {
			if tr := m.mergeOne(r, replica, e, now); tr != nil {
				out = append(out, *tr)
			}
		}
	}
	return out
}

// sameRevision yields, by replica, the other replicas' evidence of r's workload at r's
// revision: what merging, judging and following a window compare with.
func (m *Machine) sameRevision(r *Record) iter.Seq2[string, Evidence] {
	return func(yield func(string, Evidence) bool) {
		for _, p := range m.peers {
			if e, ok := p.by[r.Workload]; ok && e.Revision == r.Revision && !yield(p.replica, e) {
				return
			}
		}
	}
}

func (m *Machine) mergeOne(r *Record, replica string, e Evidence, now time.Time) *Transition {
	switch {
	case r.State == Audit && e.State == Audit:
		if e.Held && !r.Held && !m.cfg.Learn {
			r.Held = true
			m.dirty[r.Workload] = true
			return &Transition{Workload: r.Workload, From: Audit, To: Audit, Revision: r.Revision,
				Reason: "would-be-denied flow on replica " + replica + "; revision held for review (--learn=false)", At: now}
		}
		if e.WindowStart.After(r.WindowStart) {
			m.restartWindow(r, e.WindowStart)
			m.dirty[r.Workload] = true
		}
	case r.State == Audit && e.State == Enforced && e.EnforcedAt.After(r.DemotedAt) &&
		!r.Held && !r.WindowStart.After(e.PromotedWindowStart) && !m.contradicted(r, e):
		// Followed only when nothing this replica or another saw contradicts the promotion:
		// not held, and no window restarted after the one that promoted. The promotion keeps
		// the promoting replica's time and window, so a later demotion anywhere compares
		// against it.
		flows := m.windowFlows(r)
		m.enforce(r, e.EnforcedAt, flows)
		r.PromotedWindowStart = e.PromotedWindowStart
		return &Transition{Workload: r.Workload, From: Audit, To: Enforced, Revision: r.Revision,
			Reason: fmt.Sprintf("promoted by replica %s on the replicas' merged evidence (%d flows evaluated in the window)", replica, flows), At: now}
	case r.State == Enforced && e.State == Audit && e.DemotedAt.After(r.EnforcedAt):
		m.demote(r, e.DemotedAt)
		return &Transition{Workload: r.Workload, From: Enforced, To: Audit, Revision: r.Revision,
			Reason: "demoted by replica " + replica + ": policy drop after enforcement (--demote-on-drop)", At: now}
	}
	return nil
}

// contradicted reports whether another replica's evidence of r's revision, still in audit,
// holds the revision or restarted its window after the window that promoted it in e.
func (m *Machine) contradicted(r *Record, e Evidence) bool {
	for _, o := range m.sameRevision(r) {
		if o.State == Audit && (o.Held || o.WindowStart.After(e.PromotedWindowStart)) {
			return true
		}
	}
	return false
}

// peerBlocker says why the other replicas' evidence does not let r be promoted yet ("" when
// it does).
func (m *Machine) peerBlocker(r *Record) string {
	for _, p := range m.peers {
		if !p.pulled {
			return "replica " + p.replica + " did not answer: the flows of its nodes are not judged"
		}
		e, ok := p.by[r.Workload]
		switch {
		case !ok || e.State == Observing:
			return "replica " + p.replica + " does not audit this workload yet"
		case e.Revision != r.Revision:
			return "replica " + p.replica + " audits revision " + short(e.Revision) + " (it has not synthesized the same edges yet)"
		case e.Held:
			return "revision held for review after a would-be-denied flow on replica " + p.replica
		}
	}
	return ""
}

// windowFlows is the flows evaluated in r's window by this replica and every other one whose
// window for the same revision started no earlier: one that started earlier counted flows
// from before this window (it restarts at the next merge).
func (m *Machine) windowFlows(r *Record) uint64 {
	n := r.WindowFlows
	for _, e := range m.sameRevision(r) {
		if e.State == Audit && !e.WindowStart.Before(r.WindowStart) {
			n += e.WindowFlows
		}
	}
	return n
}

// WindowFlows returns the flows evaluated in the workload's window, by every replica.
func (m *Machine) WindowFlows(workload string) uint64 {
	r := m.records[workload]
	if r == nil {
		return 0
	}
	return m.windowFlows(r)
}

// peerLostRatio is the highest lost ratio the other replicas report for r's revision.
func (m *Machine) peerLostRatio(r *Record) float64 {
	var lr float64
	for _, e := range m.sameRevision(r) {
		lr = max(lr, e.LostRatio)
	}
	return lr
}
