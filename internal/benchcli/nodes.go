package main

import (
	"fmt"
	"strconv"
)

// nodeReaderCounts are the node counts BenchmarkNodeReaders runs (pkg/daemon).
var nodeReaderCounts = []int{1, 2, 4}

// nodeRows are the node source's figures (issue 19.3): throughput for 1, 2 and 4 node
// readers and the CPU seconds per million flows that size a deployment (docs/scale.md),
// next to the same number of streams merely received and decoded.
func nodeRows(r *results) []row {
	const bench = "BenchmarkNodeReaders/readers="
	var rows []row
	for _, k := range nodeReaderCounts {
		name := bench + strconv.Itoa(k)
		what := fmt.Sprintf("node source, %d nodes -> store", k)
		if k == 1 {
			what = "node source, 1 node -> store"
		}
		v, ok := r.get(name+"/ingest", "flows/s")
		if !ok {
			rows = append(rows, row{"nodes", what, r.missing(name + "/ingest"), ""})
			continue
		}
		res := rate(v) + " flows/s"
		if cpu, ok := r.get(name+"/ingest", "cpu-s/Mflows"); ok {
			res += fmt.Sprintf(", %.2f CPU s per 1M flows", cpu)
		}
		var compare string
		if ref, ok := r.get(name+"/reference", "flows/s"); ok {
			compare = fmt.Sprintf("%.2fx %d streams received + decoded (%s flows/s", v/ref, k, rate(ref))
			if cpu, ok := r.get(name+"/reference", "cpu-s/Mflows"); ok {
				compare += fmt.Sprintf(", %.2f CPU s per 1M", cpu)
			}
			compare += "); replay servers in the process"
		}
		rows = append(rows, row{"nodes", what, res, compare})
	}
	return rows
}
