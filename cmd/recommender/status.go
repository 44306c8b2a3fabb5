package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/recommender/recommender/pkg/aggregate"
)

// statusOptions are the flags of `recommender status`.
type statusOptions struct {
	db          string
	output      string
	lockTimeout time.Duration
}

// storeStatus is what `status` reports; its JSON form is the -o json output.
type storeStatus struct {
	Path           string `json:"path"`
	SizeBytes      int64  `json:"size_bytes"`
	Workloads      int    `json:"workloads"`
	Edges          int    `json:"edges"`
	CollapsedEdges int    `json:"collapsed_edges"`
	Flows          uint64 `json:"flows"`
	Overflow       uint64 `json:"overflow"`
	Rejected       uint64 `json:"rejected"`
	// ChurningLabels are the label keys dropped from workload identities as churning.
	ChurningLabels []churningLabel `json:"churning_labels,omitempty"`
	Lost           uint64          `json:"lost"`
	DNSAnswers     int             `json:"dns_answers"`
	From           *time.Time      `json:"from,omitempty"`
	To             *time.Time      `json:"to,omitempty"`
	CursorNodes    int             `json:"cursor_nodes"`
}

type churningLabel struct {
	Namespace string `json:"namespace"`
	Owner     string `json:"owner,omitempty"`
	Key       string `json:"key"`
}

func newStatusCmd(g *globalOptions) *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status --db PATH [-o table|json]",
		Short: "Summarize the store: workloads, edges, counts, time range",
		Long: `status opens the store read-only and prints what it holds. It needs the file lock, so it
waits (--lock-timeout) and then fails while a run or ingest writes to the store.`,
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
	st := storeStatus{
		Path: o.db, Workloads: len(snap.Workloads), Edges: snap.EdgeCount(), Flows: snap.Flows,
		Overflow: snap.Overflow, Rejected: snap.Rejected, DNSAnswers: len(snap.DNS), CursorNodes: cur.Len(),
	}
	for _, l := range snap.Churning {
		st.ChurningLabels = append(st.ChurningLabels, churningLabel(l))
	}
	if fi, err := os.Stat(o.db); err == nil {
		st.SizeBytes = fi.Size()
	}
	for _, es := range snap.Edges {
		for _, e := range es {
			if e.Collapsed {
				st.CollapsedEdges++
			}
		}
	}
	for _, l := range snap.Lost {
		st.Lost += l.Lost
	}
	if !snap.From.IsZero() {
		st.From, st.To = &snap.From, &snap.To
	}

	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "store:\t%s (%d bytes)\n", st.Path, st.SizeBytes)
	fmt.Fprintf(tw, "workloads:\t%d\n", st.Workloads)
	fmt.Fprintf(tw, "edges:\t%d (%d collapsed port ranges to review)\n", st.Edges, st.CollapsedEdges)
	fmt.Fprintf(tw, "flows:\t%d\n", st.Flows)
	if st.From != nil {
		fmt.Fprintf(tw, "observed:\t%s to %s (%s)\n", st.From.Format(time.RFC3339), st.To.Format(time.RFC3339),
			st.To.Sub(*st.From).Round(time.Second))
	} else {
		fmt.Fprintf(tw, "observed:\tnothing yet\n")
	}
	fmt.Fprintf(tw, "lost events:\t%d\n", st.Lost)
	fmt.Fprintf(tw, "overflow:\t%d (observations dropped at a cap)\n", st.Overflow)
	fmt.Fprintf(tw, "rejected:\t%d (malformed records dropped; the log names the first of each reason)\n", st.Rejected)
	for _, l := range st.ChurningLabels {
		fmt.Fprintf(tw, "churning label:\t%s in %s %s (dropped from the identity)\n", l.Key, l.Namespace, l.Owner)
	}
	fmt.Fprintf(tw, "dns answers:\t%d\n", st.DNSAnswers)
	fmt.Fprintf(tw, "cursor nodes:\t%d\n", st.CursorNodes)
	return tw.Flush()
}
