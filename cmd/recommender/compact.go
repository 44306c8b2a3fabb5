package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/recommender/recommender/pkg/aggregate"
)

// flagDest names compact's output file: --out is a directory of policies everywhere else.
const flagDest = "dest"

// compactOptions are the flags of `recommender compact`.
type compactOptions struct {
	db          string
	dest        string
	lockTimeout time.Duration
}

func newCompactCmd(g *globalOptions) *cobra.Command {
	o := &compactOptions{}
	cmd := &cobra.Command{
		Use:   "compact --db PATH [--dest PATH]",
		Short: "Rewrite the store into a compact file",
		Long: `bbolt never shrinks its file: space freed when retention expires edges is reused by later
writes but never returned. compact copies the live data into a new file, replacing the store
(atomically, by rename) or writing --dest. Stop run and ingest first: compact refuses a store
another process holds, and a writer starting during the copy would lose its writes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCompact(g, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.db, "db", "", "store file")
	f.StringVar(&o.dest, flagDest, "", "write the compacted copy here instead of replacing --db (must not exist)")
	f.DurationVar(&o.lockTimeout, "lock-timeout", aggregate.DefaultLockTimeout, "how long to wait for another process to release the store")
	return cmd
}

func runCompact(g *globalOptions, o *compactOptions, w io.Writer) error {
	if o.db == "" {
		return errors.New("--db is required")
	}
	log, err := g.stderrLogger()
	if err != nil {
		return err
	}
	before, after, err := aggregate.Compact(o.db, o.dest, aggregate.Options{Timeout: o.lockTimeout, Logger: log})
	if err != nil {
		return err
	}
	dst := o.db
	if o.dest != "" {
		dst = o.dest
	}
	fmt.Fprintf(w, "compacted %s into %s: %d -> %d bytes\n", o.db, dst, before, after)
	return nil
}
