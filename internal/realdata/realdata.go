// Package realdata finds the captures and policies written by others on real clusters that the
// team keeps beside the repository, never in it: the directory $RECOMMENDER_REALDATA names,
// else ../shared/realdata next to the repository's root. A user's clone has none, so tests
// that read it skip without it. It is a test helper only.
package realdata

import (
	"os"
	"path/filepath"
	"runtime"
)

// Env overrides where the real data is.
const Env = "RECOMMENDER_REALDATA"

// Dir returns the directory sub of the real data ("flows", "policies"), "" when there is none.
func Dir(sub string) string {
	root := os.Getenv(Env)
	if root == "" {
		// This file is internal/realdata/realdata.go in the repository, whatever directory a
		// test runs in.
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			return ""
		}
		root = filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "realdata")
	}
	dir := filepath.Join(root, sub)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return ""
	}
	return dir
}
