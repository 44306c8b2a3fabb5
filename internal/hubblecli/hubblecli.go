package hubblecli

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/recommender/recommender/internal/testbin"
)

// EnvBinary names the environment variable that points at a hubble binary to use.
const EnvBinary = "RECOMMENDER_HUBBLE"

// Path returns the hubble binary: $RECOMMENDER_HUBBLE, else the build.sh cache (see testbin.Path).
func Path(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return testbin.Path(t, "hubble", EnvBinary, filepath.Join(filepath.Dir(file), "build.sh"))
}
