package flows_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/recommender/recommender/internal/flowgen"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// benchRecords is the size of the synthetic cluster recording the benchmarks read.
const benchRecords = 20_000

func clusterRecords(b *testing.B) []*observerpb.GetFlowsResponse {
	b.Helper()
	cfg := flowgen.DefaultClusterConfig()
	cfg.Flows = benchRecords
	seq, err := flowgen.ClusterRecords(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var out []*observerpb.GetFlowsResponse
	for r := range seq {
		out = append(out, r)
	}
	return out
}

// reportRate reports records/s and allocs per record over the timed part of a benchmark.
type rateMeter struct {
	start   time.Time
	mallocs uint64
}

func startMeter(b *testing.B) *rateMeter {
	b.Helper()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ResetTimer()
	return &rateMeter{start: time.Now(), mallocs: ms.Mallocs}
}

func (m *rateMeter) report(b *testing.B, records uint64) {
	b.Helper()
	elapsed := time.Since(m.start)
	b.StopTimer()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if records == 0 {
		b.Fatal("no records read")
	}
	b.ReportMetric(float64(records)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(ms.Mallocs-m.mallocs)/float64(records), "allocs/record")
}

// BenchmarkFileIngest measures reading a `hubble observe -o jsonpb` recording: decode and
// normalize, the whole file per iteration.
func BenchmarkFileIngest(b *testing.B) {
	path := filepath.Join(b.TempDir(), "cluster.jsonl")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	emit := flowgen.JSONL(w)
	for _, r := range clusterRecords(b) {
		if err := emit(r); err != nil {
			b.Fatal(err)
		}
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var records uint64
	m := startMeter(b)
	for b.Loop() {
		src, err := flows.NewFileSource(flows.FileConfig{Paths: []string{path}}, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := src.Recv(ctx); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				b.Fatal(err)
			}
		}
		s := src.Stats().Snapshot()
		records += s.Events + s.Skipped + s.Malformed
	}
	m.report(b, records)
}

// benchRelay serves the synthetic recording forever (Loop) from a replay relay on loopback.
func benchRelay(b *testing.B) string {
	b.Helper()
	rec, err := replay.NewRecording(clusterRecords(b))
	if err != nil {
		b.Fatal(err)
	}
	srv, err := replay.New(rec, replay.Options{Loop: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	addr, err := srv.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Stop)
	return addr
}

// BenchmarkRelayIngest measures the relay source (gRPC receive, decode, normalize, cursor)
// reading from a replay relay; one op is one delivered event. Compare records/s with
// BenchmarkRelayReference.
func BenchmarkRelayIngest(b *testing.B) {
	addr := benchRelay(b)
	src, err := flows.NewRelaySource(flows.RelayConfig{Server: addr, Follow: true}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	ctx := context.Background()
	// Connect and warm up outside the timed part.
	if _, err := src.Recv(ctx); err != nil {
		b.Fatal(err)
	}
	before := src.Stats().Snapshot()
	b.ReportAllocs()
	m := startMeter(b)
	for b.Loop() {
		if _, err := src.Recv(ctx); err != nil {
			b.Fatal(err)
		}
	}
	after := src.Stats().Snapshot()
	m.report(b, after.Events+after.Skipped-before.Events-before.Skipped)
}

// BenchmarkRelayReference is the reference consumer next to BenchmarkRelayIngest: the same
// request to the same relay, only received and decoded (replay.Drain); one op is one record.
func BenchmarkRelayReference(b *testing.B) {
	addr := benchRelay(b)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	req := &observerpb.GetFlowsRequest{Number: math.MaxUint64, Follow: true, Whitelist: flows.PolicyEventFilter()}
	b.ReportAllocs()
	m := startMeter(b)
	n, err := replay.Drain(context.Background(), conn, req, uint64(b.N))
	if err != nil {
		b.Fatal(err)
	}
	m.report(b, n)
}
