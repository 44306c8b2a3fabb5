package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/cluster"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// Ensure `run` refuses bad flag combinations before it creates the store or opens a port,
// naming the flag.
func TestRunFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no store", []string{"--flows", "../../testdata/flows"}, "--db is required"},
		{"once from a relay", []string{"--once"}, "--once needs --flows"},
		{"negative window", []string{"--flows", "../../testdata/flows", "--window", "-5m"}, "--window -5m0s"},
		{"no window flows", []string{"--flows", "../../testdata/flows", "--min-window-flows", "0"}, "--min-window-flows 0"},
		{"lost ratio above 1", []string{"--flows", "../../testdata/flows", "--max-lost-ratio", "2"}, "--max-lost-ratio 2"},
		{"unknown apply mode", []string{"--flows", "../../testdata/flows", "--apply", "yes"}, "apply"},
		{"delivering shard", []string{"--namespace", "shop", "--apply", "enforce"}, "a shard cannot also deliver"},
		{"namespaced shard to git", []string{"--namespace", "shop", "--policy-kind", "CiliumNetworkPolicy", "--git-url", "https://github.com/a/b.git", "--git-only"}, "a shard cannot also deliver"},
		{"node shard applying CNPs", []string{"--node-name", "n1", "--policy-kind", "CiliumNetworkPolicy", "--apply", "enforce"}, "a shard cannot also deliver"},
		{"unknown policy kind", []string{"--flows", "../../testdata/flows", "--policy-kind", "NetworkPolicy"}, "--policy-kind"},
		{"files and relay", []string{"--flows", "../../testdata/flows", "--hubble-server", "127.0.0.1:4245"}, "exclude each other"},
		{"files and nodes", []string{"--flows", "../../testdata/flows", "--hubble-peers", "127.0.0.1:4244"}, "--flows and --hubble-peers exclude each other"},
		{"relay and nodes", []string{"--hubble-peers", "127.0.0.1:4244", "--hubble-server", "127.0.0.1:4245"}, "--hubble-server and --hubble-peers exclude each other"},
		{"node shard with nodes", []string{"--hubble-peers", "127.0.0.1:4244", "--node-name", "kind-worker"}, "--node-name shards a relay stream"},
		{"peer service without port", []string{"--hubble-peers", "hubble-peer"}, "--hubble-peers"},
		{"replicas of a relay", []string{"--replicas", "2", "--replica-index", "0", "--replica-urls", "http://a:1,http://b:1"}, "needs --hubble-peers"},
		{"replicas without summaries", []string{"--hubble-peers", "127.0.0.1:4244", "--replicas", "2", "--replica-index", "0", "--replica-urls", "http://a:1,http://b:1"}, "needs --metrics-addr"},
		{"replica URLs short", []string{"--hubble-peers", "127.0.0.1:4244", "--replicas", "3", "--replica-index", "0", "--replica-urls", "http://a:1"}, "lists 1 URLs for --replicas 3"},
		{"replica index outside", []string{"--hubble-peers", "127.0.0.1:4244", "--replicas", "2", "--replica-index", "2", "--replica-urls", "http://r-{index}:9962"}, "replica index 2"},
		{"replica flag alone", []string{"--hubble-peers", "127.0.0.1:4244", "--replica-index", "1"}, "--replica-index needs --replicas above 1"},
		{"replicas delivering", []string{"--hubble-peers", "127.0.0.1:4244", "--replicas", "2", "--replica-index", "0", "--replica-urls", "http://r-{index}:9962", "--apply", "enforce"}, "needs --leader-elect"},
		{"replica membership unknown", []string{"--hubble-peers", "127.0.0.1:4244", "--metrics-addr", ":9962", "--replicas", "2", "--replica-index", "0", "--replica-urls", "http://r-{index}:9962", "--replica-membership", "gossip"}, `--replica-membership "gossip"`},
		{"replica membership alone", []string{"--replica-membership", "lease"}, "--replica-membership needs --replicas above 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "r.db")
			args := append([]string{"run", "--metrics-addr", ""}, tt.args...)
			if tt.name != "no store" {
				args = append(args, "--db", db)
			}
			_, err := execute(t, args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run %v = %v, want an error containing %q", tt.args, err, tt.want)
			}
			if _, serr := os.Stat(db); serr == nil {
				t.Errorf("run %v created the store before refusing its flags", tt.args)
			}
		})
	}
}

// Ensure a --namespace shard writing CiliumNetworkPolicies may deliver to the cluster (its
// applier owns the CNPs of its namespaces only), and reaches the cluster connection.
func TestRunNamespacedShardDelivers(t *testing.T) {
	o := &runOptions{src: newSourceOptions(), cluster: cluster.DefaultConfig()}
	o.db, o.batchSize, o.batchInterval, o.syncInterval = "r.db", 1, time.Second, time.Minute
	o.kube = kubeOptions{qps: 1, burst: 1, timeout: time.Second}
	o.lifecycle = lifecycle.DefaultConfig()
	o.replicas.count = 1
	o.apply, o.dryRun = string(cluster.ApplyEnforce), string(cluster.DryRunNone)
	o.src.relay.Namespaces = []string{"shop", "bank"}
	o.synth.kind = string(synth.KindCNP)
	if err := o.validate(); err != nil {
		t.Fatalf("validate() = %v, want a namespaced CNP shard to be allowed to apply", err)
	}
	if !o.namespaced() || !slices.Equal(o.cluster.Namespaces, []string{"shop", "bank"}) || o.cluster.PolicyKind != synth.KindCNP {
		t.Errorf("cluster config = %+v, want CNPs in shop and bank", o.cluster)
	}
}
