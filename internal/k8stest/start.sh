#!/usr/bin/env bash
# start.sh starts etcd and kube-apiserver (built by build.sh) on free loopback ports, installs
# Cilium's CNP and CCNP CRDs from the cilium module in go.mod, and prints shell exports:
#
#   eval "$(internal/k8stest/start.sh)"   # sets KUBECONFIG and K8STEST_DIR
#   kubectl get ciliumclusterwidenetworkpolicies
#   internal/k8stest/stop.sh "$K8STEST_DIR"
#
# Go tests do not use this script: they call k8stest.Main / k8stest.Start, which do the same.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN_DIR="${RECOMMENDER_CACHE:-$HOME/.cache/recommender}/bin"
for b in etcd kube-apiserver; do
	if [[ ! -x "$BIN_DIR/$b" ]]; then
		echo "k8stest/start.sh: $BIN_DIR/$b missing; run internal/k8stest/build.sh" >&2
		exit 1
	fi
done

dir=$(mktemp -d -t k8stest-XXXXXX)
fail() {
	echo "k8stest/start.sh: $*" >&2
	tail -n 30 "$dir"/*.log >&2 || true
	internal/k8stest/stop.sh "$dir" >&2 || true
	exit 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Daemons get their own stdio and no inherited fds, or "$(start.sh)" never returns.
spawn() {
	local name=$1
	shift
	setsid "$BIN_DIR/$name" "$@" </dev/null >"$dir/$name.log" 2>&1 &
	echo $! >"$dir/$name.pid"
}

wait_ok() { # name url [curl args...]
	local name=$1 url=$2
	shift 2
	for _ in $(seq 1 600); do
		if curl -fsS -o /dev/null "$@" "$url" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	fail "$name did not become ready at $url"
}

client_port=$(free_port)
peer_port=$(free_port)
spawn etcd --name=k8stest --data-dir="$dir/etcd" \
	--listen-client-urls="http://127.0.0.1:$client_port" --advertise-client-urls="http://127.0.0.1:$client_port" \
	--listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
	--initial-cluster="k8stest=http://127.0.0.1:$peer_port" --log-level=warn
wait_ok etcd "http://127.0.0.1:$client_port/health"

openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
token=$(openssl rand -hex 16)
echo "$token,k8stest-admin,k8stest-admin,system:masters" >"$dir/tokens.csv"

port=$(free_port)
spawn kube-apiserver --etcd-servers="http://127.0.0.1:$client_port" \
	--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$port" --cert-dir="$dir/pki" \
	--service-account-key-file="$dir/sa.pub" --service-account-signing-key-file="$dir/sa.key" \
	--service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-cluster-ip-range=10.0.0.0/24 --authorization-mode=RBAC --token-auth-file="$dir/tokens.csv" \
	--disable-admission-plugins=ServiceAccount
server="https://127.0.0.1:$port"
auth=(-H "Authorization: Bearer $token")
wait_ok kube-apiserver "$server/readyz" -k "${auth[@]}"
ca="$dir/pki/apiserver.crt"

cat >"$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: k8stest
  cluster:
    server: $server
    certificate-authority: $ca
users:
- name: k8stest-admin
  user:
    token: $token
contexts:
- name: k8stest
  context:
    cluster: k8stest
    user: k8stest-admin
current-context: k8stest
KUBECONFIG

cilium_dir=$(go list -m -f '{{.Dir}}' github.com/cilium/cilium)
[[ -n "$cilium_dir" ]] || fail "cilium module not downloaded (go mod download github.com/cilium/cilium)"
for crd in ciliumnetworkpolicies ciliumclusterwidenetworkpolicies; do
	curl -fsS -o /dev/null --cacert "$ca" "${auth[@]}" -X PATCH \
		-H "Content-Type: application/apply-patch+yaml" --data-binary "@$cilium_dir/pkg/k8s/apis/cilium.io/client/crds/v2/$crd.yaml" \
		"$server/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$crd.cilium.io?fieldManager=k8stest&force=true" ||
		fail "apply CRD $crd"
	for _ in $(seq 1 300); do
		if curl -fsS --cacert "$ca" "${auth[@]}" "$server/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$crd.cilium.io" |
			python3 -c 'import json,sys; c=(json.load(sys.stdin).get("status") or {}).get("conditions") or []; sys.exit(0 if any(x["type"]=="Established" and x["status"]=="True" for x in c) else 1)'; then
			continue 2
		fi
		sleep 0.1
	done
	fail "CRD $crd not established"
done

echo "export KUBECONFIG=$dir/kubeconfig K8STEST_DIR=$dir"
