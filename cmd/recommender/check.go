package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
)

const (
	flagPolicies       = "policies"
	flagClusterName    = "cluster-name"
	flagAllowLocalhost = "allow-localhost"
	// flagPolicyDefaultLocal mirrors the Cilium agent option of the same name (issue 16), on
	// run and check alike.
	flagPolicyDefaultLocal = "policy-default-local-cluster"
	helpPolicyDefaultLocal = "Cilium's policy-default-local-cluster setting: peer selectors without a cluster select the local cluster only (1.19+ default); false audits as Cilium 1.18 and older, where they select every cluster of the mesh"
)

type checkOptions struct {
	src                *sourceOptions
	policies           string
	audit              audit.Config
	policyDefaultLocal bool
	output             string
}

func newCheckCmd(g *globalOptions) *cobra.Command {
	o := &checkOptions{src: newSourceOptions()}
	cmd := &cobra.Command{
		Use:   "check --policies DIR --flows FILE... [-o table|json]",
		Short: "Shadow-evaluate a policy directory against recorded flows",
		Long: `check reads the CiliumClusterwideNetworkPolicies and CiliumNetworkPolicies in a directory
(YAML or JSON files, several documents per file) and evaluates every flow of a recording (or
what Hubble Relay holds now, without --flows) against them, as Cilium would enforce them: the
client's egress and the server's ingress. It lists the flows the policies would deny, grouped
by direction, workload, peer and port, with counts and the rule or default that decides, and
exits with an error when there is any. Flows whose verdict depends on facts a flow does not
carry (named ports, HTTP headers) are listed as unknown and do not fail the check.`,
		Args: flowArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.src.files = append(o.src.files, args...)
			if o.policies == "" {
				return fmt.Errorf("--%s is required", flagPolicies)
			}
			if err := validateOutput(o.output); err != nil {
				return err
			}
			o.audit.PolicyAnyCluster = !o.policyDefaultLocal
			if err := o.audit.Validate(); err != nil {
				return fmt.Errorf("--%s: %w", flagAllowLocalhost, err)
			}
			if err := o.src.validate(); err != nil {
				return err
			}
			log, err := g.stderrLogger()
			if err != nil {
				return err
			}
			decoded, err := audit.LoadDir(o.policies)
			if err != nil {
				return err
			}
			for _, s := range decoded.Skipped {
				log.Info("skipping document that is not a Cilium policy", "path", s)
			}
			set, buildErr := decoded.Build(o.audit)
			if set == nil {
				return buildErr
			}
			rejected := rejectedDocs(decoded, buildErr)
			for _, r := range rejected {
				fmt.Fprintf(cmd.ErrOrStderr(), "policy not evaluated: %v\n", r)
			}
			if set.Len() == 0 {
				if len(rejected) > 0 {
					// The check did not run: an error (exit 2), not a finding.
					return fmt.Errorf("no policy in %s could be evaluated (%d documents rejected): %w", o.policies, len(rejected), errors.Join(rejected...))
				}
				return fmt.Errorf("no CiliumClusterwideNetworkPolicy or CiliumNetworkPolicy in %s", o.policies)
			}
			for _, w := range set.Warnings() {
				log.Warn("policy construct not evaluated", "detail", w)
			}
			o.src.stdin = cmd.InOrStdin()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			src, err := o.src.build(ctx, log, nil)
			if err != nil {
				return err
			}
			defer src.Close()

			rep := audit.NewReport()
			for _, r := range rejected {
				rep.Rejected = append(rep.Rejected, r.Error())
			}
			err = readEach(ctx, src, func(ev *flows.Event) error {
				if ev.Kind != flows.KindFlow {
					return nil
				}
				v, err := set.Evaluate(ev)
				if err != nil {
					return fmt.Errorf("evaluate flow: %w", err)
				}
				rep.Add(ev, v)
				return nil
			})
			if err != nil {
				return err // interrupted too: a partial check is no pass
			}
			s := src.stats.Snapshot()
			fmt.Fprintf(cmd.ErrOrStderr(), "policies %d (%d not evaluated), flows evaluated %d, would be denied %d, already dropped in the recording %d, unknown %d (skipped %d: %s; malformed %d, lost %d)\n",
				set.Len(), len(rejected), rep.Evaluated, rep.Denied, rep.Dropped, rep.Unknown, s.Skipped, s.SkipText(), s.Malformed, s.Lost)
			src.printUnresolved(cmd.ErrOrStderr())
			if err := rep.Write(cmd.OutOrStdout(), o.output == outputJSON); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
			var errs []error
			if rep.Denied > 0 {
				errs = append(errs, fmt.Errorf("%d flows in %d groups: %w", rep.Denied, rep.DeniedGroups(), errWouldDeny))
			}
			if len(rejected) > 0 {
				errs = append(errs, fmt.Errorf("%d %w (listed above); %d were evaluated", len(rejected), errUnevaluable, set.Len()))
			}
			return errors.Join(errs...)
		},
	}
	o.src.addFlags(cmd.Flags())
	cmd.Flags().StringVar(&o.policies, flagPolicies, "", "directory of CiliumClusterwideNetworkPolicy/CiliumNetworkPolicy YAML or JSON files (read recursively)")
	cmd.Flags().StringVar(&o.audit.ClusterName, flagClusterName, "", "Cilium cluster name (scopes peer selectors and the cluster entity; workloads of other clusters are peers only); empty evaluates the flows as one cluster, so set it for flows of a ClusterMesh")
	cmd.Flags().BoolVar(&o.policyDefaultLocal, flagPolicyDefaultLocal, true, helpPolicyDefaultLocal)
	cmd.Flags().StringVar(&o.audit.AllowLocalhost, flagAllowLocalhost, audit.AllowLocalhostAlways, "as Cilium's --allow-localhost on Kubernetes: always (the node reaches its pods) or policy")
	cmd.Flags().StringVarP(&o.output, flagOutput, "o", "table", "output format: table or json")
	return cmd
}

// rejectedDocs lists every document that is not in the set: rejected by the decoder, or by
// Cilium's own validation when the set was built.
func rejectedDocs(d *audit.Decoded, buildErr error) []error {
	var out []error
	for _, r := range d.Rejected {
		out = append(out, r)
	}
	if j, ok := buildErr.(interface{ Unwrap() []error }); ok {
		out = append(out, j.Unwrap()...)
	} else if buildErr != nil {
		out = append(out, buildErr)
	}
	return out
}
