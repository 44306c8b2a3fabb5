package auditor

import (
	"cmp"
	"slices"
	"time"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"

	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// maxRevisionsShown bounds the revisions the status page keeps per workload (issue 18): the
// newest ones, each with its YAML and its diff to the one before.
const maxRevisionsShown = 5

// revisionSeen is one revision a workload was proposed with while this daemon ran.
type revisionSeen struct {
	proposal *synth.Proposal
	at       time.Time // flow time it was proposed at
	// denied holds the would-be-denied flows this revision met before the next one replaced
	// it: the evidence behind the next revision's added rules.
	denied []DeniedEdge
}

// revisionHistory keeps the newest revisions per workload for the status page. It is guarded
// by the auditor's mu.
type revisionHistory map[string][]revisionSeen

// add records a new revision p replacing prev (nil for a workload's first); denied are the
// would-be-denied flows prev met.
func (h revisionHistory) add(key string, prev, p *synth.Proposal, at time.Time, denied []DeniedEdge) {
	rs := h[key]
	if len(rs) == 0 && prev != nil {
		// prev was proposed before this daemon started: its time is unknown.
		rs = []revisionSeen{{proposal: prev}}
	}
	if n := len(rs); n > 0 {
		rs[n-1].denied = slices.Clone(denied)
	}
	rs = append(rs, revisionSeen{proposal: p, at: at})
	if len(rs) > maxRevisionsShown {
		rs = slices.Delete(rs, 0, len(rs)-maxRevisionsShown)
	}
	h[key] = rs
}

// StatusView is what the status page shows: a copy taken under the auditor's lock, so
// rendering never holds up ingest.
type StatusView struct {
	// Clock is the flow clock windows run on; Window, MinWindowFlows and MaxLostRatio are the
	// promotion gates.
	Clock          time.Time
	Window         time.Duration
	MinWindowFlows uint64
	MaxLostRatio   float64
	Groups         []StateGroup
}

// StateGroup is the workloads in one lifecycle state.
type StateGroup struct {
	State     lifecycle.State
	Workloads []WorkloadView
}

// WorkloadView is one workload's row on the status page.
type WorkloadView struct {
	Key     string
	Display string // "boutique/Deployment/cartservice"; the key when nothing was proposed yet
	Policy  string
	Record  lifecycle.Record
	// Clean is how long the window has been clean; Lost the share of events Hubble lost on
	// the workload's nodes since the window started.
	Clean time.Duration
	Lost  float64
	// Flows is the flows evaluated in the window, by every replica of a set.
	Flows uint64
	// Progress is the percentage of the way to promotion: the lesser of time and flows.
	Progress int
	// Blocker says what holds the promotion back (lifecycle.Machine.Blocker); "" when ready.
	Blocker string
	// Denied holds the distinct would-be-denied flows of the current revision, newest first.
	Denied []DeniedEdge
	// Enforced is the YAML still applied while a newer revision is audited.
	Enforced  string
	Revisions []RevisionView
}

// RevisionView is one revision with its YAML and its rules added and removed against the
// revision before it (all rules added for the first one this daemon saw).
type RevisionView struct {
	Revision       string
	At             time.Time
	YAML           string
	Added, Removed []string
	First          bool
	// LearnedFrom are the would-be-denied flows the revision before met: what this one's
	// added rules were learned from.
	LearnedFrom []DeniedEdge
}

// Status copies what the status page shows. Observing workloads have no proposal yet and
// show only their record. Revisions are rendered (YAML, diff) after the lock is released:
// proposals are never modified once made.
func (a *Auditor) Status() StatusView {
	v, revisions := a.statusLocked(a.cfg.Lifecycle)
	for i := range v.Groups {
		for j := range v.Groups[i].Workloads {
			w := &v.Groups[i].Workloads[j]
			w.Revisions = revisionViews(revisions[w.Key], a.cfg.Kind)
		}
	}
	return v
}

func (a *Auditor) statusLocked(cfg lifecycle.Config) (StatusView, map[string][]revisionSeen) {
	a.mu.Lock()
	defer a.mu.Unlock()
	revisions := make(map[string][]revisionSeen, len(a.current))
	v := StatusView{Clock: a.now, Window: cfg.Window, MinWindowFlows: cfg.MinWindowFlows, MaxLostRatio: cfg.MaxLostRatio}
	groups := map[lifecycle.State][]WorkloadView{}
	for _, r := range a.machine.Records() {
		w := WorkloadView{Key: r.Workload, Display: r.Workload, Record: *r}
		w.Record.EnforcedPolicy = nil
		if p := a.current[r.Workload]; p != nil {
			w.Display, w.Policy = p.Display, p.Name
		}
		if r.State == lifecycle.Audit {
			w.Clean = a.machine.Clean(r.Workload, a.now)
			w.Lost = a.machine.LostRatio(r.Workload)
			w.Blocker = a.machine.Blocker(r.Workload, a.now)
			w.Flows = a.machine.WindowFlows(r.Workload)
			w.Progress = progress(w.Clean, cfg.Window, w.Flows, cfg.MinWindowFlows)
			if len(r.EnforcedPolicy) > 0 {
				w.Enforced = string(r.EnforcedPolicy)
			}
		}
		w.Denied = slices.Clone(a.denied[r.Workload])
		slices.SortStableFunc(w.Denied, func(x, y DeniedEdge) int { return y.Last.Compare(x.Last) })
		hist := a.history[r.Workload]
		if p := a.current[r.Workload]; len(hist) == 0 && p != nil {
			// Proposed before this daemon started (the lifecycle is in the store, the
			// proposal is rebuilt from the edges): its time is unknown.
			hist = []revisionSeen{{proposal: p}}
		}
		revisions[r.Workload] = slices.Clone(hist)
		groups[r.State] = append(groups[r.State], w)
	}
	for _, s := range lifecycle.States {
		ws := groups[s]
		slices.SortFunc(ws, func(x, y WorkloadView) int { return cmp.Compare(x.Display, y.Display) })
		v.Groups = append(v.Groups, StateGroup{State: s, Workloads: ws})
	}
	return v, revisions
}

// progress is how far a window is towards promotion, in percent: both the time and the
// flow gate must be met, so the lesser counts.
func progress(clean, window time.Duration, flows, minFlows uint64) int {
	p := 100
	if window > 0 {
		p = min(p, int(100*clean/window))
	}
	if minFlows > 0 {
		p = min(p, int(100*flows/minFlows))
	}
	return max(p, 0)
}

// revisionViews renders the revisions newest first, each diffed against the one before it.
func revisionViews(rs []revisionSeen, kind synth.PolicyKind) []RevisionView {
	out := make([]RevisionView, 0, len(rs))
	for i, r := range rs {
		rv := RevisionView{Revision: r.proposal.Revision, At: r.at, First: i == 0}
		if y, err := synth.MarshalAs(r.proposal.Policy, kind); err == nil {
			rv.YAML = string(y)
		} else {
			rv.YAML = "render policy: " + err.Error()
		}
		var old []*v2.CiliumClusterwideNetworkPolicy
		if i > 0 {
			old = append(old, rs[i-1].proposal.Policy)
			rv.LearnedFrom = rs[i-1].denied
		}
		for _, d := range synth.Diff(old, []*v2.CiliumClusterwideNetworkPolicy{r.proposal.Policy}) {
			for _, c := range d.Added {
				rv.Added = append(rv.Added, c.String())
			}
			for _, c := range d.Removed {
				rv.Removed = append(rv.Removed, c.String())
			}
		}
		out = append(out, rv)
	}
	slices.Reverse(out)
	return out
}
