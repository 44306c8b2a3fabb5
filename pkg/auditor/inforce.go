package auditor

import (
	"fmt"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"sigs.k8s.io/yaml"

	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// Deliverable is the version of a workload's policy the cluster and the policy repository
// should hold.
type Deliverable struct {
	Name     string
	Policy   *v2.CiliumClusterwideNetworkPolicy
	YAML     []byte
	Revision string
	// Promoted: enforce it. A workload whose newer revision is in audit keeps the revision
	// promoted before (lifecycle.Record.EnforcedPolicy) until the new one is promoted in turn:
	// a new revision must never withdraw enforcement that was already proven.
	Promoted bool
}

// Deliverable returns what delivery writes for the workload.
func (s *State) Deliverable() (Deliverable, error) {
	p := s.Proposal
	if s.Record.State != lifecycle.Enforced && len(s.Record.EnforcedPolicy) > 0 {
		var old v2.CiliumClusterwideNetworkPolicy
		if err := yaml.Unmarshal(s.Record.EnforcedPolicy, &old); err != nil {
			return Deliverable{}, fmt.Errorf("decode enforced policy of %s: %w", p.Name, err)
		}
		return Deliverable{Name: old.Name, Policy: &old, YAML: s.Record.EnforcedPolicy,
			Revision: old.Annotations[synth.AnnotationRevision], Promoted: true}, nil
	}
	y, err := synth.MarshalPolicy(p.Policy)
	if err != nil {
		return Deliverable{}, fmt.Errorf("render %s: %w", p.Name, err)
	}
	return Deliverable{Name: p.Name, Policy: p.Policy, YAML: y, Revision: p.Revision,
		Promoted: s.Record.State == lifecycle.Enforced}, nil
}
