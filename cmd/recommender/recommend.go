package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replicas"
	"github.com/recommender/recommender/pkg/synth"
)

// recommendOptions are the flags of `recommender recommend`.
type recommendOptions struct {
	src         *sourceOptions
	synth       synthOptions
	db          string
	out         string
	lockTimeout time.Duration
}

func newRecommendCmd(g *globalOptions) *cobra.Command {
	o := &recommendOptions{src: newSourceOptions()}
	cmd := &cobra.Command{
		Use:   "recommend (--flows FILE... | --db PATH | --hubble-server ADDR) --out DIR",
		Short: "Write least-privilege CiliumClusterwideNetworkPolicies, REPORT.md and GRAPH.md from observed flows",
		Long: `recommend turns observed traffic into one CiliumClusterwideNetworkPolicy per workload:
from recorded flows (--flows, aggregated in memory), from the store the daemon or 'ingest'
fills (--db), or from what Hubble Relay holds now. It writes <namespace>-<workload>.yaml
for each policy, REPORT.md (peers, ports, flow counts, skipped workloads and why,
everything flagged for review, a Mermaid graph of each policy) and GRAPH.md (one Mermaid
graph of all proposed policies, grouped by namespace) into --out, removing policy files of
earlier runs that are no longer proposed. Identical input gives byte-identical output. With
--policy-kind CiliumNetworkPolicy each policy is a CNP in its workload's namespace, written as
<namespace>/<namespace>-<workload>.yaml.

The store of a replica of a set (run --replicas N) holds only the edges of the nodes that
replica read, and beside them the other replicas' last summaries: --db merges those too, as
a daemon alone on that store would, so the policies cover every node the set read.`,
		Example: `  recommender recommend --flows testdata/flows/*.jsonl --out out/
  recommender recommend --db recommender.db --out policies/ --min-flows 20 --min-observe 72h --l7 http
  recommender recommend --flows flows.jsonl --policy-kind CiliumNetworkPolicy --out policies/`,
		Args: flowArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.src.files = append(o.src.files, args...)
			o.src.stdin = cmd.InOrStdin()
			return runRecommend(cmd.Context(), g, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	o.src.addFlags(f)
	f.StringVar(&o.db, "db", "", "read the aggregated store instead of a flow source")
	f.StringVar(&o.out, "out", "", "directory for the policies, REPORT.md and GRAPH.md (created if missing)")
	o.synth.addFlags(f)
	f.DurationVar(&o.lockTimeout, "lock-timeout", aggregate.DefaultLockTimeout, "with --db: how long to wait for another process to release the store")
	return cmd
}

// config validates the flags and returns the synthesis config.
func (o *recommendOptions) config(changed func(string) bool) (synth.Config, error) {
	cfg := synth.DefaultConfig()
	if o.out == "" {
		return cfg, errors.New("--out is required")
	}
	if o.db != "" {
		for _, f := range []string{flagFlows, flagHubbleServer} {
			if changed(f) {
				return cfg, fmt.Errorf("--db and --%s exclude each other: read the store or a flow source", f)
			}
		}
	} else if err := o.src.validate(); err != nil {
		return cfg, err
	}
	return o.synth.config(changed)
}

func runRecommend(ctx context.Context, g *globalOptions, o *recommendOptions, stdout io.Writer) error {
	changed := func(name string) bool { return o.src.fs != nil && o.src.fs.Changed(name) }
	cfg, err := o.config(changed)
	if err != nil {
		return err
	}
	log, err := g.stderrLogger()
	if err != nil {
		return err
	}
	ctx, stop := signalContext(ctx)
	defer stop()

	var snap *aggregate.Snapshot
	var input *flows.Summary
	var unresolved []string
	var kept []replicas.KeptSummary
	if o.db != "" {
		snap, kept, err = storeSnapshot(o.db, o.lockTimeout, log)
	} else {
		snap, input, unresolved, err = sourceSnapshot(ctx, o.src, log)
	}
	if err != nil {
		return err
	}
	res, err := synth.SynthesizeContext(ctx, snap, cfg)
	if err != nil {
		return err
	}
	res.Input, res.Unresolved = input, unresolved
	sum, err := synth.WriteDir(o.out, res)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d policies written to %s, %d workloads skipped, %d findings flagged for review\n",
		len(res.Proposals), o.out, len(res.Skipped), res.Flagged())
	if len(sum.Removed) > 0 {
		fmt.Fprintf(stdout, "removed %d policy files of earlier runs that are no longer proposed\n", len(sum.Removed))
	}
	if input != nil {
		fmt.Fprintf(stdout, "input: %s\n", input)
	}
	if len(kept) > 0 {
		fmt.Fprintf(stdout, "merged with %s kept in the store (see `status`)\n", keptText(kept))
	}
	if len(unresolved) > 0 {
		fmt.Fprintf(stdout, "no selector written for %d workloads known only by pod name (flows skipped as %s; see the report)\n", len(unresolved), flows.SkipNoIdentity)
	}
	if res.Empty != "" {
		fmt.Fprintf(stdout, "no policy: %s\n", res.Empty)
		if input != nil && input.Skipped+input.Malformed > 0 {
			fmt.Fprintf(stdout, "the flow source skipped %d records (%s) and found %d malformed\n", input.Skipped, input.SkipText(), input.Malformed)
		}
	}
	fmt.Fprintf(stdout, "report: %s\n", sum.Report)
	fmt.Fprintf(stdout, "graph: %s\n", sum.Graph)
	return nil
}

// storeSnapshot reads the store read-only (the daemon may be writing it), merged with the
// other replicas' summaries it keeps when it is a replica's store.
func storeSnapshot(path string, timeout time.Duration, log *slog.Logger) (*aggregate.Snapshot, []replicas.KeptSummary, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, nil, fmt.Errorf("store %s: %w", path, err)
	}
	store, err := aggregate.Open(path, aggregate.Options{ReadOnly: true, Timeout: timeout, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	snap, kept, err := func() (*aggregate.Snapshot, []replicas.KeptSummary, error) {
		snap, err := store.Snapshot()
		if err != nil {
			return nil, nil, err
		}
		kept, err := replicas.ReadKept(store, log)
		if err != nil {
			return nil, nil, fmt.Errorf("store %s: %w", path, err)
		}
		id, err := store.Identity()
		if err != nil {
			return nil, nil, err
		}
		snap, kept = replicas.MergeKept(snap, id, kept, log)
		return snap, kept, nil
	}()
	return snap, kept, errors.Join(err, store.Close())
}

// keptText names the kept summaries for the command's output.
func keptText(kept []replicas.KeptSummary) string {
	var names []string
	edges := 0
	for _, k := range kept {
		n := "replica " + strconv.Itoa(k.Replica)
		if k.Retired {
			n += " (before its store was replaced)"
		}
		names = append(names, n)
		edges += k.Snapshot.EdgeCount()
	}
	noun := "summaries"
	if len(kept) == 1 {
		noun = "summary"
	}
	return fmt.Sprintf("the %s of %s (%d edges)", noun, strings.Join(names, ", "), edges)
}

// sourceSnapshot reads the flow source to its end and aggregates it in memory. It returns
// what the source skipped and the pods it wrote no selector for, for the report.
func sourceSnapshot(ctx context.Context, o *sourceOptions, log *slog.Logger) (*aggregate.Snapshot, *flows.Summary, []string, error) {
	src, err := o.build(ctx, log, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	defer src.Close()
	agg, err := aggregate.NewAggregator(aggregate.Config{}, log, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := agg.AddAll(ctx, src); err != nil {
		return nil, nil, nil, fmt.Errorf("read flows: %w", err)
	}
	sum := src.stats.Snapshot()
	return agg.Snapshot(), &sum, src.norm.Unresolved(), nil
}
