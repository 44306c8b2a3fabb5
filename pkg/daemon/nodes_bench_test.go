package daemon

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/recommender/recommender/internal/flowgen"
	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/replay"
	"github.com/recommender/recommender/pkg/synth"
)

// nodeReaders are the node counts BenchmarkNodeReaders reads (issue 19.3).
var nodeReaders = []int{1, 2, 4}

// cpuSeconds is the process's user and system CPU time so far.
func cpuSeconds(b *testing.B) float64 {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// splitNodes deals the records out to k nodes, round robin so each node's share stays in time
// order, renaming the observing node: each share is what one node's Hubble server holds.
func splitNodes(recs []*observerpb.GetFlowsResponse, k int) [][]*observerpb.GetFlowsResponse {
	out := make([][]*observerpb.GetFlowsResponse, k)
	for i, r := range recs {
		c := proto.Clone(r).(*observerpb.GetFlowsResponse)
		name := fmt.Sprintf("bench-node-%d", i%k)
		c.NodeName = name
		if f := c.GetFlow(); f != nil {
			f.NodeName = name
		}
		out[i%k] = append(out[i%k], c)
	}
	return out
}

// BenchmarkNodeReaders reads the synthetic cluster's day from k nodes' Hubble servers (replay
// servers announced by a Peer service stand-in, in this process) three ways, one op per record:
//
//   - reference: k gRPC streams received and decoded in full, concurrently (replay.Drain);
//   - ingest: the node source (--hubble-peers: Peer service, one stream per node, selective
//     decoding, a Folder per node) -> aggregate -> store, as BenchmarkDaemonIngest/ingest
//     reads one relay stream;
//   - daemon: `run --hubble-peers` (daemon.New + Run with the audit tap) on the store that
//     learned the cluster, as BenchmarkDaemonIngest/daemon.
//
// Besides flows/s it reports cpu-s/Mflows, the process's CPU seconds per million records:
// what sizes a deployment. The replay servers run in the same process, so the figure holds
// their sending too: an upper bound for the daemon's share.
func BenchmarkNodeReaders(b *testing.B) {
	learned := learnedStore(b)
	served := benchCluster(b, *ingestRecords+*ingestRecords/10+1000, flowgen.ClusterStart.Add(learnedDay))
	for _, k := range nodeReaders {
		shares := splitNodes(served, k)
		var peers []replay.Peer
		var addrs []string
		for i, share := range shares {
			addr := startReplay(b, share, replay.Options{Follow: true})
			addrs = append(addrs, addr)
			peers = append(peers, replay.Peer{Name: fmt.Sprintf("bench-node-%d", i), Address: addr})
		}
		ps := replay.NewPeerServer(peers...)
		peerAddr, err := ps.Start("127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(ps.Stop)

		b.Run(fmt.Sprintf("readers=%d/reference", k), func(b *testing.B) {
			if b.N > *ingestRecords {
				b.Fatalf("-benchtime=%dx is more than the nodes hold; raise -ingest.records", b.N)
			}
			per := uint64(b.N+k-1) / uint64(k)
			req := &observerpb.GetFlowsRequest{Number: math.MaxUint64, Follow: true, Whitelist: flows.PolicyEventFilter()}
			var conns []*grpc.ClientConn
			for _, addr := range addrs {
				conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				conns = append(conns, conn)
			}
			cpu := cpuSeconds(b)
			b.ResetTimer()
			var wg sync.WaitGroup
			counts := make([]uint64, k)
			errs := make([]error, k)
			for i, conn := range conns {
				wg.Go(func() { counts[i], errs[i] = replay.Drain(b.Context(), conn, req, per) })
			}
			wg.Wait()
			b.StopTimer()
			var n uint64
			for i := range k {
				if errs[i] != nil {
					b.Fatal(errs[i])
				}
				n += counts[i]
			}
			reportRecords(b, n)
			b.ReportMetric((cpuSeconds(b)-cpu)*1e6/float64(n), "cpu-s/Mflows")
		})

		b.Run(fmt.Sprintf("readers=%d/ingest", k), func(b *testing.B) {
			if b.N > *ingestRecords {
				b.Fatalf("-benchtime=%dx is more than the nodes hold; raise -ingest.records", b.N)
			}
			in := learnedIngester(b, learned)
			ns, err := flows.NewNodesSource(flows.NodesConfig{Peers: peerAddr}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer ns.Close()
			lim := newRecordLimit(b.N)
			src := lim.wrap(ns, ns.Stats())
			close(lim.open)
			b.ReportAllocs()
			cpu := cpuSeconds(b)
			b.ResetTimer()
			if err := in.Run(b.Context(), src); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			n := lim.received()
			reportRecords(b, n)
			b.ReportMetric((cpuSeconds(b)-cpu)*1e6/float64(n), "cpu-s/Mflows")
		})

		b.Run(fmt.Sprintf("readers=%d/daemon", k), func(b *testing.B) {
			if b.N > *ingestRecords {
				b.Fatalf("-benchtime=%dx is more than the nodes hold; raise -ingest.records", b.N)
			}
			db := filepath.Join(b.TempDir(), "store.db")
			copyFile(b, learned, db)
			lim := newRecordLimit(b.N)
			d := newNodesDaemon(b, db, peerAddr, lim)
			d.start()
			d.waitSynced(b)
			cpu := cpuSeconds(b)
			b.ReportAllocs()
			b.ResetTimer()
			close(lim.open)
			select {
			case <-lim.eof:
			case err := <-d.done:
				b.Fatalf("daemon ended early: %v", err)
			}
			b.StopTimer()
			n := lim.received()
			reportRecords(b, n)
			b.ReportMetric((cpuSeconds(b)-cpu)*1e6/float64(n), "cpu-s/Mflows")
			d.shutdown(b)
		})
	}
}

// newNodesDaemon is newBenchDaemon reading the nodes (run --hubble-peers) instead of a relay.
func newNodesDaemon(b *testing.B, dbPath, peers string, lim *recordLimit) *nodesDaemon {
	b.Helper()
	reg := newWatchRegistry("recommender_would_deny_flows_total", "recommender_sync_runs_total", "recommender_workloads")
	store, err := aggregate.Open(dbPath, aggregate.Options{Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	agg, err := aggregate.NewAggregator(aggregate.Config{}, nil, reg)
	if err != nil {
		b.Fatal(err)
	}
	ns, err := flows.NewNodesSource(flows.NodesConfig{Peers: peers}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	lc := lifecycle.DefaultConfig()
	lc.Learn = true
	dm, err := New(Config{
		SyncInterval: benchSyncInterval,
		Lifecycle:    lc,
		Synth:        synth.DefaultConfig(),
		Ingest:       aggregate.IngesterConfig{Retention: 30 * 24 * time.Hour},
	}, Deps{Registry: reg, Source: lim.wrap(ns, ns.Stats()), Stats: ns.Stats(), Relay: ns, Store: store, Aggregator: agg})
	if err != nil {
		b.Fatal(err)
	}
	return &nodesDaemon{benchDaemon: &benchDaemon{dm: dm, reg: reg, store: store, done: make(chan error, 1)}, nodes: ns}
}

// nodesDaemon is a benchDaemon whose source is the node source.
type nodesDaemon struct {
	*benchDaemon
	nodes *flows.NodesSource
}

// start runs the daemon in the background until shutdown.
func (d *nodesDaemon) start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	go func() { d.done <- errors.Join(d.dm.Run(ctx), d.nodes.Close(), d.store.Close()) }()
}
