package daemon

import (
	"context"
	"fmt"
	"strings"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/recommender/recommender/pkg/gitops"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// publish maps the proposals and their audit state into a GitOps change set. The publisher
// itself batches (--pr-interval) and skips unchanged revisions.
func (dm *Daemon) publish(ctx context.Context, states []state) error {
	cs := make(gitops.ChangeSet, 0, len(states))
	for _, s := range states {
		p := s.proposal
		y, err := synth.MarshalPolicy(p.Policy)
		if err != nil {
			return fmt.Errorf("render %s: %w", p.Name, err)
		}
		gp := gitops.Proposal{
			Name:     p.Name,
			State:    gitops.StateAudit,
			YAML:     y,
			Revision: p.Revision,
			Window: gitops.Window{
				Start:     s.record.WindowStart,
				Clean:     s.clean,
				Required:  dm.cfg.Lifecycle.Window,
				FlowsSeen: s.record.WindowFlows,
			},
		}
		if s.record.State == lifecycle.Enforced {
			gp.State = gitops.StateEnforced
		}
		var old []*v2.CiliumClusterwideNetworkPolicy
		if prev := dm.published[p.Name]; prev != nil {
			old = append(old, prev.Policy)
		}
		for _, d := range synth.Diff(old, []*v2.CiliumClusterwideNetworkPolicy{p.Policy}) {
			for _, c := range d.Added {
				gp.Added = append(gp.Added, c.String())
			}
			for _, c := range d.Removed {
				gp.Removed = append(gp.Removed, c.String())
			}
		}
		for _, ps := range p.Peers {
			gp.Evidence = append(gp.Evidence, gitops.RuleEvidence{
				Rule:        ps.Direction.String() + " " + ps.Peer + " " + strings.Join(ps.Ports, ","),
				Flows:       ps.Flows,
				FirstSeen:   p.FirstSeen,
				LastSeen:    p.LastSeen,
				SamplePeers: []string{ps.Peer},
			})
		}
		for _, d := range s.denied {
			gp.WouldDeny = append(gp.WouldDeny, gitops.DeniedFlow{Peer: d.Peer, Direction: d.Direction.String(), Protocol: d.Proto.String(), Port: d.Port, Count: d.Count})
		}
		cs = append(cs, gp)
	}
	res, err := dm.d.Publisher.Publish(ctx, cs)
	if err != nil {
		return fmt.Errorf("publish pull requests: %w", err)
	}
	if res.Status == gitops.StatusPublished {
		for _, s := range states {
			dm.published[s.proposal.Name] = s.proposal
		}
		for _, b := range res.Branches {
			dm.log.Info("gitops branch", "branch", b.Branch, "pushed", b.Pushed, "compare", b.CompareURL)
		}
	}
	if _, err := dm.d.Publisher.Flush(ctx); err != nil {
		return fmt.Errorf("flush pull requests: %w", err)
	}
	return nil
}
