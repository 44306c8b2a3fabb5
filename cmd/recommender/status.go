package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/replicas"
)

// statusOptions are the flags of `recommender status`.
type statusOptions struct {
	db          string
	output      string
	lockTimeout time.Duration
}

func newStatusCmd(g *globalOptions) *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status --db PATH [-o table|json]",
		Short: "Summarize the store: workloads, edges, counts, time range",
		Long: `status opens the store read-only and prints what it holds. It needs the file lock, so it
waits (--lock-timeout) and then fails while a run or ingest writes to the store. A replica's
store (run --replicas N) also lists the other replicas' summaries it keeps.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(g, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.db, "db", "", "store file")
	f.StringVarP(&o.output, flagOutput, "o", outputTable, "output format: table or json")
	f.DurationVar(&o.lockTimeout, "lock-timeout", aggregate.DefaultLockTimeout, "how long to wait for another process to release the store")
	return cmd
}

func runStatus(g *globalOptions, o *statusOptions, w io.Writer) (err error) {
	if o.db == "" {
		return errors.New("--db is required")
	}
	if err := validateOutput(o.output); err != nil {
		return err
	}
	log, err := g.stderrLogger()
	if err != nil {
		return err
	}
	store, err := aggregate.Open(o.db, aggregate.Options{ReadOnly: true, Timeout: o.lockTimeout, Logger: log})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	snap, err := store.Snapshot()
	if err != nil {
		return err
	}
	cur, err := store.Cursor()
	if err != nil {
		return err
	}
	st := aggregate.NewStatus(o.db, snap, cur.Len())
	kept, err := replicas.ReadKept(store, log)
	if err != nil {
		return fmt.Errorf("store %s: %w", o.db, err)
	}
	for _, k := range kept {
		sk := aggregate.StatusKept{Replica: k.Replica, Retired: k.Retired, Workloads: len(k.Snapshot.Workloads),
			Edges: k.Snapshot.EdgeCount(), Flows: k.Snapshot.Flows, PulledAt: k.PulledAt}
		if !k.Snapshot.To.IsZero() {
			sk.To = &k.Snapshot.To
		}
		st.KeptSummaries = append(st.KeptSummaries, sk)
	}
	if o.output == outputJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return st.WriteTable(w)
}
