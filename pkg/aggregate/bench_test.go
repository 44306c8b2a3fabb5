package aggregate

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replay"
)

// synthetic generates events over a fixed set of connections: clients*servers pairs on one
// port, so 2*clients*servers edges (the client's egress and the server's ingress), with flow
// time advancing a microsecond per event over three nodes.
type synthetic struct {
	peers            []flows.Peer
	clients, servers int
	i, n             int
}

func newSynthetic(clients, servers, n int) *synthetic {
	s := &synthetic{clients: clients, servers: servers, n: n}
	for i := range clients + servers {
		s.peers = append(s.peers, workload("bench", fmt.Sprintf("k8s:app=w%d", i), "k8s:tier=bench"))
	}
	return s
}

var nodes = []string{"node-0", "node-1", "node-2"}

func (s *synthetic) event(i int) *flows.Event {
	pair := i % (s.clients * s.servers)
	return &flows.Event{
		Kind: flows.KindFlow, Time: t0.Add(time.Duration(i) * time.Microsecond), Node: nodes[i%3], ID: uint64(i),
		Type: flows.EventTrace, Point: flows.DirectionEgress,
		Src: s.peers[pair%s.clients], Dst: s.peers[s.clients+pair/s.clients],
		Proto: flows.ProtoTCP, Port: 8080, SrcPort: uint16(32768 + i%28000), Verdict: flows.VerdictForwarded,
	}
}

// Recv implements flows.Source: n events, then io.EOF.
func (s *synthetic) Recv(ctx context.Context) (*flows.Event, error) {
	if s.i >= s.n {
		return nil, io.EOF
	}
	s.i++
	return s.event(s.i - 1), nil
}

// BenchmarkAggregatorAdd measures folding alone: events per second and allocations per event
// over 10k edges.
func BenchmarkAggregatorAdd(b *testing.B) {
	gen := newSynthetic(100, 50, 0)
	evs := make([]*flows.Event, 50_000)
	for i := range evs {
		evs[i] = gen.event(i)
	}
	a := newAgg(b, Config{})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		a.Add(evs[i%len(evs)])
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if _, e := a.Len(); e != 2*min(b.N, 5000) {
		b.Fatalf("edges = %d, want %d", e, 2*min(b.N, 5000))
	}
}

// BenchmarkIngestMemory ingests 1M events (and, with AGGREGATE_BENCH_10M=1, 10M) over the same
// 10k edges into a store with default batching, and reports the live heap and the store size
// afterwards: both must stay flat as the flow count grows ten times.
func BenchmarkIngestMemory(b *testing.B) {
	sizes := []int{1_000_000}
	if os.Getenv("AGGREGATE_BENCH_10M") != "" {
		sizes = append(sizes, 10_000_000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			var heap, size uint64
			for b.Loop() {
				path := filepath.Join(b.TempDir(), "store.db")
				s, err := Open(path, Options{})
				if err != nil {
					b.Fatal(err)
				}
				a := newAgg(b, Config{})
				in, err := NewIngester(s, a, IngesterConfig{}, nil)
				if err != nil {
					b.Fatal(err)
				}
				if err := in.Run(b.Context(), newSynthetic(100, 50, n)); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				heap = ms.HeapAlloc
				runtime.KeepAlive(a)
				s.Close()
				st, err := os.Stat(path)
				if err != nil {
					b.Fatal(err)
				}
				size = uint64(st.Size())
				b.StartTimer()
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
			b.ReportMetric(float64(size)/(1<<20), "db-MiB")
		})
	}
}

// benchRecording is a recording of n TCP flows between 40 clients and 25 servers on one port
// (2000 edges), each with its own client port and a millisecond apart, so neither the
// Folder nor the cursor drops any on a looping replay.
func benchRecording(b *testing.B, n int) *replay.Recording {
	var resps []*observerpb.GetFlowsResponse
	for i := range n {
		p := pbFlow{
			sec: i / 1000, nanos: i % 1000 * 1e6, node: nodes[i%3], uuid: fmt.Sprintf("bench-%d", i),
			srcNS: "bench", dstNS: "bench",
			srcLabels: []string{fmt.Sprintf("k8s:app=c%d", i%40)}, dstLabels: []string{fmt.Sprintf("k8s:app=s%d", i/40%25)},
			srcIP: fmt.Sprintf("10.0.0.%d", i%40+1), dstIP: fmt.Sprintf("10.1.0.%d", i/40%25+1),
			sport: uint32(32768 + i%28000), dport: 8080,
		}
		resps = append(resps, response(p.build()))
	}
	rec, err := replay.NewRecording(resps)
	if err != nil {
		b.Fatal(err)
	}
	return rec
}

// limit ends a source with io.EOF after n events.
type limit struct {
	src flows.Source
	n   int
}

func (l *limit) Recv(ctx context.Context) (*flows.Event, error) {
	if l.n <= 0 {
		return nil, io.EOF
	}
	l.n--
	return l.src.Recv(ctx)
}

// BenchmarkIngestEndToEnd puts the whole ingest path (replay relay over gRPC on loopback ->
// relay source -> normalize -> fold -> aggregate -> bbolt, fsynced batches) next to the
// reference consumer that only receives and decodes the same stream. Compare the flows/s of
// the two sub-benchmarks; allocs/op are per flow and include the server's.
func BenchmarkIngestEndToEnd(b *testing.B) {
	srv, err := replay.New(benchRecording(b, 20_000), replay.Options{Loop: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	addr, err := srv.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	req := &observerpb.GetFlowsRequest{Number: math.MaxUint64, Follow: true, Whitelist: flows.PolicyEventFilter()}

	b.Run("reference", func(b *testing.B) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		b.ReportAllocs()
		b.ResetTimer()
		n, err := replay.Drain(b.Context(), conn, req, uint64(b.N))
		if err != nil || n != uint64(b.N) {
			b.Fatalf("Drain = %d, %v; want %d", n, err, b.N)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	})

	b.Run("ingest", func(b *testing.B) {
		s, err := Open(filepath.Join(b.TempDir(), "store.db"), Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		in, err := NewIngester(s, newAgg(b, Config{}), IngesterConfig{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		cfg := flows.DefaultRelayConfig()
		cfg.Server, cfg.Follow = addr, true
		rs, err := flows.NewRelaySource(cfg, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer rs.Close()
		b.ReportAllocs()
		b.ResetTimer()
		if err := in.Run(b.Context(), &limit{src: flows.NewFolder(rs, rs.Stats()), n: b.N}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if st := in.Stats(); st.Events != uint64(b.N) {
			b.Fatalf("ingested %d flows, want %d", st.Events, b.N)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	})
}
