package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/recommender/recommender/pkg/aggregate"
)

// compactOptions are the flags of `recommender compact`.
type compactOptions struct {
	db          string
	out         string
	lockTimeout time.Duration
}

func newCompactCmd(g *globalOptions) *cobra.Command {
	o := &compactOptions{}
	cmd := &cobra.Command{
		Use:   "compact --db PATH [--out PATH]",
		Short: "Rewrite the store into a compact file",
		Long: `bbolt never shrinks its file: space freed when retention expires edges is reused by later
writes but never returned. compact copies the live data into a new file, replacing the store
(atomically, by rename) or writing --out. Stop run and ingest first: compact refuses a store
another process holds, and a writer starting during the copy would lose its writes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCompact(g, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.db, "db", "", "store file")
	f.StringVar(&o.out, "out", "", "write the compacted copy here instead of replacing --db (must not exist)")
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
	before, after, err := aggregate.Compact(o.db, o.out, aggregate.Options{Timeout: o.lockTimeout, Logger: log})
	if err != nil {
		return err
	}
	dst := o.db
	if o.out != "" {
		dst = o.out
	}
	fmt.Fprintf(w, "compacted %s into %s: %d -> %d bytes\n", o.db, dst, before, after)
	return nil
}
