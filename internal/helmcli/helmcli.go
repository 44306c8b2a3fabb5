package helmcli

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// EnvBinary names the environment variable that points at a helm binary to use.
const EnvBinary = "RECOMMENDER_HELM"

// CachePath is where build.sh caches the binary: $RECOMMENDER_CACHE/bin/helm, by default
// ~/.cache/recommender/bin/helm.
func CachePath() string {
	dir := os.Getenv("RECOMMENDER_CACHE")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(home, ".cache", "recommender")
	}
	return filepath.Join(dir, "bin", "helm")
}

// BuildScript returns the path of build.sh in this source tree.
func BuildScript() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "build.sh")
}

// Path returns the helm binary: $RECOMMENDER_HELM, else the build.sh cache. When there is
// none, the test fails under CI=true (CI must run it) and is skipped otherwise, naming the
// command that builds it.
func Path(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv(EnvBinary), CachePath()} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := "helm not found (" + EnvBinary + " or " + CachePath() + "); build it with " + BuildScript()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
