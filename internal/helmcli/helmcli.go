package helmcli

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/recommender/recommender/internal/testbin"
)

// EnvBinary names the environment variable that points at a helm binary to use.
const EnvBinary = "RECOMMENDER_HELM"

// Path returns the helm binary: $RECOMMENDER_HELM, else the build.sh cache (see testbin.Path).
func Path(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return testbin.Path(t, "helm", EnvBinary, filepath.Join(filepath.Dir(file), "build.sh"))
}
