package aggregate

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"
)

// Status is what `recommender status` reports of a store; its JSON form is the -o json
// output, and its field names are part of the CLI.
type Status struct {
	Path           string `json:"path"`
	SizeBytes      int64  `json:"size_bytes"`
	Workloads      int    `json:"workloads"`
	Edges          int    `json:"edges"`
	CollapsedEdges int    `json:"collapsed_edges"`
	Flows          uint64 `json:"flows"`
	Overflow       uint64 `json:"overflow"`
	Rejected       uint64 `json:"rejected"`
	// ChurningLabels are the label keys dropped from workload identities as churning.
	ChurningLabels []StatusChurning `json:"churning_labels,omitempty"`
	Lost           uint64           `json:"lost"`
	DNSAnswers     int              `json:"dns_answers"`
	From           *time.Time       `json:"from,omitempty"`
	To             *time.Time       `json:"to,omitempty"`
	CursorNodes    int              `json:"cursor_nodes"`
	// KeptSummaries are the other replicas' summaries a replica's store keeps (its kept
	// bucket), which a daemon alone on it and `recommend --db` merge with its edges.
	KeptSummaries []StatusKept `json:"kept_summaries,omitempty"`
}

// StatusKept is one kept summary of another replica in the status.
type StatusKept struct {
	Replica int `json:"replica"`
	// Retired says it is what that replica served before its store was replaced.
	Retired   bool       `json:"retired,omitempty"`
	Workloads int        `json:"workloads"`
	Edges     int        `json:"edges"`
	Flows     uint64     `json:"flows"`
	To        *time.Time `json:"to,omitempty"`
	PulledAt  time.Time  `json:"pulled_at"`
}

// StatusChurning is a ChurningLabel in the status's JSON form.
type StatusChurning struct {
	Namespace string `json:"namespace"`
	Owner     string `json:"owner,omitempty"`
	Key       string `json:"key"`
}

// NewStatus summarizes a store: its file at path, what snap holds, and the nodes its relay
// cursor knows.
func NewStatus(path string, snap *Snapshot, cursorNodes int) Status {
	st := Status{
		Path: path, Workloads: len(snap.Workloads), Edges: snap.EdgeCount(), Flows: snap.Flows,
		Overflow: snap.Overflow, Rejected: snap.Rejected, DNSAnswers: len(snap.DNS), CursorNodes: cursorNodes,
	}
	for _, l := range snap.Churning {
		st.ChurningLabels = append(st.ChurningLabels, StatusChurning(l))
	}
	if fi, err := os.Stat(path); err == nil {
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

	return st
}

// WriteTable renders the status as `recommender status` prints it.
func (st Status) WriteTable(w io.Writer) error {
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
	for _, k := range st.KeptSummaries {
		what := "kept summary:"
		if k.Retired {
			what = "kept summary (replaced store):"
		}
		to := "nothing observed"
		if k.To != nil {
			to = "observed to " + k.To.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\treplica %d, %d workloads, %d edges, %d flows, %s, pulled %s\n",
			what, k.Replica, k.Workloads, k.Edges, k.Flows, to, k.PulledAt.Format(time.RFC3339))
	}
	return tw.Flush()
}
