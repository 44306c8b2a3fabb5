#!/usr/bin/env bash
# The project's one test command (README quick start, `make test`, .ci/run).
# It installs and builds what the tests need, caching the expensive parts under
# $RECOMMENDER_CACHE (default ~/.cache/recommender), then runs every test with the race
# detector, including the integration tests against a real kube-apiserver + etcd and the
# real hubble CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

export RECOMMENDER_CACHE="${RECOMMENDER_CACHE:-$HOME/.cache/recommender}"
mkdir -p "$RECOMMENDER_CACHE/bin"

log() { printf '==> %s\n' "$*" >&2; }

# Debian packages: promtool (alert rules), etcd (kube-apiserver's store), openssl (keys).
need_pkgs=()
command -v promtool >/dev/null || need_pkgs+=(prometheus)
command -v etcd >/dev/null || need_pkgs+=(etcd-server)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v git >/dev/null || need_pkgs+=(git)
if ((${#need_pkgs[@]})); then
	log "installing ${need_pkgs[*]}"
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# Headless Chromium for the status page test (pkg/daemon); without it that test skips, saying so.
if ! command -v chromium >/dev/null; then
	log "installing chromium"
	{ apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
		log "chromium could not be installed: the status page browser test will skip"
fi

log "building test binaries (cached in $RECOMMENDER_CACHE/bin)"
bash internal/hubblecli/build.sh
bash internal/k8stest/build.sh
bash internal/helmcli/build.sh
# Mermaid's own parser (npm), an extra check of the graphs in reports and PR bodies; optional:
# without it the structural check still runs and the parser checks skip, saying so.
if command -v node >/dev/null && command -v npm >/dev/null; then
	RECOMMENDER_MERMAID=$(bash internal/mermaidcheck/build.sh) && export RECOMMENDER_MERMAID ||
		log "mermaid could not be installed: the Mermaid parser checks will skip"
else
	log "node and npm not found: the Mermaid parser checks will skip"
fi

export RECOMMENDER_HUBBLE="$RECOMMENDER_CACHE/bin/hubble"
export RECOMMENDER_HELM="$RECOMMENDER_CACHE/bin/helm"
export RECOMMENDER_K8S=1

log "repository: no build outputs or files over 5 MB tracked"
bash scripts/check-tracked.sh

log "lint: gofmt, go vet, staticcheck"
make lint

# The same static binary the Dockerfile builds (images cannot be built here).
log "static build"
make build >/dev/null
go version -m bin/recommender | grep -q 'CGO_ENABLED=0' || { echo "bin/recommender was not built with CGO_ENABLED=0" >&2; exit 1; }

log "go test -race"
go test -race -count=1 -timeout 30m ./...

# Reporting only: the accuracy table the README publishes (issue 14), not a gate on its numbers.
log "accuracy of learned policies (make eval)"
make eval

log "alert rules"
bash scripts/check-rules.sh
