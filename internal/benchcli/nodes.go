package main

import (
	"fmt"
	"strconv"
)

// nodeReaderCounts are the node counts BenchmarkNodeReaders runs (pkg/daemon).
var nodeReaderCounts = []int{1, 2, 4}

// nodeRows are the node source's figures (issue 19.3): throughput for 1, 2 and 4 node
// readers and the CPU seconds per million flows that size a deployment (docs/scale.md),
// each next to the same number of streams merely received and fully decoded.
func nodeRows(r *results) []row {
	const bench = "BenchmarkNodeReaders/readers="
	var rows []row
	for _, k := range nodeReaderCounts {
		name := bench + strconv.Itoa(k)
		nodes := fmt.Sprintf("%d nodes", k)
		if k == 1 {
			nodes = "1 node"
		}
		for _, c := range []struct{ sub, what string }{
			{"ingest", "node source, " + nodes + " -> store"},
			{"daemon", "run --hubble-peers, " + nodes},
		} {
			v, ok := r.get(name+"/"+c.sub, "flows/s")
			if !ok {
				rows = append(rows, row{"nodes", c.what, r.missing(name + "/" + c.sub), ""})
				continue
			}
			res := rate(v) + " flows/s"
			if cpu, ok := r.get(name+"/"+c.sub, "cpu-s/Mflows"); ok {
				res += fmt.Sprintf(", %.1f CPU s per 1M flows", cpu)
			}
			var compare string
			if ref, ok := r.get(name+"/reference", "flows/s"); ok {
				compare = fmt.Sprintf("%.2fx %s received + decoded (%s flows/s", v/ref, nodes, rate(ref))
				if cpu, ok := r.get(name+"/reference", "cpu-s/Mflows"); ok {
					compare += fmt.Sprintf(", %.1f CPU s per 1M", cpu)
				}
				compare += ")"
			}
			rows = append(rows, row{"nodes", c.what, res, compare})
		}
	}
	return rows
}
