package layering

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/recommender/recommender/"

// heavy are imports that cost minutes of build time and must stay out of the hot path.
var heavy = []string{
	"github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2",
	"github.com/cilium/cilium/pkg/policy",
	"k8s.io/client-go",
}

var later = map[string][]string{
	"pkg/flows":     {"pkg/aggregate", "pkg/synth", "pkg/audit", "pkg/lifecycle", "pkg/auditor", "pkg/cluster", "pkg/gitops", "pkg/daemon", "pkg/replay"},
	"pkg/replay":    {"pkg/aggregate", "pkg/synth", "pkg/audit", "pkg/lifecycle", "pkg/auditor", "pkg/cluster", "pkg/gitops", "pkg/daemon"},
	"pkg/aggregate": {"pkg/synth", "pkg/audit", "pkg/lifecycle", "pkg/auditor", "pkg/cluster", "pkg/gitops", "pkg/daemon", "pkg/replay"},
	"pkg/synth":     {"pkg/audit", "pkg/lifecycle", "pkg/auditor", "pkg/cluster", "pkg/gitops", "pkg/daemon", "pkg/replay"},
	"pkg/audit":     {"pkg/lifecycle", "pkg/auditor", "pkg/cluster", "pkg/gitops", "pkg/daemon", "pkg/replay"},
	"pkg/lifecycle": {"pkg/audit", "pkg/auditor", "pkg/cluster", "pkg/gitops", "pkg/daemon", "pkg/replay"},
	"pkg/auditor":   {"pkg/cluster", "pkg/gitops", "pkg/daemon", "pkg/replay"},
	"pkg/cluster":   {"pkg/audit", "pkg/lifecycle", "pkg/auditor", "pkg/gitops", "pkg/daemon", "pkg/replay"},
	"pkg/gitops":    {"pkg/audit", "pkg/lifecycle", "pkg/auditor", "pkg/cluster", "pkg/daemon", "pkg/replay"},
	"pkg/daemon":    {"pkg/replay", "pkg/replicas"},
	// pkg/replicas carries the replicas' edges and their audit evidence (lifecycle.Evidence,
	// plain data of a pure package), so it sits after lifecycle but before the audit stage.
	"pkg/replicas": {"pkg/synth", "pkg/audit", "pkg/auditor", "pkg/cluster", "pkg/gitops", "pkg/daemon", "pkg/replay"},
}

// Ensure no stage imports a stage to its right, and the streaming stages carry no heavy import.
func TestImportDirection(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	for pkg, forbidden := range later {
		out, err := exec.Command("go", "list", "-deps", "../../"+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		deps := strings.Fields(string(out))
		if pkg == "pkg/flows" || pkg == "pkg/aggregate" || pkg == "pkg/replay" {
			forbidden = append(forbidden, heavy...)
		}
		for _, dep := range deps {
			for _, f := range forbidden {
				full := f
				if strings.HasPrefix(f, "pkg/") {
					full = mod + f
				}
				if dep == full || strings.HasPrefix(dep, full+"/") {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
