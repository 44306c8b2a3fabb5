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

// summaryRows are what the replicas exchange every sync (issue 19.3, BenchmarkSummary in
// pkg/replicas): a summary's bytes per edge on the wire and the CPU per edge of a pull
// (serve, read, merge) with its parts, and the heap of the merge of three summaries.
func summaryRows(r *results) []row {
	const bench = "BenchmarkSummary/edges="
	var rows []row
	for _, e := range r.sized(bench) {
		name := bench + strconv.Itoa(e)
		what := "summary of " + count(e) + " edges"
		wire, ok := r.get(name+"/pull", "wire-B/edge")
		if !ok {
			rows = append(rows, row{"replicas", what, r.missing(name + "/pull"), ""})
			continue
		}
		res := fmt.Sprintf("%.0f B/edge on the wire", wire)
		if j, ok := r.get(name+"/pull", "json-B/edge"); ok {
			res += fmt.Sprintf(" (%.0f as JSON, to older replicas)", j)
		}
		pull, _ := r.get(name+"/pull", "ns/edge")
		enc, _ := r.get(name+"/encode", "ns/edge")
		dec, _ := r.get(name+"/decode", "ns/edge")
		merge, _ := r.get(name+"/merge", "ns/edge")
		heap, _ := r.get(name+"/merge", "merged-heap-B/edge")
		compare := fmt.Sprintf("pull %.1f us/edge (encode %.1f, decode %.1f, merge %.1f); merge of 3: heap %.0f B/edge",
			pull/1e3, enc/1e3, dec/1e3, merge/1e3, heap)
		rows = append(rows, row{"replicas", what, res, compare})
	}
	if len(rows) == 0 {
		rows = append(rows, row{"replicas", "summary", r.missing(bench + "10000/pull"), ""})
	}
	return rows
}
