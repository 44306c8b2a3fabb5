#!/usr/bin/env bash
# stop.sh DIR stops what start.sh started in DIR and removes DIR. kube-apiserver goes first:
# with etcd gone it ignores SIGTERM for over a minute.
set -uo pipefail
dir=${1:?usage: stop.sh K8STEST_DIR}
for name in kube-apiserver etcd; do
	[[ -f "$dir/$name.pid" ]] || continue
	pid=$(cat "$dir/$name.pid")
	kill -TERM "$pid" 2>/dev/null || continue
	for _ in $(seq 1 300); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "k8stest/stop.sh: $name ($pid) ignored SIGTERM for 30 s; killing" >&2
		kill -KILL "$pid" 2>/dev/null
	fi
done
rm -rf "$dir"
