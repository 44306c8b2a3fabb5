#!/usr/bin/env bash
# The project's benchmark harness (`make bench`, issue 10). It runs the Go benchmarks that
# back each figure, saves their raw output (benchstat-friendly) to $BENCH_OUT/raw.txt and
# prints one table with the ratios and targets (docs/scale.md explains each row).
#
#   make bench                      # quick set, a few minutes on 2 cores
#   BENCH_FULL=1 make bench         # adds 10M flows over the same edges, summaries of 1M edges
#   BENCH_COUNT=5 make bench        # repeat each benchmark, for benchstat (the ingest
#                                   # comparison always runs at least 3 rounds)
#   BENCH_RECORDS=N make bench      # records per ingest run (default 200000)
#   RECOMMENDER_HUBBLE=/path/hubble # the hubble CLI to compare with (else built and cached)
#
# Each memory case runs in its own process so that its RSS is its own.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${BENCH_OUT:-out/bench}
count=${BENCH_COUNT:-1}
records=${BENCH_RECORDS:-200000}
mkdir -p "$out/bin"
raw=$out/raw.txt
: >"$raw"

log() { printf '==> %s\n' "$*" >&2; }

if [[ -z "${RECOMMENDER_HUBBLE:-}" ]]; then
	if hubble=$(bash internal/hubblecli/build.sh 2>"$out/hubble-build.log"); then
		export RECOMMENDER_HUBBLE=$hubble
	else
		log "hubble CLI not built (see $out/hubble-build.log): its row is skipped"
	fi
fi

log "building benchmark binaries"
for pkg in daemon aggregate replicas synth audit; do
	go test -c -o "$out/bin/$pkg.test" "./pkg/$pkg"
done

# bench PKG REGEXP BENCHTIME COUNT [FLAG...]: one process; its output goes to stderr and raw.txt.
bench() {
	local pkg=$1 re=$2 benchtime=$3 n=$4
	shift 4
	log "$pkg: $re ($benchtime, $n run(s))"
	(cd "pkg/$pkg" && "../../$out/bin/$pkg.test" -test.run '^$' -test.bench "$re" \
		-test.benchtime "$benchtime" -test.count "$n" -test.benchmem "$@") | tee -a "$raw" >&2
}

# The four ways of reading the relay run in rounds, one process each (reference, ingest,
# daemon, hubble, then again), so that load from other processes on a shared machine hits
# them alike; the table shows the median.
for ((round = 0; round < (count > 3 ? count : 3); round++)); do
	bench daemon '^BenchmarkDaemonIngest$' "${records}x" 1 -ingest.records "$records"
done
bench daemon '^BenchmarkDaemonLatency$' 10000x "$count"
# Reading the nodes (issue 19.3): 1, 2 and 4 node streams through the node source.
bench daemon '^BenchmarkNodeReaders$' "${records}x" "$count" -ingest.records "$records"
# What the replicas exchange every sync: a summary's size and the CPU of a pull (issue 19.3).
bench replicas '^BenchmarkSummary$' 3x "$count"
flows=(1000000 3000000)
[[ -n "${BENCH_FULL:-}" ]] && flows=(1000000 10000000)
for n in "${flows[@]}"; do
	bench aggregate "^BenchmarkScaleFlows/events=$n\$" 1x "$count"
done
# 1k to 1M edges: the ingest rate must stay within 1.5x across them (issue 19.2).
for e in 1000 10000 100000 1000000; do
	bench aggregate "^BenchmarkScaleEdges/edges=$e\$" 1x "$count"
done
bench synth '^BenchmarkSynthesize$' 1x "$count"
bench audit '^BenchmarkEvaluate$' 1s "$count"

log "raw results: $raw"
go run ./internal/benchcli "$raw"
