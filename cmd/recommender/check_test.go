package main

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/recommender/recommender/internal/flowgen"
)

const (
	checkFlows    = "testdata/check/flows.jsonl"
	checkPolicies = "testdata/check/policies"
)

// Ensure check lists the would-be-denied flows grouped with counts, as table and JSON, and
// fails with errWouldDeny; golden files are rewritten with -update.
func TestCheckGolden(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		golden string
		denied bool
	}{
		{"table", []string{"--policies", checkPolicies}, "check.table.golden", true},
		{"json", []string{"--policies", checkPolicies, "-o", "json"}, "check.json.golden", true},
		{"open policies pass", []string{"--policies", "testdata/check/open"}, "check.open.golden", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"check", "--flows", checkFlows, "--log-level", "error"}, tt.args...)
			out, _, err := runCmd(t.Context(), args...)
			if tt.denied != errors.Is(err, errWouldDeny) {
				t.Fatalf("check error = %v, want errWouldDeny: %t", err, tt.denied)
			}
			if !tt.denied && err != nil {
				t.Fatalf("check error = %v, want nil", err)
			}
			path := filepath.Join("testdata/check", tt.golden)
			if *update {
				if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if out != string(want) {
				t.Errorf("check output differs from %s:\n--- got\n%s--- want\n%s", path, out, want)
			}
			// The same input gives byte-identical output (groups are sorted, not map-ordered).
			again, _, _ := runCmd(t.Context(), args...)
			if again != out {
				t.Errorf("second run differs:\n%s\nvs\n%s", again, out)
			}
		})
	}
}

// Ensure bad invocations and invalid policies stop the check with a message, not a verdict.
func TestCheckErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec:\n  endpointSelector: {}\n  egress: [{toCIDR: [nope]}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no policies flag", []string{"check", "--flows", checkFlows}, "--policies is required"},
		{"bad output", []string{"check", "--flows", checkFlows, "--policies", checkPolicies, "-o", "yaml"}, "want table or json"},
		{"invalid policy", []string{"check", "--flows", checkFlows, "--policies", dir}, "CiliumNetworkPolicy/default/x"},
		{"empty dir", []string{"check", "--flows", checkFlows, "--policies", t.TempDir()}, "no CiliumClusterwideNetworkPolicy"},
		{"bad allow-localhost", []string{"check", "--flows", checkFlows, "--policies", checkPolicies, "--allow-localhost", "never"}, "allow-localhost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runCmd(t.Context(), append(tt.args, "--log-level", "error")...)
			if err == nil || errors.Is(err, errWouldDeny) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("check error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// meshFile writes flowgen's two-cluster mesh as a recording of the mesh's relay.
func meshFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mesh.jsonl")
	if err := flowgen.WriteMesh(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// proberToFrontend is a hand-written policy whose peer selector names no cluster: west's
// prober reaches east's frontend under policy-default-local-cluster=false (Cilium 1.18 and
// older) and not under true (1.19+).
const proberToFrontend = `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: frontend-from-prober
spec:
  endpointSelector:
    matchLabels:
      k8s:app: frontend
      k8s:io.kubernetes.pod.namespace: shop
  ingress:
  - fromEndpoints:
    - matchLabels:
        k8s:app: prober
        k8s:io.kubernetes.pod.namespace: ops
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
`

// Ensure check follows --policy-default-local-cluster on a two-cluster mesh: a selector that
// names no cluster allows a remote peer only under false, and generated policies, which name
// their peers' clusters, give the same verdicts under both.
func TestCheckMeshPolicyDefaultLocalCluster(t *testing.T) {
	mesh := meshFile(t)
	hand := t.TempDir()
	if err := os.WriteFile(filepath.Join(hand, "policy.yaml"), []byte(proberToFrontend), 0o644); err != nil {
		t.Fatal(err)
	}
	generated := filepath.Join(t.TempDir(), "out")
	if out, err := execute(t, "recommend", "--flows", mesh, "--cluster-name", flowgen.MeshEast, "--out", generated, "--log-level", "error"); err != nil {
		t.Fatalf("recommend: %v\n%s", err, out)
	}
	check := func(policies string, local bool) (string, string, error) {
		return runCmd(t.Context(), "check", "--flows", mesh, "--policies", policies, "--cluster-name", flowgen.MeshEast,
			"--policy-default-local-cluster="+strconv.FormatBool(local), "-o", "json", "--log-level", "error")
	}

	t.Run("hand-written", func(t *testing.T) {
		if out, _, err := check(hand, false); err != nil {
			t.Errorf("check =false: %v, want west's prober allowed by a selector without a cluster\n%s", err, out)
		}
		out, _, err := check(hand, true)
		if !errors.Is(err, errWouldDeny) {
			t.Fatalf("check =true: %v, want errWouldDeny: the selector selects the local cluster only\n%s", err, out)
		}
		for _, want := range []string{"prober", "frontend", `"port": 80`} {
			if !strings.Contains(out, want) {
				t.Errorf("check =true output does not name %s:\n%s", want, out)
			}
		}
	})
	t.Run("generated", func(t *testing.T) {
		var outs, summaries [2]string
		for i, local := range []bool{false, true} {
			out, summary, err := check(generated, local)
			if err != nil {
				t.Fatalf("check =%t: %v, want every recorded flow allowed\n%s%s", local, err, summary, out)
			}
			outs[i], summaries[i] = out, summary
		}
		if outs[0] != outs[1] || summaries[0] != summaries[1] {
			t.Errorf("generated policies evaluate differently:\n=false: %s%s\n=true: %s%s", summaries[0], outs[0], summaries[1], outs[1])
		}
		if strings.Contains(summaries[0], "flows evaluated 0,") {
			t.Errorf("no flow evaluated: %s", summaries[0])
		}
	})
}
