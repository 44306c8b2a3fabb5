package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replay"
)

// startNodeServers serves each node's records of the recordings from a replay server of its
// own and announces them on a Peer service stand-in; it returns the Peer service's address
// and how many events the node streams deliver (recommender_flows_ingested_total).
func startNodeServers(t *testing.T, recordings ...string) (string, int) {
	t.Helper()
	rec, _, err := replay.Load(t.Context(), recordings, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	byNode := map[string][]*observerpb.GetFlowsResponse{}
	for _, r := range rec.Responses() {
		byNode[r.GetNodeName()] = append(byNode[r.GetNodeName()], r)
	}
	ps := replay.NewPeerServer()
	total := 0
	for _, name := range slices.Sorted(maps.Keys(byNode)) {
		nrec, err := replay.NewRecording(byNode[name])
		if err != nil {
			t.Fatal(err)
		}
		srv, err := replay.New(nrec, replay.Options{Follow: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		addr, err := srv.Start("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Stop)
		ps.Add(replay.Peer{Name: name, Address: addr})
		// What the node stream delivers: the relay source's events of a read of the node.
		src, err := flows.NewRelaySource(flows.RelayConfig{Server: addr}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := src.Recv(t.Context()); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
		total += int(src.Stats().Snapshot().Events)
		src.Close()
	}
	addr, err := ps.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ps.Stop)
	return addr, total
}

// metricSum adds up the samples of a metric on a daemon's /metrics (0 when unreachable).
func metricSum(addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) {
			v, _ := strconv.ParseFloat(f[1], 64)
			sum += v
		}
	}
	return sum
}

// policies reads the proposals a daemon wrote to --out, by file name (REPORT.md, which holds
// the daemon's own input counts, aside).
func policies(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		b, err := os.ReadFile(path)
		out[strings.TrimPrefix(path, dir)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Ensure that `run --hubble-peers` reads every node announced by the Peer service, and that
// two replicas splitting the nodes (--replicas 2) propose exactly the policies one daemon
// reading them all proposes: each synthesizes from the merge of both replicas' edges.
func TestRunReadsNodes(t *testing.T) {
	peers, total := startNodeServers(t, "../../testdata/flows/boutique.jsonl", "../../testdata/flows/starwars.jsonl")
	dir := t.TempDir()
	// run starts daemons, waits until their node streams delivered every event the nodes
	// hold and they synced twice more, then stops them (each commits and syncs a last time).
	run := func(t *testing.T, name string, n int, extra func(i int, addrs []string) []string) []string {
		addrs := make([]string, n)
		for i := range addrs {
			addrs[i] = freeAddr(t)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		errs := make(chan error, n)
		var outs []string
		for i := range n {
			out := filepath.Join(dir, name+strconv.Itoa(i))
			outs = append(outs, out)
			args := []string{"run", "--hubble-peers", peers, "--db", filepath.Join(dir, name+strconv.Itoa(i)+".db"),
				"--metrics-addr", addrs[i], "--out", out, "--sync-interval", "50ms", "--log-level", "error"}
			args = append(args, extra(i, addrs)...)
			go func() {
				_, _, err := runCmd(ctx, args...)
				errs <- err
			}()
		}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			var got float64
			for _, a := range addrs {
				got += metricSum(a, "recommender_flows_ingested_total")
			}
			if got >= float64(total) {
				break
			}
			select {
			case err := <-errs:
				t.Fatalf("%s: a daemon ended with %.0f of %d records read: %v", name, got, total, err)
			case <-t.Context().Done():
				t.Fatalf("%s: %.0f of %d records read when the test ended", name, got, total)
			case <-tick.C:
			}
		}
		// Two syncs after that on every daemon: the second pulled summaries holding every
		// event, whether or not the other replica still answers during the final sync.
		for i, a := range addrs {
			base := metricSum(a, "recommender_sync_runs_total")
			for metricSum(a, "recommender_sync_runs_total") < base+2 {
				select {
				case err := <-errs:
					t.Fatalf("%s: daemon %d ended: %v", name, i, err)
				case <-t.Context().Done():
					t.Fatalf("%s: daemon %d did not sync again", name, i)
				case <-tick.C:
				}
			}
		}
		cancel()
		for range n {
			if err := <-errs; err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		return outs
	}
	one := run(t, "one", 1, func(int, []string) []string { return nil })
	want := policies(t, one[0])
	if len(want) == 0 {
		t.Fatal("one daemon reading the nodes proposed no policy")
	}
	replicaFlags := func(i int, addrs []string) []string {
		urls := make([]string, len(addrs))
		for j, a := range addrs {
			urls[j] = "http://" + a
		}
		return []string{"--replicas", "2", "--replica-index", strconv.Itoa(i), "--replica-urls", strings.Join(urls, ",")}
	}
	same := func(t *testing.T, outs []string) {
		for i, out := range outs {
			got := policies(t, out)
			if !maps.Equal(got, want) {
				t.Errorf("replica %d proposed %d policy files, one daemon %d, or their contents differ", i, len(got), len(want))
			}
		}
	}
	same(t, run(t, "replica", 2, replicaFlags))

	// The same with lease membership against a real kube-apiserver: the replicas split the
	// nodes only once their Leases say both live (after the join delay).
	t.Run("lease", func(t *testing.T) {
		kube.Require(t)
		lease := "nodes-" + strings.ToLower(rand.Text()[:8])
		same(t, run(t, "lease", 2, func(i int, addrs []string) []string {
			return append(replicaFlags(i, addrs), "--replica-membership", "lease", "--kubeconfig", kube.Kubeconfig,
				"--leader-elect-namespace", "default", "--leader-elect-name", lease)
		}))
	})
}
