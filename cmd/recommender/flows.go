package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/recommender/recommender/pkg/flows"
)

const (
	flagOutput = "output"
	flagFollow = "follow"
)

// The one -o vocabulary of every command that prints a report.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// validateOutput checks an -o value.
func validateOutput(format string) error {
	if format != outputTable && format != outputJSON {
		return fmt.Errorf("-o/--%s %q: want %s or %s", flagOutput, format, outputTable, outputJSON)
	}
	return nil
}

type flowsOptions struct {
	src    *sourceOptions
	output string
}

func newFlowsCmd(g *globalOptions) *cobra.Command {
	o := &flowsOptions{src: newSourceOptions()}
	cmd := &cobra.Command{
		Use:   "flows [--hubble-server ADDR | --flows FILE...] [--follow] [-o table|json]",
		Short: "Print normalized flow events from Hubble Relay or recorded files",
		Long: `flows reads a flow source and prints the events every later stage sees: client and
server decided, replies skipped, both-end observations folded, labels reduced to the stable
set. Without --follow it reads what the source holds now and exits (like 'hubble observe
--all'), so a recording and a relay serving it print the same events. A summary goes to
stderr: events, records skipped by reason (README, Troubleshooting), malformed records with
the first places (file:line), lost events, and the workloads whose pods the flows name
without labels (no selector is guessed for them).`,
		Args: flowArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.src.files = append(o.src.files, args...)
			if err := validateOutput(o.output); err != nil {
				return err
			}
			if err := o.src.validate(); err != nil {
				return err
			}
			if o.src.follow && !o.src.fromRelay() {
				return fmt.Errorf("--%s applies to --%s only: a recording has an end", flagFollow, flagHubbleServer)
			}
			log, err := g.stderrLogger()
			if err != nil {
				return err
			}
			o.src.stdin = cmd.InOrStdin()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			src, err := o.src.build(ctx, log, nil)
			if err != nil {
				return err
			}
			defer src.Close()

			p := flows.NewPrinter(cmd.OutOrStdout(), o.output == outputJSON)
			var printed uint64
			runErr := readEach(ctx, src, func(ev *flows.Event) error {
				if err := p.Print(ev); err != nil {
					return fmt.Errorf("write output: %w", err)
				}
				printed++
				return nil
			})
			if runErr != nil && ctx.Err() != nil {
				runErr = nil // interrupted: what was read is printed, like hubble observe
			}
			// Events are counted here: the source's own count includes observations the
			// folder then drops (and counts as skipped).
			s := src.stats.Snapshot()
			s.Events = printed
			fmt.Fprintln(cmd.ErrOrStderr(), s)
			src.printUnresolved(cmd.ErrOrStderr())
			return errors.Join(runErr, p.Flush())
		},
	}
	o.src.addFlags(cmd.Flags())
	cmd.Flags().BoolVarP(&o.src.follow, flagFollow, "f", false, "keep streaming new flows from Hubble Relay")
	cmd.Flags().StringVarP(&o.output, flagOutput, "o", "table", "output format: table or json (one object per event per line)")
	return cmd
}
