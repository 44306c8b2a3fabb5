#!/bin/sh
# Builds the real hubble CLI (the client the replay relay must satisfy) from the Go module
# proxy and caches it. Prints the binary's path. Reuses the cached binary when present.
#
#   internal/hubblecli/build.sh            # -> $RECOMMENDER_CACHE/bin/hubble
#   RECOMMENDER_HUBBLE=$(internal/hubblecli/build.sh) go test ./pkg/replay/
set -eu

CILIUM_VERSION=${CILIUM_VERSION:-v1.20.2}
cache=${RECOMMENDER_CACHE:-$HOME/.cache/recommender}
bin=$cache/bin/hubble

if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cat >go.mod <<MOD
module hubblecli

go 1.26.0

require github.com/cilium/cilium $CILIUM_VERSION
MOD
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/cilium/cilium/hubble"
GO
go mod tidy >&2
mkdir -p "$cache/bin"
go build -o "$bin.tmp" github.com/cilium/cilium/hubble >&2
mv "$bin.tmp" "$bin"
echo "$bin"
