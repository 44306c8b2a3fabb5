package daemon

import (
	"fmt"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"sigs.k8s.io/yaml"

	"github.com/recommender/recommender/pkg/auditor"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// deliverable is the version of a workload's policy the cluster and the policy repository
// should hold.
type deliverable struct {
	name     string
	policy   *v2.CiliumClusterwideNetworkPolicy
	yaml     []byte
	revision string
	// promoted: enforce it. A workload whose newer revision is in audit keeps the revision
	// promoted before (lifecycle.Record.EnforcedPolicy) until the new one is promoted in turn:
	// a new revision must never withdraw enforcement that was already proven.
	promoted bool
}

// deliverableOf returns what delivery writes for a workload's audit state.
func deliverableOf(s *auditor.State) (deliverable, error) {
	p := s.Proposal
	if s.Record.State != lifecycle.Enforced && len(s.Record.EnforcedPolicy) > 0 {
		var old v2.CiliumClusterwideNetworkPolicy
		if err := yaml.Unmarshal(s.Record.EnforcedPolicy, &old); err != nil {
			return deliverable{}, fmt.Errorf("decode enforced policy of %s: %w", p.Name, err)
		}
		return deliverable{name: old.Name, policy: &old, yaml: s.Record.EnforcedPolicy,
			revision: old.Annotations[synth.AnnotationRevision], promoted: true}, nil
	}
	y, err := synth.MarshalPolicy(p.Policy)
	if err != nil {
		return deliverable{}, fmt.Errorf("render %s: %w", p.Name, err)
	}
	return deliverable{name: p.Name, policy: p.Policy, yaml: y, revision: p.Revision,
		promoted: s.Record.State == lifecycle.Enforced}, nil
}
