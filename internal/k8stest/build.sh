#!/usr/bin/env bash
# build.sh makes sure etcd and kube-apiserver binaries exist in the cache and
# prints the cache directory. Integration tests (RECOMMENDER_K8S=1) use them
# through k8stest.Start; start.sh uses them for manual runs.
#
# No prebuilt Kubernetes binaries can be downloaded on these machines, so
# kube-apiserver is built from the Go module proxy through a throwaway wrapper
# module (see ../shared/K8S-NOTES.md). A cold build takes ~6.5 min on two cores;
# later runs find the cached binary and return at once.
#
# Environment:
#   RECOMMENDER_CACHE  cache root (default $HOME/.cache/recommender); binaries go to $RECOMMENDER_CACHE/bin
#   KUBE_VERSION       kube-apiserver version (default v1.35.4)
#   ETCD_VERSION       etcd version built when no etcd is installed (default v3.6.16)
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.35.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
BIN_DIR="${RECOMMENDER_CACHE:-$HOME/.cache/recommender}/bin"
mkdir -p "$BIN_DIR"

log() { echo "k8stest/build.sh: $*" >&2; }

# Every Go step runs with the local toolchain, static and without paths so the
# binaries do not depend on the machine's C library or the temp dir layout.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

workdir=""
cleanup() { if [[ -n "$workdir" ]]; then rm -rf "$workdir"; fi; }
trap cleanup EXIT

build_etcd() {
	local mod="$workdir/etcd"
	mkdir -p "$mod"
	cat >"$mod/go.mod" <<GOMOD
module recommender.local/etcd-build

go 1.26.0
GOMOD
	# The module root of etcd's server is package main, so nothing imports it;
	# go get records the requirement and go build resolves the rest.
	(cd "$mod" &&
		go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" &&
		go build -trimpath -ldflags '-s -w' -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3)
	mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
}

ensure_etcd() {
	if [[ -x "$BIN_DIR/etcd" ]]; then
		return
	fi
	if ! command -v etcd >/dev/null && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
		log "installing Debian's etcd-server"
		DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server >&2 || log "apt-get install etcd-server did not succeed; building etcd $ETCD_VERSION"
	fi
	if command -v etcd >/dev/null; then
		ln -sf "$(command -v etcd)" "$BIN_DIR/etcd"
		log "etcd: using $(command -v etcd)"
		return
	fi
	log "building etcd $ETCD_VERSION"
	build_etcd
}

ensure_kube_apiserver() {
	if [[ -x "$BIN_DIR/kube-apiserver" ]]; then
		return
	fi
	log "building kube-apiserver $KUBE_VERSION (cold: several minutes)"
	local mod="$workdir/kube-apiserver"
	mkdir -p "$mod"

	# k8s.io/kubernetes replaces its staging modules with local directories,
	# which go install refuses. Pin each of them to the matching v0.x release
	# instead, reading the list from kubernetes' own go.mod.
	local gomod staging minor
	gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
	if [[ ! -f "$gomod" ]]; then
		log "cannot find go.mod of k8s.io/kubernetes@$KUBE_VERSION"
		exit 1
	fi
	staging=$(sed -n 's|^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*$|\1|p' "$gomod")
	if [[ -z "$staging" ]]; then
		log "no staging replaces found in $gomod"
		exit 1
	fi
	local staging_version="v0.${KUBE_VERSION#v1.}"
	minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
	{
		echo "module recommender.local/kube-apiserver-build"
		echo
		echo "go 1.26.0"
		echo
		echo "replace ("
		for m in $staging; do
			echo "	$m => $m $staging_version"
		done
		echo ")"
	} >"$mod/go.mod"

	local stamp=""
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		stamp+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	done
	(cd "$mod" &&
		go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" >&2 &&
		go build -trimpath -ldflags "-s -w$stamp" -o "$BIN_DIR/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
	mv "$BIN_DIR/kube-apiserver.tmp" "$BIN_DIR/kube-apiserver"
}

workdir=$(mktemp -d)
ensure_etcd
ensure_kube_apiserver
"$BIN_DIR/kube-apiserver" --version >&2
echo "$BIN_DIR"
