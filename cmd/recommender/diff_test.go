package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Ensure diff reads a policy directory as check does: recursively, JSON as well as YAML,
// CNPs (as namespace/name) as well as CCNPs; and that a document it cannot read is an error
// (exit 2), not a policy silently missing from the comparison.
func TestDiffReadsDirectoriesAsCheck(t *testing.T) {
	empty, dir := t.TempDir(), t.TempDir()
	files := map[string]string{
		"sub/ccnp.json": `{"apiVersion":"cilium.io/v2","kind":"CiliumClusterwideNetworkPolicy","metadata":{"name":"from-json"},
"spec":{"endpointSelector":{"matchLabels":{"app":"a"}},"ingress":[{"fromEndpoints":[{"matchLabels":{"app":"b"}}]}]}}`,
		"cnp.yaml": "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: web, namespace: shop}\n" +
			"spec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"diff", "--old", empty, "--new", dir}, nil, &stdout, &stderr); code != exitFindings {
		t.Fatalf("diff exit %d, want %d\n%s", code, exitFindings, stderr.String())
	}
	for _, want := range []string{"+ from-json (new policy)", "+ shop/web (new policy)"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("diff output lacks %q:\n%s", want, stdout.String())
		}
	}
	// check reads the same two policies from the same directory.
	stderr.Reset()
	if code := run(t.Context(), []string{"check", "--policies", dir, "--flows", checkFlows}, nil, &bytes.Buffer{}, &stderr); code == exitError || !strings.Contains(stderr.String(), "policies 2 (0 not evaluated)") {
		t.Errorf("check exit %d, want it to evaluate the 2 policies diff read:\n%s", code, stderr.String())
	}

	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: shop}\nspec: {nope: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := run(t.Context(), []string{"diff", "--old", empty, "--new", dir}, nil, &bytes.Buffer{}, &stderr); code != exitError || !strings.Contains(stderr.String(), "bad.yaml") {
		t.Errorf("diff with a rejected document: exit %d, want %d naming bad.yaml:\n%s", code, exitError, stderr.String())
	}
}
