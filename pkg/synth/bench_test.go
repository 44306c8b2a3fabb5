package synth

import (
	"context"
	"fmt"
	"io"
	"iter"
	"testing"

	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/recommender/recommender/internal/flowgen"
	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// recordSource is a flows.Source over generated records, normalized as the relay source
// normalizes them.
type recordSource struct {
	next func() (*observerpb.GetFlowsResponse, bool)
	norm *flows.Normalizer
}

func (s *recordSource) Recv(context.Context) (*flows.Event, error) {
	for {
		r, ok := s.next()
		if !ok {
			return nil, io.EOF
		}
		if ev, _ := s.norm.Response(r); ev != nil {
			return ev, nil
		}
	}
}

// clusterSnapshot aggregates a synthetic cluster of namespaces*workloads workloads, with
// about perWorkload records each, into the snapshot synthesis reads in the daemon.
func clusterSnapshot(b *testing.B, namespaces, workloads, perWorkload int) *aggregate.Snapshot {
	b.Helper()
	cfg := flowgen.DefaultClusterConfig()
	cfg.Namespaces, cfg.Workloads = namespaces, workloads
	cfg.Flows = namespaces * workloads * perWorkload
	seq, err := flowgen.ClusterRecords(cfg)
	if err != nil {
		b.Fatal(err)
	}
	next, stop := iter.Pull(seq)
	defer stop()
	// Room for every workload and its peers: the default caps are for one daemon's cluster,
	// not the point of this benchmark.
	agg, err := aggregate.NewAggregator(aggregate.Config{MaxWorkloads: 4 * namespaces * workloads, MaxEdges: 1 << 22}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	raw := &recordSource{next: next, norm: flows.NewNormalizer(nil)}
	src := flows.NewFolder(raw, nil)
	if err := agg.AddAll(b.Context(), src); err != nil {
		b.Fatal(err)
	}
	return agg.Snapshot()
}

// BenchmarkSynthesize measures synthesizing every policy of a cluster with 1k and 10k
// workloads (services calling three others, DNS, external names, probes, drops, one
// rollout): one op is a whole Synthesize run over the snapshot, as each daemon sync does.
func BenchmarkSynthesize(b *testing.B) {
	for _, size := range []struct{ namespaces, workloads int }{{20, 50}, {100, 100}} {
		n := size.namespaces * size.workloads
		b.Run(fmt.Sprintf("workloads=%d", n), func(b *testing.B) {
			snap := clusterSnapshot(b, size.namespaces, size.workloads, 30)
			cfg := DefaultConfig()
			var res *Result
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				var err error
				if res, err = Synthesize(snap, cfg); err != nil {
					b.Fatal(err)
				}
			}
			edges := 0
			for _, es := range snap.Edges {
				edges += len(es)
			}
			if len(res.Proposals) < n*9/10 {
				b.Fatalf("Synthesize proposed %d policies for %d workloads (%d skipped), want nearly all", len(res.Proposals), n, len(res.Skipped))
			}
			b.ReportMetric(float64(len(snap.Workloads)), "workloads")
			b.ReportMetric(float64(edges), "edges")
			b.ReportMetric(float64(len(res.Proposals)), "policies")
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/op")
		})
	}
}
