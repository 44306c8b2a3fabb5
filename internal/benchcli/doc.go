// Command benchcli turns the raw `go test -bench` output that scripts/bench.sh collects into
// the one table `make bench` prints: ingest throughput with its ratios to the reference
// consumer and the hubble CLI, memory after growing flows and edges (and how far the ingest
// rate falls from 1k to 1M edges), synthesis time,
// evaluation throughput and would-be-denied latency, each beside its target.
//
//	go run ./internal/benchcli out/bench/raw.txt
//
// # What it owns
//
// Only the presentation: every figure comes from a benchmark's own metrics (b.ReportMetric),
// nothing is measured here. A benchmark run several times (-count) is shown by its median. A
// missing figure is printed as not measured, with the benchmark's skip message when it has
// one (the hubble CLI row when the binary is unavailable). The raw file stays the input for
// benchstat.
package main
