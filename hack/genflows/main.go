// Command genflows writes the recorded Hubble flows in testdata/flows from the deterministic
// generator in internal/flowgen, or a synthetic cluster of any size for benchmarks.
//
//	go run ./hack/genflows -out testdata/flows
//	go run ./hack/genflows -cluster -flows 1000000 > /tmp/cluster.jsonl
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/recommender/recommender/internal/flowgen"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "genflows:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("genflows", flag.ContinueOnError)
	out := fs.String("out", "testdata/flows", "directory the recordings are written to")
	cluster := fs.Bool("cluster", false, "write a synthetic cluster to stdout instead of the recordings")
	cfg := flowgen.DefaultClusterConfig()
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "cluster: random seed")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "cluster: nodes")
	fs.IntVar(&cfg.Namespaces, "namespaces", cfg.Namespaces, "cluster: namespaces")
	fs.IntVar(&cfg.Workloads, "workloads", cfg.Workloads, "cluster: workloads per namespace")
	fs.IntVar(&cfg.Replicas, "replicas", cfg.Replicas, "cluster: pods per workload")
	fs.IntVar(&cfg.Rollouts, "rollouts", cfg.Rollouts, "cluster: rollouts of every workload during the run")
	fs.IntVar(&cfg.FanOut, "fan-out", cfg.FanOut, "cluster: servers each workload calls")
	fs.IntVar(&cfg.Flows, "flows", cfg.Flows, "cluster: records to write")
	fs.Float64Var(&cfg.DNSShare, "dns-share", cfg.DNSShare, "cluster: share of calls preceded by a DNS lookup")
	fs.Float64Var(&cfg.ExternalShare, "external-share", cfg.ExternalShare, "cluster: share of connections to external FQDNs")
	fs.Float64Var(&cfg.DropShare, "drop-share", cfg.DropShare, "cluster: share of connections dropped by policy")
	fs.Float64Var(&cfg.NoiseShare, "noise-share", cfg.NoiseShare, "cluster: share of host probes and health pings")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cluster {
		w := bufio.NewWriterSize(stdout, 1<<20)
		if err := flowgen.GenerateCluster(cfg, flowgen.JSONL(w)); err != nil {
			return err
		}
		return w.Flush()
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	for _, f := range flowgen.Files() {
		if err := write(filepath.Join(*out, f.Name), f.Generate); err != nil {
			return err
		}
	}
	return nil
}

func write(path string, gen func(flowgen.Emit) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	w := bufio.NewWriter(f)
	if err := gen(flowgen.JSONL(w)); err != nil {
		f.Close()
		return fmt.Errorf("generate %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}
