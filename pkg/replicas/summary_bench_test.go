package replicas_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replicas"
)

// clusterSnapshot is what a replica aggregated from a cluster of workloads*fanout connections
// (2*workloads*fanout edges): workloads labelled as Kubernetes pods are (app, cluster, service
// account, namespace), each calling fanout others on one port, over nodes nodes.
func clusterSnapshot(tb testing.TB, workloads, fanout int) *aggregate.Snapshot {
	tb.Helper()
	def := aggregate.DefaultConfig()
	a, err := aggregate.NewAggregator(aggregate.Config{MaxEdges: max(2*workloads*fanout, def.MaxEdges),
		MaxWorkloads: max(workloads, def.MaxWorkloads), MaxEdgesPerWorkload: 4 * fanout}, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	peers := make([]flows.Peer, workloads)
	for i := range peers {
		ns := "team-" + strconv.Itoa(i%50)
		app := "service-" + strconv.Itoa(i)
		peers[i] = flows.Peer{Kind: flows.PeerWorkload, Namespace: ns, Labels: flows.NewLabels(
			"k8s:app.kubernetes.io/name="+app, "k8s:io.cilium.k8s.policy.cluster=default",
			"k8s:io.cilium.k8s.policy.serviceaccount="+app, "k8s:io.kubernetes.pod.namespace="+ns)}
	}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	id := uint64(0)
	for i := range workloads {
		for j := 1; j <= fanout; j++ {
			id++
			a.Add(&flows.Event{
				Kind: flows.KindFlow, Time: t0.Add(time.Duration(id) * time.Millisecond), Node: "node-" + strconv.Itoa(i%100), ID: id,
				Type: flows.EventTrace, Point: flows.DirectionEgress,
				Src: peers[i], Dst: peers[(i+j)%workloads],
				Proto: flows.ProtoTCP, Port: 8080, SrcPort: uint16(32768 + id%28000), Verdict: flows.VerdictForwarded,
			})
		}
	}
	snap := a.Snapshot()
	if got, want := snap.EdgeCount(), 2*workloads*fanout; got != want {
		tb.Fatalf("snapshot holds %d edges, want %d", got, want)
	}
	return snap
}

// BenchmarkSummary measures what the replicas exchange every --sync-interval (issue 19.3):
// the size of one replica's summary on the wire (binary, and JSON as replicas of older
// versions serve it), and per edge the CPU of encoding and decoding its snapshot, of merging
// it with the puller's own, and of a whole pull over HTTP (serve, read, merge) as Set.Snapshot
// does it; merged-heap-B/edge is the heap the merge of three such summaries takes.
// BENCH_FULL=1 (as `BENCH_FULL=1 make bench` passes it) adds 1M edges.
func BenchmarkSummary(b *testing.B) {
	sizes := []int{10_000, 100_000}
	if os.Getenv("BENCH_FULL") != "" {
		sizes = append(sizes, 1_000_000)
	}
	for _, edges := range sizes {
		b.Run(fmt.Sprintf("edges=%d", edges), func(b *testing.B) {
			snap := clusterSnapshot(b, edges/20, 10)
			bin, err := snap.MarshalBinary()
			if err != nil {
				b.Fatal(err)
			}
			perEdge := func(b *testing.B) {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(edges), "ns/edge")
			}
			b.Run("encode", func(b *testing.B) {
				for b.Loop() {
					if _, err := snap.MarshalBinary(); err != nil {
						b.Fatal(err)
					}
				}
				perEdge(b)
			})
			b.Run("decode", func(b *testing.B) {
				for b.Loop() {
					var s aggregate.Snapshot
					if err := s.UnmarshalBinary(bin); err != nil {
						b.Fatal(err)
					}
				}
				perEdge(b)
			})
			b.Run("merge", func(b *testing.B) {
				for b.Loop() {
					aggregate.Merge(snap, snap)
				}
				perEdge(b)
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				m := aggregate.Merge(snap, snap, snap)
				runtime.GC()
				runtime.ReadMemStats(&after)
				runtime.KeepAlive(m)
				b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(edges), "merged-heap-B/edge")
			})
			b.Run("pull", func(b *testing.B) {
				positions := func() (*flows.Cursor, error) { return flows.NewCursor(), nil }
				local := replicas.Local{Snapshot: func() *aggregate.Snapshot { return snap }, Positions: positions}
				serving, err := replicas.New(replicas.Config{Self: 1, URLs: []string{"http://127.0.0.1:1", "http://127.0.0.1:1"}}, local, nil, nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				srv := httptest.NewServer(serving.Handler())
				b.Cleanup(srv.Close)
				reg := prometheus.NewRegistry()
				pulling, err := replicas.New(replicas.Config{Self: 0, URLs: []string{"http://127.0.0.1:1", srv.URL}}, local, nil, nil, reg)
				if err != nil {
					b.Fatal(err)
				}
				var merged *aggregate.Snapshot
				for b.Loop() {
					merged = pulling.Snapshot(b.Context())
				}
				if got := merged.EdgeCount(); got != edges {
					b.Fatalf("merged %d edges, want %d", got, edges)
				}
				perEdge(b)
				pulled := counter(b, reg, "recommender_replica_pulled_bytes_total")
				b.ReportMetric(pulled/float64(b.N)/float64(edges), "wire-B/edge")
				b.ReportMetric(float64(jsonSize(b, srv.URL))/float64(edges), "json-B/edge")
			})
		})
	}
}

// jsonSize is the size of the summary served to a puller that does not ask for SummaryType.
func jsonSize(b *testing.B, url string) int64 {
	resp, err := http.Get(url + replicas.SummaryPath)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		b.Fatalf("served %s to a puller that asked for nothing", ct)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

func counter(b *testing.B, reg prometheus.Gatherer, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	b.Fatalf("no metric %s", name)
	return 0
}
