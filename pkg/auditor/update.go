package auditor

import (
	"slices"
	"strings"
	"time"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// Update takes a synthesis result: new revisions are proposed (restarting their windows),
// workloads gone from the store are forgotten or retired, the evaluator gets the revisions now
// under audit or enforced plus the cluster's other policies (others, may be nil), and clean
// windows are promoted. It returns the lifecycle transitions, each also logged. Calls are
// serialized.
//
// With replicas (UsePeers), the other replicas' evidence is merged into the lifecycle after
// the proposals and before any promotion, so a window is judged on the flows of every node.
//
// Compiling thousands of policies takes a while, so the set the result will make current is
// compiled first without holding up evaluation; it is then swapped in under the same lock as
// the lifecycle change, so that no flow is judged by one revision and charged to another.
func (a *Auditor) Update(res *synth.Result, snap *aggregate.Snapshot, others *audit.Decoded) []lifecycle.Transition {
	a.updateMu.Lock()
	defer a.updateMu.Unlock()
	var peers []lifecycle.Peer
	if a.peers != nil {
		peers = a.peers()
	}
	predicted := a.predict(res, snap)
	set := a.compile(predicted, others)
	a.mu.Lock()
	defer a.mu.Unlock()
	// Events handed over before the sync met the revisions in force then, and what they would
	// have denied is what a new revision learns from.
	a.drainLocked()
	out, current := a.proposeLocked(res, snap)
	if !sameRevisions(predicted, current) {
		// A verdict held a revision for review meanwhile (--learn=false): compile what is
		// current now, holding the lock this once.
		set = a.compile(current, others)
	}
	a.eval.Replace(set)
	// Without replicas peers is empty: nothing is merged and no replica holds a window.
	merged := a.machine.MergePeers(peers, a.now)
	return append(out, a.promoteLocked(merged)...)
}

// UsePeers makes every Update merge the other replicas' evidence (pkg/replicas Set.Peers),
// pulled for that sync, before it promotes: replicas that split the nodes each evaluate only
// their own nodes' flows. Call it before the first Update.
func (a *Auditor) UsePeers(peers func() []lifecycle.Peer) {
	a.updateMu.Lock()
	defer a.updateMu.Unlock()
	a.peers = peers
}

// Evidence returns this replica's own audit evidence of every workload in audit or enforced,
// what the other replicas merge (pkg/replicas serves it).
func (a *Auditor) Evidence() []lifecycle.Evidence {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.machine.Evidence()
}

// predict returns the proposals Update will make current (proposeLocked): a workload's new
// revision unless a revision of it is held for review, and the current ones of the rest still
// in the store. Sorted by workload key, as proposeLocked returns them.
func (a *Auditor) predict(res *synth.Result, snap *aggregate.Snapshot) []*synth.Proposal {
	a.mu.Lock()
	defer a.mu.Unlock()
	present := a.present(snap)
	next := make(map[string]*synth.Proposal, len(a.current))
	for key, p := range a.current {
		if present[key] {
			next[key] = p
		}
	}
	for _, p := range res.Proposals {
		key := p.Workload.String()
		if !present[key] {
			continue
		}
		if r := a.machine.Record(key); r != nil && r.Revision != p.Revision && r.Held && !a.cfg.Lifecycle.Learn {
			continue
		}
		next[key] = p
	}
	out := make([]*synth.Proposal, 0, len(next))
	for _, key := range sortedKeys(next) {
		out = append(out, next[key])
	}
	return out
}

// present returns the keys of the store's workloads in this daemon's shard.
func (a *Auditor) present(snap *aggregate.Snapshot) map[string]bool {
	present := make(map[string]bool, len(snap.Workloads))
	for _, w := range snap.Workloads {
		if a.inShard(w.Key.Namespace) {
			present[w.Key.String()] = true
		}
	}
	return present
}

func sameRevisions(x, y []*synth.Proposal) bool {
	return slices.EqualFunc(x, y, func(p, q *synth.Proposal) bool { return p.Name == q.Name && p.Revision == q.Revision })
}

// compile builds the evaluator's policy set from the proposals under audit or enforced and the
// cluster's other policies. It reads only the configuration: no lock needed.
func (a *Auditor) compile(policies []*synth.Proposal, others *audit.Decoded) *audit.PolicySet {
	set := audit.NewPolicySet(a.cfg.Audit)
	for _, p := range policies {
		if err := a.addProposal(set, p); err != nil {
			a.log.Error("proposed policy rejected by the evaluator", "policy", p.Name, "err", err)
		}
	}
	if others == nil {
		return set
	}
	// Ours of either kind are older revisions of what is under audit: the proposal stands for
	// them, or they would allow what the revision under audit is to be judged without.
	for _, p := range others.CCNPs {
		if p.Labels[synth.LabelManagedBy] == synth.ManagedByValue {
			continue
		}
		if err := set.AddCCNP(p); err != nil {
			a.log.Warn("cluster policy ignored in shadow evaluation", "policy", p.Name, "err", err)
		}
	}
	for _, p := range others.CNPs {
		if p.Labels[synth.LabelManagedBy] == synth.ManagedByValue {
			continue
		}
		if err := set.AddCNP(p); err != nil {
			a.log.Warn("cluster policy ignored in shadow evaluation", "policy", p.Namespace+"/"+p.Name, "err", err)
		}
	}
	return set
}

// proposeLocked applies a synthesis result to the lifecycle and returns the transitions and
// the proposals now under audit or enforced, sorted by workload key. It runs under mu.
func (a *Auditor) proposeLocked(res *synth.Result, snap *aggregate.Snapshot) ([]lifecycle.Transition, []*synth.Proposal) {
	if a.now.IsZero() {
		// No flow yet: the store's newest is the clock (retention starts from it too).
		a.now = snap.To
	}
	now := a.now
	present := a.present(snap)
	for key := range present {
		a.machine.Track(key)
	}
	// A workload that left the store is retired (delivery may prune its policy) only when this
	// process has watched long enough to call that evidence; before, its policy stays.
	retire := a.warmedUpLocked()
	for _, r := range a.machine.Records() {
		if present[r.Workload] {
			continue
		}
		if retire {
			a.machine.Retire(r.Workload, now)
		} else {
			a.machine.Forget(r.Workload)
		}
		if n, ok := a.names[r.Workload]; ok {
			a.m.clean.DeleteLabelValues(n.namespace, n.name)
		}
		delete(a.current, r.Workload)
		delete(a.names, r.Workload)
		delete(a.denied, r.Workload)
		delete(a.drops, r.Workload)
		delete(a.history, r.Workload)
	}
	var out []lifecycle.Transition
	for _, p := range res.Proposals {
		key := p.Workload.String()
		if !present[key] {
			continue
		}
		a.names[key] = workloadName{namespace: p.Workload.Namespace, name: strings.TrimPrefix(p.Name, sanitizedPrefix(p.Workload.Namespace))}
		tr := a.machine.Propose(key, p.Revision, now)
		a.machine.Named(key, p.Name)
		if tr != nil {
			a.m.revisions.Inc()
			a.history.add(key, a.current[key], p, now, a.denied[key])
			a.current[key] = p
			if tr.From == lifecycle.Enforced {
				a.machine.ResetLearned(key) // a new audit cycle
			}
			// What the replaced revision would have denied is evidence for the one that learned it.
			a.machine.Learn(key, lifecycleEdges(a.denied[key]))
			delete(a.denied, key)
			delete(a.drops, key)
			out = append(out, *tr)
			a.logTransition(*tr)
			continue
		}
		if rec := a.machine.Record(key); rec != nil && rec.Revision == p.Revision {
			a.current[key] = p // same rules, fresher evidence
		}
	}
	policies := make([]*synth.Proposal, 0, len(a.current))
	for _, key := range sortedKeys(a.current) {
		policies = append(policies, a.current[key])
	}
	return out, policies
}

// promoteLocked takes the transitions merged from other replicas, promotes the workloads
// whose window is clean, records the policy each promotion (or one followed from another
// replica) put in force, and publishes the lifecycle gauges. It runs under mu.
func (a *Auditor) promoteLocked(merged []lifecycle.Transition) []lifecycle.Transition {
	now := a.now
	var out []lifecycle.Transition
	for i, tr := range append(merged, a.machine.Tick(now)...) {
		out = append(out, tr)
		a.logTransition(tr)
		if tr.To != lifecycle.Enforced {
			continue
		}
		if i >= len(merged) {
			a.m.promotions.Inc() // a promotion followed from another replica is that one's
		}
		if p := a.current[tr.Workload]; p != nil {
			y, err := synth.MarshalPolicy(p.Policy)
			if err != nil {
				a.log.Error("render promoted policy", "policy", p.Name, "err", err)
				continue
			}
			a.machine.SetEnforcedPolicy(tr.Workload, p.Revision, y)
		}
	}
	a.m.setStates(a.machine.Counts())
	a.m.held.Set(float64(a.machine.HeldCount()))
	for key, n := range a.names {
		rec := a.machine.Record(key)
		if rec == nil || rec.State != lifecycle.Audit {
			a.m.clean.DeleteLabelValues(n.namespace, n.name)
			continue
		}
		a.m.clean.WithLabelValues(n.namespace, n.name).Set(a.machine.Clean(key, now).Seconds())
	}
	return out
}

// sanitizedPrefix is the "<namespace>-" that policy names start with.
func sanitizedPrefix(ns string) string { return ns + "-" }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// lifecycleEdges converts would-be-denied edges for the lifecycle record.
func lifecycleEdges(ds []DeniedEdge) []lifecycle.DeniedEdge {
	out := make([]lifecycle.DeniedEdge, 0, len(ds))
	for _, d := range ds {
		out = append(out, lifecycle.DeniedEdge{Direction: d.Direction.String(), Peer: d.Peer, Protocol: d.Proto.String(), Port: d.Port, Count: d.Count})
	}
	return out
}

// State is a copy of what delivery needs about one workload with a proposal.
type State struct {
	Key      string
	Proposal *synth.Proposal
	Record   lifecycle.Record
	// Denied holds the distinct would-be-denied flows of the current revision.
	Denied []DeniedEdge
	// Drops holds the distinct policy drops since the current revision was proposed, each with
	// the policy it is blamed on.
	Drops []DroppedEdge
	// Clean is how long the current window has been clean.
	Clean time.Duration
	// WindowFlows is the flows evaluated in the current window by every replica (this one's
	// alone are Record.WindowFlows).
	WindowFlows uint64
}

// States returns the workloads with a proposal, sorted by policy name.
func (a *Auditor) States() []State {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]State, 0, len(a.current))
	for _, key := range sortedKeys(a.current) {
		rec := a.machine.Record(key)
		if rec == nil {
			continue
		}
		out = append(out, State{Key: key, Proposal: a.current[key], Record: *rec,
			Denied: slices.Clone(a.denied[key]), Drops: slices.Clone(a.drops[key]), Clean: a.machine.Clean(key, a.now),
			WindowFlows: a.machine.WindowFlows(key)})
	}
	slices.SortFunc(out, func(x, y State) int { return strings.Compare(x.Proposal.Name, y.Proposal.Name) })
	return out
}

// WarmedUp reports whether this process has observed flows for at least the warm-up (always
// when it is 0): until then it retires nothing and delivers nothing destructive.
func (a *Auditor) WarmedUp() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.warmedUpLocked()
}

func (a *Auditor) warmedUpLocked() bool {
	return a.cfg.Warmup <= 0 || (!a.firstEvent.IsZero() && a.wall().Sub(a.firstEvent) >= a.cfg.Warmup)
}

// Retirements returns the policies this store retired and delivery has not settled yet.
func (a *Auditor) Retirements() []lifecycle.Retirement {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.machine.Retirements()
}

// Settle forgets retirements delivery has settled (pruned, absent, no longer ours).
func (a *Auditor) Settle(names []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, n := range names {
		a.machine.Settle(n)
	}
}

// Adopt takes our policies found enforced in the cluster as the starting state of the
// workloads they belong to (lifecycle.Machine.Adopt): a store that is new, was lost or was
// restored from a backup must not undo enforcement somebody proved. The caller passes only
// policies applied to be enforced: one applied as audit (Cilium in policy-audit-mode) proves
// nothing.
func (a *Auditor) Adopt(enforced []*v2.CiliumClusterwideNetworkPolicy) {
	a.mu.Lock()
	defer a.mu.Unlock()
	byPolicy := make(map[string]string)
	for _, r := range a.machine.Records() {
		if r.Policy != "" {
			byPolicy[r.Policy] = r.Workload
		}
	}
	for _, p := range enforced {
		key, ok := byPolicy[p.Name]
		if !ok {
			continue
		}
		y, err := adoptable(p)
		if err != nil {
			a.log.Error("adopt policy from the cluster", "policy", p.Name, "err", err)
			continue
		}
		rev := strings.TrimPrefix(p.Annotations[synth.AnnotationRevision], synth.RevisionPrefix)
		if tr := a.machine.Adopt(key, rev, y, a.now); tr != nil {
			a.logTransition(*tr)
		}
	}
	a.m.setStates(a.machine.Counts())
}

// adoptable renders a policy read from the cluster as the daemon renders its own: what we
// set (name, our label, our annotations, the rules) and nothing the API server or other
// managers added, so applying it again changes nothing.
func adoptable(p *v2.CiliumClusterwideNetworkPolicy) ([]byte, error) {
	out := &v2.CiliumClusterwideNetworkPolicy{Spec: p.Spec, Specs: p.Specs}
	out.Name = p.Name
	out.Labels = map[string]string{synth.LabelManagedBy: synth.ManagedByValue}
	out.Annotations = map[string]string{}
	for _, k := range []string{synth.AnnotationWorkload, synth.AnnotationRevision, synth.AnnotationReview} {
		if v, ok := p.Annotations[k]; ok {
			out.Annotations[k] = v
		}
	}
	return synth.MarshalPolicy(out)
}

// addProposal adds a proposal to set as the kind it is delivered as (Config.Kind): a CNP is
// evaluated as Cilium reads a CNP, with its namespace scoping.
func (a *Auditor) addProposal(set *audit.PolicySet, p *synth.Proposal) error {
	if !a.cfg.Kind.Namespaced() {
		return set.AddCCNP(p.Policy)
	}
	cnp, err := synth.AsCNP(p.Policy)
	if err != nil {
		return err
	}
	return set.AddCNP(cnp)
}

// inShard reports whether a namespace belongs to this daemon's shard (Config.Namespaces).
func (a *Auditor) inShard(ns string) bool {
	return len(a.cfg.Namespaces) == 0 || slices.Contains(a.cfg.Namespaces, ns)
}
