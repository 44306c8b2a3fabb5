package audit

import (
	"errors"
	"log/slog"
	"strconv"
	"sync/atomic"

	"github.com/recommender/recommender/pkg/flows"
)

// Decision is the outcome of evaluating one direction of a flow.
type Decision uint8

const (
	// DecisionNotApplicable: the endpoint on this side is not a Cilium workload (an entity or
	// the world), so no CCNP/CNP can be its subject.
	DecisionNotApplicable Decision = iota
	// DecisionAllowed: the policies let the flow pass in this direction (or none selects the
	// endpoint in this direction, see Reason).
	DecisionAllowed
	// DecisionDenied: the policies would drop the flow in this direction.
	DecisionDenied
	// DecisionUnknown: the answer depends on facts the flow does not carry (a named port's
	// number, an HTTP header); Detail says which.
	DecisionUnknown
)

var decisionNames = [...]string{"n/a", "allowed", "denied", "unknown"}

func (d Decision) String() string {
	if int(d) < len(decisionNames) {
		return decisionNames[d]
	}
	return "unknown"
}

// Reason says why a direction got its Decision.
type Reason uint8

const (
	ReasonNone Reason = iota
	// ReasonNotWorkload: the endpoint is not a workload (DecisionNotApplicable).
	ReasonNotWorkload
	// ReasonNotSelected: no policy selects the endpoint in this direction; Cilium does not
	// enforce it.
	ReasonNotSelected
	// ReasonAllowRule: an allow rule matched peer, port and (when the flow carries L7) request.
	ReasonAllowRule
	// ReasonDefaultAllow: policies select the endpoint in this direction but all of them set
	// enableDefaultDeny false, so unmatched traffic passes.
	ReasonDefaultAllow
	// ReasonLocalhost: ingress from the endpoint's own node, which Cilium allows on Kubernetes
	// (allow-localhost=auto means always there).
	ReasonLocalhost
	// ReasonDenyRule: an ingressDeny/egressDeny rule matched; deny rules win over allows.
	ReasonDenyRule
	// ReasonDefaultDeny: some policy selects the endpoint in this direction and no rule allows
	// the flow.
	ReasonDefaultDeny
	// ReasonL7Denied: a rule allows the peer and port but only for L7 requests (HTTP, DNS) this
	// request does not match; the proxy would refuse it.
	ReasonL7Denied
	// ReasonUnresolved: see DecisionUnknown.
	ReasonUnresolved
	// ReasonRemoteCluster: the endpoint runs in another cluster of the mesh, whose agents
	// enforce their own policies there (DecisionNotApplicable).
	ReasonRemoteCluster
)

var reasonNames = [...]string{"", "not-workload", "not-selected", "allow-rule", "default-allow", "localhost",
	"deny-rule", "default-deny", "l7-denied", "unresolved", "remote-cluster"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// RuleRef names one rule of one policy: the policy object, the spec within it and the rule
// within that spec's section, as a reviewer would find it in the YAML.
type RuleRef struct {
	Kind      string // CiliumClusterwideNetworkPolicy or CiliumNetworkPolicy
	Namespace string // CNPs only
	Name      string
	// Spec is the index into specs, or -1 for the single spec.
	Spec int
	// Section is ingress, ingressDeny, egress or egressDeny.
	Section string
	Index   int
}

// Policy returns the policy the rule belongs to, as Hubble reports policies.
func (r *RuleRef) Policy() flows.PolicyRef {
	return flows.PolicyRef{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}
}

// String renders "CiliumNetworkPolicy/ns/name egress[1]" ("specs[2].egress[1]" for specs).
func (r *RuleRef) String() string {
	p := r.Policy().String()
	if r.Spec >= 0 {
		return p + " specs[" + strconv.Itoa(r.Spec) + "]." + r.Section + "[" + strconv.Itoa(r.Index) + "]"
	}
	return p + " " + r.Section + "[" + strconv.Itoa(r.Index) + "]"
}

// DirectionVerdict is the evaluation of one side of a flow: the egress of the client or the
// ingress of the server.
type DirectionVerdict struct {
	Decision Decision
	Reason   Reason
	// Rule is the rule that allowed or denied the flow (allow-rule, deny-rule, l7-denied); nil
	// when a default decided.
	Rule *RuleRef
	// Detail explains unknown decisions and L7 denials in words.
	Detail string
}

// Denied reports whether this direction would drop the flow.
func (d DirectionVerdict) Denied() bool { return d.Decision == DecisionDenied }

func (d DirectionVerdict) String() string {
	s := d.Decision.String()
	if d.Reason != ReasonNone {
		s += " (" + d.Reason.String()
		if d.Rule != nil {
			s += ": " + d.Rule.String()
		}
		if d.Detail != "" {
			s += ": " + d.Detail
		}
		s += ")"
	}
	return s
}

// Verdict is the evaluation of one flow in both directions Cilium enforces.
type Verdict struct {
	// Egress is the client's (Event.Src) egress policy.
	Egress DirectionVerdict
	// Ingress is the server's (Event.Dst) ingress policy.
	Ingress DirectionVerdict
}

// Denied reports whether either direction would drop the flow.
func (v Verdict) Denied() bool { return v.Egress.Denied() || v.Ingress.Denied() }

// Get returns the verdict for one direction.
func (v Verdict) Get(d flows.Direction) DirectionVerdict {
	if d == flows.DirectionIngress {
		return v.Ingress
	}
	return v.Egress
}

// ErrNotFlow is returned by Evaluate for events that are not flows (lost-events notices).
var ErrNotFlow = errors.New("event is not a flow")

// Evaluator shadow-evaluates flows against a policy set. The set can be replaced at any time
// with Replace; Evaluate is safe for concurrent use and never blocks on a replacement: each
// call sees either the old or the new set, whole.
type Evaluator struct {
	set atomic.Pointer[PolicySet]
	log *slog.Logger
}

// NewEvaluator returns an Evaluator over set (nil: no policies, everything not selected).
func NewEvaluator(set *PolicySet, log *slog.Logger) *Evaluator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Evaluator{log: log}
	if set == nil {
		set = NewPolicySet(Config{})
	}
	e.set.Store(set)
	return e
}

// Replace swaps in a new policy set; flows evaluated afterwards see only the new set.
func (e *Evaluator) Replace(set *PolicySet) {
	e.set.Store(set)
	e.log.Debug("policy set replaced", "policies", set.Len(), "rules", set.Rules())
}

// PolicySet returns the set in use.
func (e *Evaluator) PolicySet() *PolicySet { return e.set.Load() }

// Evaluate decides the flow with the current set. See PolicySet.Evaluate.
func (e *Evaluator) Evaluate(ev *flows.Event) (Verdict, error) {
	return e.set.Load().Evaluate(ev)
}

// Evaluate decides what the set's policies would do with one flow: the egress of the client
// (Event.Src) and the ingress of the server (Event.Dst). It follows Cilium's semantics; see the
// package documentation for the details and the few places where a flow lacks the facts.
func (s *PolicySet) Evaluate(ev *flows.Event) (Verdict, error) {
	if ev.Kind != flows.KindFlow {
		return Verdict{}, ErrNotFlow
	}
	src := s.idx.peer(&ev.Src)
	dst := s.idx.peer(&ev.Dst)
	q := query{proto: ev.Proto, port: ev.Port, l7: ev.L7, names: ev.Dst.Names}
	var v Verdict
	switch {
	case src.remote:
		v.Egress = DirectionVerdict{Decision: DecisionNotApplicable, Reason: ReasonRemoteCluster}
	case src.workload:
		q.peer = dst
		v.Egress = s.decide(s.idx.selected(src, flows.DirectionEgress), &q, flows.DirectionEgress)
	default:
		v.Egress = DirectionVerdict{Decision: DecisionNotApplicable, Reason: ReasonNotWorkload}
	}
	switch {
	case dst.remote:
		v.Ingress = DirectionVerdict{Decision: DecisionNotApplicable, Reason: ReasonRemoteCluster}
	case dst.workload:
		q.peer, q.names = src, nil
		v.Ingress = s.decide(s.idx.selected(dst, flows.DirectionIngress), &q, flows.DirectionIngress)
	default:
		v.Ingress = DirectionVerdict{Decision: DecisionNotApplicable, Reason: ReasonNotWorkload}
	}
	return v, nil
}

// query is one direction's question: may traffic to/from peer on proto/port (with this L7
// request) pass?
type query struct {
	peer  *peerInfo
	proto flows.Protocol
	port  uint16
	l7    *flows.L7
	// names are the DNS names of a world peer on egress (toFQDNs); nil on ingress.
	names []string
}

// decide applies Cilium's per-direction precedence to the rules selecting the subject:
//
//	| step | condition                                        | result                      |
//	|------|--------------------------------------------------|-----------------------------|
//	| 1    | no rule selects the subject in this direction   | allowed, not-selected       |
//	| 2    | a deny rule matches peer and port               | denied, deny-rule           |
//	| 3    | an allow rule matches peer, port and L7 request | allowed, allow-rule         |
//	| 4    | allow rules match peer and port, not the request | denied, l7-denied           |
//	| 5    | every selecting rule has enableDefaultDeny false | allowed, default-allow      |
//	| 6    | ingress from the local host, allow-localhost    | allowed, localhost          |
//	| 7    | an allow could match a named port or header      | unknown                     |
//	| 8    | otherwise                                        | denied, default-deny        |
//
// An allow from steps 3, 5 or 6 becomes unknown when a deny rule could match a named port.
func (s *PolicySet) decide(sel *selection, q *query, dir flows.Direction) DirectionVerdict {
	if len(sel.entries) == 0 {
		return DirectionVerdict{Decision: DecisionAllowed, Reason: ReasonNotSelected}
	}
	// denyUnresolved: a deny rule might match (named port); it turns any allow into unknown.
	var denyUnresolved string
	for _, e := range sel.entries {
		if !e.deny {
			continue
		}
		switch m := e.match(q); m.result {
		case matchYes:
			return DirectionVerdict{Decision: DecisionDenied, Reason: ReasonDenyRule, Rule: &e.ref}
		case matchUnresolved:
			if denyUnresolved == "" {
				denyUnresolved = e.ref.String() + ": " + m.detail
			}
		}
	}
	var (
		allowed         *entry
		l7Lifted        bool
		l7Deny          *entry
		l7Detail        string
		allowUnresolved string
	)
	for _, e := range sel.entries {
		if e.deny {
			continue
		}
		switch m := e.match(q); m.result {
		case matchYes:
			if allowed == nil {
				allowed = e
			}
			l7Lifted = l7Lifted || m.portSpecific
		case matchL7Denied:
			if l7Deny == nil {
				l7Deny, l7Detail = e, m.detail
			}
		case matchUnresolved:
			if allowUnresolved == "" {
				allowUnresolved = e.ref.String() + ": " + m.detail
			}
		}
	}
	var v DirectionVerdict
	switch {
	// A port-specific rule with L7 rules redirects the port to the proxy; an L3-only allow of
	// the same peer does not lift that restriction, a port-specific allow without L7 rules does.
	case l7Deny != nil && !l7Lifted:
		return DirectionVerdict{Decision: DecisionDenied, Reason: ReasonL7Denied, Rule: &l7Deny.ref, Detail: l7Detail}
	case allowed != nil:
		v = DirectionVerdict{Decision: DecisionAllowed, Reason: ReasonAllowRule, Rule: &allowed.ref}
	case !sel.defaultDeny:
		v = DirectionVerdict{Decision: DecisionAllowed, Reason: ReasonDefaultAllow}
	case dir == flows.DirectionIngress && q.peer.localHost && s.cfg.AllowLocalhost != AllowLocalhostPolicy:
		v = DirectionVerdict{Decision: DecisionAllowed, Reason: ReasonLocalhost}
	case allowUnresolved != "":
		return DirectionVerdict{Decision: DecisionUnknown, Reason: ReasonUnresolved, Detail: allowUnresolved}
	default:
		return DirectionVerdict{Decision: DecisionDenied, Reason: ReasonDefaultDeny}
	}
	if denyUnresolved != "" {
		return DirectionVerdict{Decision: DecisionUnknown, Reason: ReasonUnresolved, Detail: denyUnresolved}
	}
	return v
}
