package aggregate

import (
	"os/exec"
	"strings"
	"testing"
)

// Ensure that pkg/aggregate stays light and downstream of nothing but pkg/flows: no Cilium
// policy or CRD packages (minutes of build time), no later stage.
func TestImports(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{
		"github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2",
		"github.com/cilium/cilium/pkg/policy",
		"github.com/recommender/recommender/pkg/synth",
		"github.com/recommender/recommender/pkg/audit",
		"github.com/recommender/recommender/pkg/lifecycle",
		"github.com/recommender/recommender/pkg/daemon",
		"github.com/recommender/recommender/pkg/replay",
		"k8s.io/client-go",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("pkg/aggregate depends on %s", dep)
			}
		}
	}
}
