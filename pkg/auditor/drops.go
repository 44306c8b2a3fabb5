package auditor

import (
	"slices"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// maxDropsPerTarget bounds the distinct dropped edges kept per workload for reviews.
const maxDropsPerTarget = 20

// DroppedEdge is one edge of a workload whose policy is in force that Cilium dropped for
// policy reasons, with the policy the drop is blamed on.
type DroppedEdge struct {
	Direction flows.Direction
	Peer      string
	Proto     flows.Protocol
	Port      uint16
	Count     uint64
	Last      time.Time // flow time of the newest one
	// Policy is the policy blamed: the workload's generated policy when Ours, else the one
	// Hubble named or the kind of rule that must have decided.
	Policy string
	Ours   bool
	// Attribution says how the blame was decided (blame).
	Attribution string
}

// Attributions of a policy drop (DroppedEdge.Attribution).
const (
	// AttributedByHubble: Hubble named the policy (ingress/egress_denied_by, or a spec.log
	// value in policy_log).
	AttributedByHubble = "named by Hubble"
	// AttributedDefaultDeny: Hubble named none and the drop reason is a default deny (no rule
	// of the policies selecting the endpoint allowed the flow). Generated policies only allow,
	// so this is how every drop they cause arrives, and the policy in force is blamed.
	AttributedDefaultDeny = "default deny: no rule allowed the flow"
	// AttributedDenyRule: the drop reason is an explicit deny rule (POLICY_DENY), which
	// generated policies never contain.
	AttributedDenyRule = "explicit deny rule of another policy"
	// AttributedAuthRequired: a rule demanding authentication (AUTH_REQUIRED), which generated
	// policies never contain.
	AttributedAuthRequired = "authentication required by another policy"
)

// blame decides which policy a policy drop at an end whose own policy is ours is blamed on.
// Only what the flow says counts: a policy named by Hubble, then the drop reason; a policy
// this project does not own is never blamed on one it does.
func blame(ev *flows.Event, ours string) (policy string, isOurs bool, attribution string) {
	logValue := synth.LogValue(ours)
	for _, ref := range ev.DeniedBy {
		if ref.Name == ours && (ref.Kind == "CiliumClusterwideNetworkPolicy" || ref.Kind == "CiliumNetworkPolicy") {
			return ours, true, AttributedByHubble
		}
	}
	if slices.Contains(ev.PolicyLog, logValue) && len(ev.DeniedBy) == 0 {
		return ours, true, AttributedByHubble
	}
	if len(ev.DeniedBy) > 0 {
		return ev.DeniedBy[0].String(), false, AttributedByHubble
	}
	switch ev.DropReason {
	case flowpb.DropReason_POLICY_DENY.String():
		return "deny rule", false, AttributedDenyRule
	case flowpb.DropReason_AUTH_REQUIRED.String():
		return "authentication rule", false, AttributedAuthRequired
	}
	return ours, true, AttributedDefaultDeny
}

// policyDrop accounts a flow Cilium dropped for policy reasons at the ends whose workload has
// a policy of ours in force (enforced, or an older revision still enforced while a newer one
// is audited). A drop blamed on our policy counts against it and may demote it
// (--demote-on-drop); one blamed on another policy is counted apart and changes nothing.
func (a *Auditor) policyDrop(ev *flows.Event, ends []end) {
	for _, e := range ends {
		if e.self.Kind != flows.PeerWorkload {
			continue
		}
		if ev.Point != flows.DirectionUnknown && ev.Point != e.dir {
			continue
		}
		key := a.keyOf(e.self)
		rec := a.machine.Record(key)
		if rec == nil || rec.Policy == "" || (rec.State != lifecycle.Enforced && len(rec.EnforcedPolicy) == 0) {
			continue
		}
		n := a.names[key]
		policy, ours, why := blame(ev, rec.Policy)
		a.recordDrop(key, ev, e, policy, ours, why)
		first := a.firstOnEdge("drop|" + key + "|" + e.dir.String() + "|" + e.other.Key() + "|" + ev.PortString())
		if !ours {
			a.m.foreignDrops.WithLabelValues(n.namespace, n.name, e.dir.String(), policy).Inc()
			if first {
				a.log.Info("flow dropped by a policy recommender does not own",
					"workload", n.namespace+"/"+n.name, "direction", e.dir.String(), "peer", e.other.String(),
					"port", ev.PortString(), "policy", policy, "attribution", why, "reason", ev.DropReason, "node", ev.Node)
			}
			continue
		}
		a.m.policyDrops.WithLabelValues(n.namespace, n.name, e.dir.String(), policy).Inc()
		// Logged once per edge: the counter carries the rest (a denied client retries a lot).
		if first {
			a.log.Warn("enforced policy dropped a flow",
				"workload", n.namespace+"/"+n.name, "policy", policy, "attribution", why, "direction", e.dir.String(),
				"peer", e.other.String(), "port", ev.PortString(), "reason", ev.DropReason, "node", ev.Node)
		}
		if tr := a.machine.PolicyDrop(key, ev.Time); tr != nil {
			a.logTransition(*tr)
		}
	}
}

func (a *Auditor) recordDrop(key string, ev *flows.Event, e end, policy string, ours bool, why string) {
	peer := e.other.String()
	a.drops[key] = tally(a.drops[key], maxDropsPerTarget, ev.Time, func(d *DroppedEdge) bool {
		return d.Direction == e.dir && d.Peer == peer && d.Proto == ev.Proto && d.Port == ev.Port && d.Policy == policy
	}, func() DroppedEdge {
		return DroppedEdge{Direction: e.dir, Peer: peer, Proto: ev.Proto, Port: ev.Port, Count: 1,
			Last: ev.Time, Policy: policy, Ours: ours, Attribution: why}
	})
}

// tally counts a flow seen at at on the edge of list that match finds, or appends the edge
// fresh makes while list holds fewer than limit (a workload's list of distinct edges for
// reviews stays bounded), and returns the list.
func tally[E any, P interface {
	*E
	seen(at time.Time)
}](list []E, limit int, at time.Time, match func(*E) bool, fresh func() E) []E {
	for i := range list {
		if match(&list[i]) {
			P(&list[i]).seen(at)
			return list
		}
	}
	if len(list) < limit {
		list = append(list, fresh())
	}
	return list
}

func (d *DroppedEdge) seen(at time.Time) { d.Count++; d.Last = at }

func (d *DeniedEdge) seen(at time.Time) { d.Count++; d.Last = at }
