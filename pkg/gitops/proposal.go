package gitops

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// State is the lifecycle state of a proposed policy; it picks the directory the policy file lives in.
type State string

const (
	// StateAudit policies are shadow-evaluated against live traffic; they live under <git-path>/audit/.
	StateAudit State = "audit"
	// StateEnforced policies are meant to be applied; they live under <git-path>/enforced/.
	StateEnforced State = "enforced"
)

// Proposal is one policy the recommender wants in the repository, with the evidence a reviewer needs.
// The caller maps synthesis and audit results into it; gitops never interprets the YAML.
type Proposal struct {
	// Name is the policy's metadata.name; the file is <name>.yaml.
	Name string
	// Namespace is a CiliumNetworkPolicy's namespace, "" for a CCNP. A namespaced policy's
	// file is <git-path>/<namespace>/audit/<name>.yaml (or enforced/): each namespace's
	// policies sit under one directory a team can own (CODEOWNERS, a path-scoped Argo CD or
	// Flux source) while the files of the whole cluster stay in one tree.
	Namespace string
	// State picks audit/ or enforced/.
	State State
	// YAML is the rendered policy, written as is below a managed-by header.
	YAML []byte
	// Revision identifies the YAML (a content hash); equal revisions mean nothing to publish.
	Revision string
	// Added and Removed are the rules changed since the previous revision, as the synth diff prints them.
	Added, Removed []string
	// Evidence lists the flows behind each rule.
	Evidence []RuleEvidence
	// WouldDeny lists flows seen during audit that the policy would have denied.
	WouldDeny []DeniedFlow
	// Dropped lists flows Cilium dropped for policy reasons while the policy was in force,
	// each with the policy the drop is blamed on.
	Dropped []DroppedFlow
	// Window is the audit window status.
	Window Window
	// Closed names the directions ("ingress", "egress") the policy closes with default deny
	// because no traffic was observed in them.
	Closed []string
}

// RuleEvidence is the traffic observed for one rule.
type RuleEvidence struct {
	Rule        string
	Flows       uint64
	FirstSeen   time.Time
	LastSeen    time.Time
	SamplePeers []string
}

// DeniedFlow is traffic seen during audit that the policy would have denied.
type DeniedFlow struct {
	Peer      string
	Direction string // ingress or egress
	Protocol  string // TCP, UDP, ...
	Port      uint16
	Count     uint64
	// Learned says the flow was seen against an earlier revision and this one allows it: the
	// window restarted, and the edge was learned.
	Learned bool
}

// DroppedFlow is traffic Cilium dropped for policy reasons while the policy was in force.
type DroppedFlow struct {
	Peer      string
	Direction string // ingress or egress
	Protocol  string
	Port      uint16
	Count     uint64
	// Policy is the policy the drop is blamed on; Ours says it is this one.
	Policy string
	Ours   bool
	// Attribution says how the blame was decided ("named by Hubble", "default deny: ...").
	Attribution string
}

// Window is the audit window of a policy.
type Window struct {
	// Start is when auditing of the current revision began.
	Start time.Time
	// Clean is how long the window has been free of would-be-denied flows.
	Clean time.Duration
	// Required is the clean time needed for promotion.
	Required time.Duration
	// FlowsSeen counts flows evaluated against the policy in the window; a window without traffic is not clean.
	FlowsSeen uint64
}

// Ready reports whether the window is long enough and saw traffic.
func (w Window) Ready() bool { return w.Required > 0 && w.Clean >= w.Required && w.FlowsSeen > 0 }

// ChangeSet is the full set of policies the recommender proposes. Policies of ours in the repository
// that are missing from it are removed.
type ChangeSet []Proposal

// policyName is a DNS-1123 subdomain: what Kubernetes accepts as metadata.name, and safe as a file name.
var policyName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// namespaceName is a DNS-1123 label: what Kubernetes accepts as a namespace.
var namespaceName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// normalize checks the change set and returns a copy sorted by name, so that input order never
// changes a commit or a PR body. Names are unique across namespaces: one policy, one
// promotion branch.
func (cs ChangeSet) normalize() (ChangeSet, error) {
	out := slices.Clone(cs)
	slices.SortFunc(out, func(a, b Proposal) int { return strings.Compare(a.Name, b.Name) })
	for i, p := range out {
		if len(p.Name) > 253 || !policyName.MatchString(p.Name) {
			return nil, fmt.Errorf("proposal %q: %w", p.Name, ErrInvalidName)
		}
		if p.Namespace != "" && !namespaceName.MatchString(p.Namespace) {
			return nil, fmt.Errorf("proposal %q: namespace %q: %w", p.Name, p.Namespace, ErrInvalidName)
		}
		if i > 0 && out[i-1].Name == p.Name {
			return nil, fmt.Errorf("proposal %q: %w", p.Name, ErrDuplicateName)
		}
		if p.State != StateAudit && p.State != StateEnforced {
			return nil, fmt.Errorf("proposal %q: state %q: %w", p.Name, p.State, ErrInvalidState)
		}
		if len(p.YAML) == 0 {
			return nil, fmt.Errorf("proposal %q: empty YAML", p.Name)
		}
	}
	return out, nil
}

// fingerprint identifies what a normalized change set would write: names, states and revisions.
// Evidence is left out on purpose: new flows behind an unchanged policy are no reason to touch a PR.
func (cs ChangeSet) fingerprint() string {
	h := sha256.New()
	for _, p := range cs {
		rev := p.Revision
		if rev == "" {
			sum := sha256.Sum256(p.YAML)
			rev = hex.EncodeToString(sum[:])
		}
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\n", p.Namespace, p.Name, p.State, rev)
	}
	return hex.EncodeToString(h.Sum(nil))
}
