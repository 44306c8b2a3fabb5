// Package helmcli finds the real helm CLI for the tests of charts/recommender (lint, template,
// and the rendered objects dry-run against a real kube-apiserver). build.sh builds it from the
// Go module proxy in a throwaway module, so helm's dependencies never enter this module's
// go.mod, and caches it under $RECOMMENDER_CACHE/bin.
package helmcli
