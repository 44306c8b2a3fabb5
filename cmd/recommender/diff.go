package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

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
		Long: `diff compares the CiliumClusterwideNetworkPolicies in two directories by name and prints,
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
	oldPs, err := synth.ReadDir(o.old)
	if err != nil {
		return err
	}
	newPs, err := synth.ReadDir(o.new)
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
