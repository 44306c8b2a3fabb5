package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/spf13/cobra"

	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/synth"
)

// diffOptions are the flags of `recommender diff`.
type diffOptions struct {
	old, new string
}

func newDiffCmd(_ *globalOptions) *cobra.Command {
	o := &diffOptions{}
	cmd := &cobra.Command{
		Use:   "diff --old DIR --new DIR",
		Short: "Show which rules policies gained or lost between two policy directories",
		Long: `diff compares the policies in two directories by name (CiliumClusterwideNetworkPolicies, and
CiliumNetworkPolicies as namespace/name; read as check reads them: YAML or JSON, recursively) and prints,
per policy, the rules added and removed: one line per selector, peer, port and L7 rule,
whatever the order or grouping of the YAML. Annotations (revision, flow counts) are ignored.
Like diff(1) it exits 0 when nothing differs and 1 when something does.`,
		Example: `  recommender recommend --flows day1.jsonl --out old/
  recommender recommend --flows day2.jsonl --out new/
  recommender diff --old old/ --new new/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDiff(o, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&o.old, "old", "", "directory with the old policies")
	cmd.Flags().StringVar(&o.new, "new", "", "directory with the new policies")
	return cmd
}

func runDiff(o *diffOptions, stdout io.Writer) error {
	if o.old == "" || o.new == "" {
		return errors.New("--old and --new are required")
	}
	oldPs, err := readPolicyDir(o.old)
	if err != nil {
		return err
	}
	newPs, err := readPolicyDir(o.new)
	if err != nil {
		return err
	}
	diffs := synth.Diff(oldPs, newPs)
	fmt.Fprint(stdout, formatDiff(diffs))
	if len(diffs) > 0 {
		return errDiffers
	}
	return nil
}

// readPolicyDir reads a policy directory as check does (audit.LoadDir: recursive, YAML or
// JSON, CCNPs and CNPs), so diff and check agree on what a directory holds. A CNP is compared
// under "namespace/name", which no CCNP name can be, with its selectors scoped as Cilium scopes
// them (synth.FromCNP). A document that cannot be read is an
// error: a diff that leaves it out would report a change that is not there.
func readPolicyDir(dir string) ([]*v2.CiliumClusterwideNetworkPolicy, error) {
	d, err := audit.LoadDir(dir)
	if err != nil {
		return nil, err
	}
	if len(d.Rejected) > 0 {
		errs := make([]error, len(d.Rejected))
		for i, r := range d.Rejected {
			errs[i] = r
		}
		return nil, fmt.Errorf("read policy directory %s: %d documents rejected: %w", dir, len(d.Rejected), errors.Join(errs...))
	}
	out := slices.Clone(d.CCNPs)
	for _, p := range d.CNPs {
		// In its clusterwide form a CNP's selectors name the namespace Cilium gives them, so
		// its atoms mean what they say.
		c := synth.FromCNP(p)
		c.Name = p.Namespace + "/" + p.Name
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *v2.CiliumClusterwideNetworkPolicy) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(out); i++ {
		if out[i].Name == out[i-1].Name {
			return nil, fmt.Errorf("read policy directory %s: policy %s is defined twice", dir, out[i].Name)
		}
	}
	return out, nil
}

// formatDiff renders diffs for a terminal or a PR body: one block per policy.
func formatDiff(diffs []synth.PolicyDiff) string {
	var b strings.Builder
	for _, d := range diffs {
		switch d.Status {
		case synth.DiffAdded:
			fmt.Fprintf(&b, "+ %s (new policy)\n", d.Name)
		case synth.DiffRemoved:
			fmt.Fprintf(&b, "- %s (removed)\n", d.Name)
		default:
			fmt.Fprintf(&b, "~ %s\n", d.Name)
		}
		for _, c := range d.Removed {
			fmt.Fprintf(&b, "    - %s\n", c)
		}
		for _, c := range d.Added {
			fmt.Fprintf(&b, "    + %s\n", c)
		}
	}
	return b.String()
}
