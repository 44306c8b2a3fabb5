#!/bin/sh
# Builds the real helm CLI (charts/recommender is linted and rendered with it) from the Go
# module proxy in a throwaway module and caches it. Prints the binary's path. Reuses the
# cached binary when present.
#
#   internal/helmcli/build.sh            # -> $RECOMMENDER_CACHE/bin/helm
#   RECOMMENDER_HELM=$(internal/helmcli/build.sh) go test ./internal/deploycheck/
set -eu

HELM_VERSION=${HELM_VERSION:-v4.3.1}
cache=${RECOMMENDER_CACHE:-$HOME/.cache/recommender}
bin=$cache/bin/helm

if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cat >go.mod <<MOD
module helmcli

go 1.26.0

require helm.sh/helm/v4 $HELM_VERSION
MOD
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v4/cmd/helm"
GO
GOFLAGS=-mod=mod go mod tidy >&2
mkdir -p "$cache/bin"
# Stamp the version, as helm's Makefile does; unstamped, `helm version` says v4.x-dev.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
	-o "$bin.tmp" helm.sh/helm/v4/cmd/helm >&2
mv "$bin.tmp" "$bin"
echo "$bin"
