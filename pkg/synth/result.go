package synth

import (
	"time"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// Result is everything one synthesis run produced: the proposals, the workloads that got no
// policy and why, and, when there is no proposal at all, a sentence saying why.
type Result struct {
	// From and To are the observation window of the snapshot; Flows its event count.
	From, To time.Time
	Flows    uint64
	// Lost and Overflow are copied from the snapshot: a window with lost events or dropped
	// observations was not fully seen, and the report says so.
	Lost     []aggregate.NodeLost
	Overflow uint64
	// Cluster is the cluster the proposals are for: Config.ClusterName, or the one the flows
	// name; "" when neither names one. The evaluator must use the same (audit.Config.ClusterName).
	Cluster string
	// Kind is the kind the proposals are written as (Config.PolicyKind): WriteDir, the
	// applier and GitOps render Proposal.Policy as a CNP when it is KindCNP.
	Kind PolicyKind

	Proposals []*Proposal // sorted by Name
	Skipped   []Skip      // sorted by workload
	// Empty says why no policy was produced; it is "" whenever Proposals is not empty.
	Empty string

	// Input is what the flow source read and skipped before aggregation, and Unresolved the
	// pods it refused to write a selector for (flows.Normalizer.Unresolved). The command that
	// read the source sets them; a store snapshot has neither.
	Input      *flows.Summary
	Unresolved []string
}

// Flagged is the number of review findings over all proposals.
func (r *Result) Flagged() int {
	n := 0
	for _, p := range r.Proposals {
		n += len(p.Review)
	}
	return n
}

// Proposal is one generated policy with the evidence behind it.
type Proposal struct {
	Workload aggregate.WorkloadKey
	// Display is the workload as humans know it ("default/Deployment/web").
	Display string
	Name    string
	// Policy is the proposal as a CCNP whatever Result.Kind is; AsCNP renders it as a CNP.
	Policy *v2.CiliumClusterwideNetworkPolicy
	// Revision is the sha256 (hex) of the canonical JSON of Policy.Spec.
	Revision  string
	Flows     uint64
	FirstSeen time.Time
	LastSeen  time.Time
	// Peers summarizes the allowed peers, in rule order.
	Peers []PeerSummary
	// Review lists everything a reviewer must look at before merging, sorted.
	Review []Finding
	// Closed names the directions in which no traffic was seen and which the policy puts in
	// default deny with nothing allowed (Config.QuietDirections deny): "closed for lack of
	// traffic" in REPORT.md and in pull request bodies.
	Closed []flows.Direction
	// Unrestricted names the directions left without rules because no traffic was seen
	// (Config.QuietDirections open).
	Unrestricted []flows.Direction
}

// PeerSummary is one allowed peer of a proposal, for the report.
type PeerSummary struct {
	Direction flows.Direction
	Peer      string   // human form: "default/Deployment/web", "entity:host", "fqdn:api.example.com"
	Ports     []string // "443/TCP", "1024-2048/TCP", "8/ICMPv4", "53/UDP+dns"
	Flows     uint64   // allowing observations (forwarded + audit)
	// FirstSeen and LastSeen span the edges behind this peer's rules, not the whole workload's.
	FirstSeen, LastSeen time.Time
}

// FindingKind classifies something flagged for review.
type FindingKind string

const (
	// FindingPortRange: the aggregator collapsed many ports into a range; the rule allows all of it.
	FindingPortRange FindingKind = "port-range"
	// FindingCIDR: an external address with no DNS name became a CIDR rule; cloud addresses change.
	FindingCIDR FindingKind = "cidr-fallback"
	// FindingPolicyDrop: an enforced policy dropped traffic on this edge; it was not allowed.
	FindingPolicyDrop FindingKind = "policy-drop"
	// FindingNotAllowed: the edge was seen only dropped (not by policy) or with other verdicts.
	FindingNotAllowed FindingKind = "not-allowed"
	// FindingAuditOnly: the edge was allowed from AUDIT verdicts only.
	FindingAuditOnly FindingKind = "audit-only"
	// FindingSelectorOverlap: the workload's labels are a subset of another workload's.
	FindingSelectorOverlap FindingKind = "selector-overlap"
	// FindingVersionSelector: the subject selector keeps a version (or chart) label to tell
	// co-existing workloads apart; a rollout changing it leaves new pods unselected (fail open).
	FindingVersionSelector FindingKind = "version-selector"
	// FindingEntity: a broad reserved entity (world, unmanaged, init, ingress) is allowed.
	FindingEntity FindingKind = "broad-entity"
	// FindingNoDNS: toFQDNs rules exist but no DNS server was seen, so the names cannot resolve under policy.
	FindingNoDNS FindingKind = "fqdn-without-dns"
	// FindingUnexpressible: the edge cannot be written as a rule (ingress from a name, unknown protocol or entity).
	FindingUnexpressible FindingKind = "unexpressible"
	// FindingHTTPWide: many distinct HTTP paths on one port.
	FindingHTTPWide FindingKind = "http-many-paths"
	// FindingHTTPQuery: the HTTP rules allow any query string on the allowed paths, because
	// the observations hold none (Envoy matches the path rule against path and query).
	FindingHTTPQuery FindingKind = "http-query-any"
	// FindingHTTPUndone: another policy selecting the same pods allows the peer and port at L4
	// only, so HTTP rules were not written here either.
	FindingHTTPUndone FindingKind = "http-l4-elsewhere"
	// FindingTruncated: the aggregator's bound on DNS names or HTTP samples was reached on an edge.
	FindingTruncated FindingKind = "truncated-l7"
	// FindingLostEvents: a node the workload ran on lost Hubble events in the window.
	FindingLostEvents FindingKind = "lost-events"
)

// Finding is one item flagged for review.
type Finding struct {
	Kind      FindingKind
	Direction flows.Direction // unknown when the finding is about the workload as a whole
	Peer      string
	Ports     string
	Detail    string
}

// SkipReason says why a workload got no policy.
type SkipReason string

const (
	// SkipFewFlows: fewer observations than Config.MinFlows.
	SkipFewFlows SkipReason = "too few flows"
	// SkipShortObservation: first and last observation closer than Config.MinObserve.
	SkipShortObservation SkipReason = "observed too briefly"
	// SkipNoAllowedTraffic: every edge was dropped, by policy or otherwise, so nothing can be allowed.
	SkipNoAllowedTraffic SkipReason = "no allowed traffic"
	// SkipNoStableLabels: no label identifies the workload; a namespace-wide selector is refused.
	SkipNoStableLabels SkipReason = "no stable labels"
	// SkipRefused: the policy failed validation or would select nothing or allow everything.
	SkipRefused SkipReason = "refused"
	// SkipRemoteCluster: the workload runs in another cluster of the mesh; that cluster's
	// daemon proposes its policy, here it is only a peer.
	SkipRemoteCluster SkipReason = "other cluster"
)

// Skip is a workload that got no policy.
type Skip struct {
	Workload aggregate.WorkloadKey
	Display  string
	Reason   SkipReason
	Detail   string
}
