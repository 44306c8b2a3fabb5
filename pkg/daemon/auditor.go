package daemon

import (
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/cluster"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// Bounds of what the auditor remembers about would-be-denied flows.
const (
	maxLoggedEdges     = 10000 // edges already logged once; cleared when full
	maxDeniedPerTarget = 20    // distinct would-be-denied edges kept per workload for reviews
	// maxClockSkew is how far ahead of the wall clock a flow's time may be and still advance
	// the flow clock.
	maxClockSkew = 5 * time.Minute
)

// nodeTotalsKey and retiredKey hold the lifecycle machine's per-node totals and retired
// policies in the lifecycle bucket; no workload key starts with '~' (namespaces are DNS
// labels).
const (
	nodeTotalsKey = "~node-totals"
	retiredKey    = "~retired"
)

// deniedEdge is one would-be-denied edge of a workload in its current window.
type deniedEdge struct {
	Direction flows.Direction
	Peer      string
	Proto     flows.Protocol
	Port      uint16
	Count     uint64
	Last      time.Time // flow time of the newest one, for the status page
}

// auditor shadow-evaluates every flow against the revisions under audit (and enforced ones,
// for drops), drives the lifecycle and keeps the metrics. observe runs on the ingest
// goroutine for each event; update runs on the sync loop.
type auditor struct {
	log  *slog.Logger
	m    *metrics
	eval *audit.Evaluator
	cfg  audit.Config

	// mu guards machine, current, names, logged, denied, history, now, keys and the pending
	// state.
	mu      sync.Mutex
	machine *lifecycle.Machine
	// current holds, per workload key, the proposal whose revision is audited or enforced.
	current map[string]*synth.Proposal
	// names holds the metric labels of workloads with a proposal.
	names  map[string]workloadName
	logged map[string]struct{}
	denied map[string][]deniedEdge
	// history holds the newest revisions per workload for the status page.
	history revisionHistory
	// now is the newest flow time seen: the lifecycle's clock, so windows are measured in
	// observed time and a replayed recording promotes as the live cluster would have.
	now time.Time
	// pending and pendingGone hold lifecycle changes until a commit that carried them
	// succeeded; gen numbers the writes (lifecycleWriter).
	pending     map[string]pendingRecord
	pendingGone map[string]uint64
	gen         uint64
	// keys caches workload keys by label slice (keyOf).
	keys map[keyCacheKey]string
	// wall is the wall clock (tests replace it).
	wall func() time.Time
	// inShard reports whether a namespace belongs to this daemon's shard.
	inShard func(ns string) bool
	// warmup is how long the process must have observed before a workload leaving the store
	// retires its policy and delivery may be destructive (the daemon's --delivery-warmup).
	warmup time.Duration
	// firstEvent is the wall time this process observed its first flow: how long the replica
	// has watched the cluster, whatever its store holds.
	firstEvent time.Time
}

type workloadName struct{ namespace, name string }

// clock returns the newest flow time seen, the time base of windows and retention.
func (a *auditor) clock() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.now
}

func newAuditor(log *slog.Logger, m *metrics, cfg audit.Config, machine *lifecycle.Machine) *auditor {
	return &auditor{
		log:         log,
		m:           m,
		cfg:         cfg,
		eval:        audit.NewEvaluator(nil, log),
		machine:     machine,
		current:     make(map[string]*synth.Proposal),
		names:       make(map[string]workloadName),
		logged:      make(map[string]struct{}),
		denied:      make(map[string][]deniedEdge),
		history:     make(revisionHistory),
		keys:        make(map[keyCacheKey]string),
		pending:     make(map[string]pendingRecord),
		pendingGone: make(map[string]uint64),
		wall:        time.Now,
		inShard:     func(string) bool { return true },
	}
}

// keyOf returns the workload key of a peer. The normalizer hands out one shared label slice
// per identity, so the key is cached by that slice: building it costs an allocation per flow
// end otherwise. The cache is cleared when it outgrows maxKeyCache (identities churn).
func (a *auditor) keyOf(p *flows.Peer) string {
	if len(p.Labels) == 0 {
		return aggregate.WorkloadKey{Namespace: p.Namespace}.String()
	}
	ck := keyCacheKey{ns: p.Namespace, first: &p.Labels[0], n: len(p.Labels)}
	if k, ok := a.keys[ck]; ok {
		return k
	}
	if len(a.keys) >= maxKeyCache {
		clear(a.keys)
	}
	k := aggregate.WorkloadKey{Namespace: p.Namespace, Labels: p.Labels}.String()
	a.keys[ck] = k
	return k
}

type keyCacheKey struct {
	ns    string
	first *string
	n     int
}

const maxKeyCache = 1 << 16

// end is one side of a flow that a policy may govern.
type end struct {
	dir   flows.Direction
	self  *flows.Peer
	other *flows.Peer
}

// observe accounts one event: lost-event totals per node, enforced-policy drops, Cilium's own
// AUDIT verdicts, and the shadow verdict of the revision each workload end is audited with.
func (a *auditor) observe(ev *flows.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.firstEvent.IsZero() {
		a.firstEvent = a.wall()
	}
	// A node whose clock runs ahead must not move every window and the retention forward.
	if ev.Time.After(a.now) && ev.Time.Before(a.wall().Add(maxClockSkew)) {
		if n := a.machine.Advance(a.now, ev.Time); n > 0 {
			a.log.Info("flow clock jumped: the unseen time does not count towards windows",
				"from", a.now, "to", ev.Time, "windows", n)
		}
		a.now = ev.Time
	}
	if ev.Kind == flows.KindLost {
		if ev.Lost != nil {
			a.machine.NodeLost(ev.Node, ev.Lost.Count)
		}
		return
	}
	a.machine.NodeEvent(ev.Node)
	ends := []end{{flows.DirectionEgress, &ev.Src, &ev.Dst}, {flows.DirectionIngress, &ev.Dst, &ev.Src}}

	switch ev.Verdict {
	case flows.VerdictDropped:
		if flows.IsPolicyDrop(ev.DropReason) {
			a.policyDrop(ev, ends)
		}
		return // dropped traffic does not work today: no policy can break it
	case flows.VerdictError:
		return
	}

	var verdict audit.Verdict
	evaluated := false
	for _, e := range ends {
		if e.self.Kind != flows.PeerWorkload {
			continue
		}
		key := a.keyOf(e.self)
		rec := a.machine.Record(key)
		if rec == nil || rec.State == lifecycle.Observing || a.current[key] == nil {
			continue
		}
		if !evaluated {
			v, err := a.eval.Evaluate(ev)
			if err != nil && !errors.Is(err, audit.ErrNotFlow) {
				a.log.Debug("evaluate flow", "err", err)
			}
			verdict, evaluated = v, true
		}
		dv := verdict.Get(e.dir)
		// Cilium in policy-audit-mode reports AUDIT where its enforced policy would deny: the
		// same evidence as our own shadow verdict, counted once.
		ciliumAudit := ev.Verdict == flows.VerdictAudit && (ev.Point == e.dir || ev.Point == flows.DirectionUnknown)
		if ciliumAudit {
			n := a.names[key]
			a.m.auditDeny.WithLabelValues(n.namespace, n.name, e.dir.String()).Inc()
		}
		if dv.Decision == audit.DecisionUnknown && !ciliumAudit {
			continue // the flow lacks the facts to decide (a named port, a header): not evidence either way
		}
		denied := dv.Denied() || ciliumAudit
		if denied {
			a.wouldDeny(ev, e, key, dv)
		}
		a.machine.Evaluated(key, ev.Node, denied, ev.Time)
	}
}

func (a *auditor) wouldDeny(ev *flows.Event, e end, key string, dv audit.DirectionVerdict) {
	n := a.names[key]
	a.m.wouldDeny.WithLabelValues(n.namespace, n.name, e.dir.String(), e.other.Kind.String()).Inc()
	peer := e.other.String()
	port := ev.PortString()
	if a.firstOnEdge(key + "|" + e.dir.String() + "|" + e.other.Key() + "|" + port) {
		a.log.Warn("would-be-denied flow",
			"workload", n.namespace+"/"+n.name, "direction", e.dir.String(), "peer", peer, "port", port,
			"verdict", ev.Verdict.String(), "reason", dv.String(), "node", ev.Node, "time", ev.Time)
	}
	ds := a.denied[key]
	for i := range ds {
		if ds[i].Direction == e.dir && ds[i].Peer == peer && ds[i].Proto == ev.Proto && ds[i].Port == ev.Port {
			ds[i].Count++
			ds[i].Last = ev.Time
			return
		}
	}
	if len(ds) < maxDeniedPerTarget {
		a.denied[key] = append(ds, deniedEdge{Direction: e.dir, Peer: peer, Proto: ev.Proto, Port: ev.Port, Count: 1, Last: ev.Time})
	}
}

// firstOnEdge reports whether edge is seen for the first time since the memory of logged edges
// was last cleared (it holds at most maxLoggedEdges).
func (a *auditor) firstOnEdge(edge string) bool {
	if _, ok := a.logged[edge]; ok {
		return false
	}
	if len(a.logged) >= maxLoggedEdges {
		clear(a.logged)
	}
	a.logged[edge] = struct{}{}
	return true
}

func (a *auditor) policyDrop(ev *flows.Event, ends []end) {
	for _, e := range ends {
		if e.self.Kind != flows.PeerWorkload {
			continue
		}
		if ev.Point != flows.DirectionUnknown && ev.Point != e.dir {
			continue
		}
		key := a.keyOf(e.self)
		rec := a.machine.Record(key)
		if rec == nil || rec.State != lifecycle.Enforced {
			continue
		}
		n := a.names[key]
		a.m.policyDrops.WithLabelValues(n.namespace, n.name, e.dir.String()).Inc()
		// Logged once per edge: the counter carries the rest (a denied client retries a lot).
		if a.firstOnEdge("drop|" + key + "|" + e.dir.String() + "|" + e.other.Key() + "|" + ev.PortString()) {
			a.log.Warn("enforced policy dropped a flow",
				"workload", n.namespace+"/"+n.name, "direction", e.dir.String(), "peer", e.other.String(),
				"port", ev.PortString(), "reason", ev.DropReason, "node", ev.Node)
		}
		if tr := a.machine.PolicyDrop(key, ev.Time); tr != nil {
			a.logTransition(*tr)
		}
	}
}

func (a *auditor) logTransition(tr lifecycle.Transition) {
	n := a.names[tr.Workload]
	a.log.Info("policy lifecycle", "workload", n.namespace+"/"+n.name, "from", string(tr.From), "to", string(tr.To),
		"revision", shortRevision(tr.Revision), "reason", tr.Reason)
}

func shortRevision(r string) string {
	if len(r) > 12 {
		return r[:12]
	}
	return r
}

// update takes a synthesis result: new revisions are proposed (restarting their windows),
// workloads gone from the store are forgotten, the evaluator gets the revisions now under
// audit or enforced plus the cluster's other policies, and clean windows are promoted. It
// returns the lifecycle transitions.
func (a *auditor) update(res *synth.Result, snap *aggregate.Snapshot, others *audit.Decoded) []lifecycle.Transition {
	out, policies := a.propose(res, snap)
	// Compiling thousands of policies takes a while: do it without holding up ingest.
	set := audit.NewPolicySet(a.cfg)
	for _, p := range policies {
		if err := set.AddCCNP(p.Policy); err != nil {
			a.log.Error("proposed policy rejected by the evaluator", "policy", p.Name, "err", err)
		}
	}
	if others != nil {
		for _, p := range others.CCNPs {
			if p.Labels[synth.LabelManagedBy] == synth.ManagedByValue {
				continue // ours: the revision under audit stands for it
			}
			if err := set.AddCCNP(p); err != nil {
				a.log.Warn("cluster policy ignored in shadow evaluation", "policy", p.Name, "err", err)
			}
		}
		for _, p := range others.CNPs {
			if err := set.AddCNP(p); err != nil {
				a.log.Warn("cluster policy ignored in shadow evaluation", "policy", p.Namespace+"/"+p.Name, "err", err)
			}
		}
	}
	a.eval.Replace(set)
	return append(out, a.promote()...)
}

// propose applies a synthesis result to the lifecycle and returns the transitions and the
// proposals now under audit or enforced.
func (a *auditor) propose(res *synth.Result, snap *aggregate.Snapshot) ([]lifecycle.Transition, []*synth.Proposal) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now
	if now.IsZero() {
		now = snap.To
	}
	present := make(map[string]bool, len(snap.Workloads))
	for _, w := range snap.Workloads {
		if !a.inShard(w.Key.Namespace) {
			continue
		}
		present[w.Key.String()] = true
		a.machine.Track(w.Key.String())
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

// promote promotes the workloads whose window is clean, records the policy each promotion
// put in force, and publishes the lifecycle gauges.
func (a *auditor) promote() []lifecycle.Transition {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now
	var out []lifecycle.Transition
	for _, tr := range a.machine.Tick(now) {
		a.m.promotions.Inc()
		out = append(out, tr)
		a.logTransition(tr)
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

// lifecycleWriter returns the two halves of persisting lifecycle state for one committer (the
// Ingester's commit goroutine, or the sync loop): write runs inside a store transaction and
// writes every record changed and not yet known to be on disk; done runs once that transaction
// committed. A record stays pending until a commit that carried it succeeded, so a failed
// commit loses nothing; generations keep one committer's done from clearing what only the
// other's transaction carried.
func (a *auditor) lifecycleWriter() (write func(*aggregate.Lifecycle) error, done func()) {
	var mine uint64
	write = func(l *aggregate.Lifecycle) error {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.gen++
		mine = a.gen
		for _, r := range a.machine.Dirty() {
			a.pending[r.Workload] = pendingRecord{record: r, gen: mine}
		}
		for _, w := range a.machine.Gone() {
			delete(a.pending, w)
			a.pendingGone[w] = mine
		}
		for _, w := range sortedKeys(a.pending) {
			b, err := a.pending[w].record.Marshal()
			if err != nil {
				return err
			}
			if err := l.Put(w, b); err != nil {
				return err
			}
		}
		for _, w := range sortedKeys(a.pendingGone) {
			if err := l.Delete(w); err != nil {
				return err
			}
		}
		b, err := json.Marshal(a.machine.Totals())
		if err != nil {
			return err
		}
		if err := l.Put(nodeTotalsKey, b); err != nil {
			return err
		}
		if b, err = json.Marshal(a.machine.Retirements()); err != nil {
			return err
		}
		return l.Put(retiredKey, b)
	}
	done = func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		for w, p := range a.pending {
			if p.gen <= mine {
				delete(a.pending, w)
			}
		}
		for w, g := range a.pendingGone {
			if g <= mine {
				delete(a.pendingGone, w)
			}
		}
	}
	return write, done
}

// pendingRecord is a lifecycle record written by a transaction not yet known to have committed.
type pendingRecord struct {
	record *lifecycle.Record
	gen    uint64
}

// lifecycleEdges converts would-be-denied edges for the lifecycle record.
func lifecycleEdges(ds []deniedEdge) []lifecycle.DeniedEdge {
	out := make([]lifecycle.DeniedEdge, 0, len(ds))
	for _, d := range ds {
		out = append(out, lifecycle.DeniedEdge{Direction: d.Direction.String(), Peer: d.Peer, Protocol: d.Proto.String(), Port: d.Port, Count: d.Count})
	}
	return out
}

// state is a copy of what delivery needs about one workload with a proposal.
type state struct {
	key      string
	proposal *synth.Proposal
	record   lifecycle.Record
	denied   []deniedEdge
	clean    time.Duration
}

// states returns the workloads with a proposal, sorted by policy name.
func (a *auditor) states() []state {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]state, 0, len(a.current))
	for _, key := range sortedKeys(a.current) {
		rec := a.machine.Record(key)
		if rec == nil {
			continue
		}
		out = append(out, state{key: key, proposal: a.current[key], record: *rec,
			denied: slices.Clone(a.denied[key]), clean: a.machine.Clean(key, a.now)})
	}
	slices.SortFunc(out, func(x, y state) int { return strings.Compare(x.proposal.Name, y.proposal.Name) })
	return out
}

// warmedUp reports whether this process has observed flows for at least the warm-up (always
// when it is 0): until then it retires nothing and delivers nothing destructive.
func (a *auditor) warmedUp() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.warmedUpLocked()
}

func (a *auditor) warmedUpLocked() bool {
	return a.warmup <= 0 || (!a.firstEvent.IsZero() && a.wall().Sub(a.firstEvent) >= a.warmup)
}

// retirements returns the policies this store retired and delivery has not settled yet.
func (a *auditor) retirements() []lifecycle.Retirement {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.machine.Retirements()
}

// settle forgets retirements delivery has settled (pruned, absent, no longer ours).
func (a *auditor) settle(names []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, n := range names {
		a.machine.Settle(n)
	}
}

// adopt takes our policies found in force in the cluster as the starting state of the
// workloads they belong to (lifecycle.Machine.Adopt): a store that is new, was lost or was
// restored from a backup must not undo enforcement somebody proved. Policies applied as audit
// (Cilium in policy-audit-mode) prove nothing and are not adopted.
func (a *auditor) adopt(policies []*v2.CiliumClusterwideNetworkPolicy) {
	a.mu.Lock()
	defer a.mu.Unlock()
	byPolicy := make(map[string]string)
	for _, r := range a.machine.Records() {
		if r.Policy != "" {
			byPolicy[r.Policy] = r.Workload
		}
	}
	for _, p := range policies {
		key, ok := byPolicy[p.Name]
		if !ok || p.Annotations[cluster.AnnotationLifecycle] == cluster.LifecycleAudit {
			continue
		}
		y, err := adoptable(p)
		if err != nil {
			a.log.Error("adopt policy from the cluster", "policy", p.Name, "err", err)
			continue
		}
		rev := strings.TrimPrefix(p.Annotations[synth.AnnotationRevision], revisionPrefix)
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
