// Package testbin finds the external programs tests run (the hubble CLI, helm, etcd and
// kube-apiserver) where the project's build scripts cache them: $RECOMMENDER_CACHE/bin, by
// default ~/.cache/recommender/bin. It is a test helper only.
package testbin

import (
	"os"
	"path/filepath"
	"testing"
)

// EnvCache overrides the cache root; binaries live in its bin directory.
const EnvCache = "RECOMMENDER_CACHE"

// CacheDir is the directory the build scripts put binaries in.
func CacheDir() string {
	root := os.Getenv(EnvCache)
	if root == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		root = filepath.Join(home, ".cache", "recommender")
	}
	return filepath.Join(root, "bin")
}

// Path returns the executable name: the file $env names, else CacheDir()/name. When there is
// none, the test fails under CI=true (CI must run it) and is skipped otherwise, naming the
// script that builds it.
func Path(t testing.TB, name, env, buildScript string) string {
	t.Helper()
	cached := filepath.Join(CacheDir(), name)
	for _, p := range []string{os.Getenv(env), cached} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := name + " not found (" + env + " or " + cached + "); build it with " + buildScript
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
