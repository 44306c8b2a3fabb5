#!/bin/sh
# Installs Mermaid's real parser (npm packages mermaid and jsdom, pinned) into the cache for
# internal/mermaidcheck.Parse and prints the path of the checker script. Reuses the install
# when the pinned versions are there. Optional: scripts/test.sh carries on without it.
#
#   internal/mermaidcheck/build.sh      # -> $RECOMMENDER_CACHE/mermaid/check.mjs
set -eu

MERMAID_VERSION=${MERMAID_VERSION:-11.17.2}
JSDOM_VERSION=${JSDOM_VERSION:-29.1.1}
cache=${RECOMMENDER_CACHE:-$HOME/.cache/recommender}
dir=$cache/mermaid
here=$(cd "$(dirname "$0")" && pwd)

command -v node >/dev/null && command -v npm >/dev/null || { echo "node and npm are needed" >&2; exit 1; }
stamp="mermaid@$MERMAID_VERSION jsdom@$JSDOM_VERSION"
if [ "$(cat "$dir/installed" 2>/dev/null)" != "$stamp" ]; then
	mkdir -p "$dir"
	[ -f "$dir/package.json" ] || echo '{"name":"recommender-mermaidcheck","private":true,"type":"module"}' >"$dir/package.json"
	npm install --prefix "$dir" --no-audit --no-fund --silent "mermaid@$MERMAID_VERSION" "jsdom@$JSDOM_VERSION" >&2
	echo "$stamp" >"$dir/installed"
fi
# The script is copied each time: it is the repository's, the packages are the cache's.
cp "$here/check.mjs" "$dir/check.mjs"
echo "$dir/check.mjs"
