package daemon

import (
	"context"
	"fmt"
	"strings"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/recommender/recommender/pkg/auditor"
	"github.com/recommender/recommender/pkg/gitops"
	"github.com/recommender/recommender/pkg/synth"
)

// publish maps the proposals and their audit state into a GitOps change set. The publisher
// itself batches (--pr-interval) and skips unchanged revisions.
func (dm *Daemon) publish(ctx context.Context, states []auditor.State) error {
	cs := make(gitops.ChangeSet, 0, len(states))
	sent := make(map[string]*v2.CiliumClusterwideNetworkPolicy, len(states))
	for i := range states {
		s := &states[i]
		p := s.Proposal
		d, err := s.Deliverable()
		if err != nil {
			return err
		}
		gp := gitops.Proposal{
			Name:     d.Name,
			State:    gitops.StateAudit,
			YAML:     d.YAML,
			Revision: d.Revision,
			Window: gitops.Window{
				Start:     s.Record.WindowStart,
				Clean:     s.Clean,
				Required:  dm.cfg.Lifecycle.Window,
				FlowsSeen: s.WindowFlows,
			},
		}
		if dm.cfg.Synth.PolicyKind.Namespaced() {
			// The repository holds what the cluster gets: a CNP in the workload's namespace.
			if gp.Namespace, err = synth.PolicyNamespace(d.Policy); err != nil {
				return err
			}
			if gp.YAML, err = synth.MarshalAs(d.Policy, synth.KindCNP); err != nil {
				return fmt.Errorf("render %s: %w", d.Name, err)
			}
		}
		if d.Promoted {
			gp.State = gitops.StateEnforced
			if r := s.Record; !r.PromotedWindowStart.IsZero() {
				// The window that promoted the revision in force, not the one running now.
				gp.Window = gitops.Window{Start: r.PromotedWindowStart, Clean: r.EnforcedAt.Sub(r.PromotedWindowStart),
					Required: dm.cfg.Lifecycle.Window, FlowsSeen: r.PromotedWindowFlows}
			}
		}
		sent[d.Name] = d.Policy
		var old []*v2.CiliumClusterwideNetworkPolicy
		if prev := dm.published[d.Name]; prev != nil {
			old = append(old, prev)
		}
		for _, pd := range synth.Diff(old, []*v2.CiliumClusterwideNetworkPolicy{d.Policy}) {
			for _, c := range pd.Added {
				gp.Added = append(gp.Added, c.String())
			}
			for _, c := range pd.Removed {
				gp.Removed = append(gp.Removed, c.String())
			}
		}
		for _, d := range p.Closed {
			gp.Closed = append(gp.Closed, d.String())
		}
		for _, ps := range p.Peers {
			gp.Evidence = append(gp.Evidence, gitops.RuleEvidence{
				Rule:        ps.Direction.String() + " " + ps.Peer + " " + strings.Join(ps.Ports, ","),
				Flows:       ps.Flows,
				FirstSeen:   ps.FirstSeen,
				LastSeen:    ps.LastSeen,
				SamplePeers: []string{ps.Peer},
			})
		}
		for _, de := range s.Denied {
			gp.WouldDeny = append(gp.WouldDeny, gitops.DeniedFlow{Peer: de.Peer, Direction: de.Direction.String(),
				Protocol: de.Proto.String(), Port: de.Port, Count: de.Count})
		}
		for _, d := range s.Drops {
			gp.Dropped = append(gp.Dropped, gitops.DroppedFlow{Peer: d.Peer, Direction: d.Direction.String(),
				Protocol: d.Proto.String(), Port: d.Port, Count: d.Count, Policy: d.Policy, Ours: d.Ours, Attribution: d.Attribution})
		}
		for _, de := range s.Record.Learned {
			gp.WouldDeny = append(gp.WouldDeny, gitops.DeniedFlow{Peer: de.Peer, Direction: de.Direction,
				Protocol: de.Protocol, Port: de.Port, Count: de.Count, Learned: true})
		}
		cs = append(cs, gp)
	}
	res, err := dm.d.Publisher.Publish(ctx, cs)
	if err != nil {
		return fmt.Errorf("publish pull requests: %w", err)
	}
	if res.Status == gitops.StatusPublished {
		dm.published = sent
		for _, b := range res.Branches {
			dm.log.Info("gitops branch", "branch", b.Branch, "pushed", b.Pushed, "compare", b.CompareURL)
		}
	}
	if _, err := dm.d.Publisher.Flush(ctx); err != nil {
		return fmt.Errorf("flush pull requests: %w", err)
	}
	return nil
}
