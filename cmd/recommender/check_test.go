package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
