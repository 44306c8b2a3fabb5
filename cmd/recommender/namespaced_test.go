package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Ensure recommend --policy-kind CiliumNetworkPolicy writes one CNP per workload into its
// namespace's directory, that check gives that directory the verdicts it gives the CCNPs of the
// same flows (the recording's denied x-wing included), and that diff reads it back to no change.
func TestRecommendNamespaced(t *testing.T) {
	flowsFile := "../../testdata/flows/starwars.jsonl"
	dirs := []string{t.TempDir(), t.TempDir()}
	for _, dir := range dirs {
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), []string{"recommend", "--flows", flowsFile, "--policy-kind", "CiliumNetworkPolicy", "--out", dir}, nil, &stdout, &stderr); code != exitOK {
			t.Fatalf("recommend exit %d:\n%s", code, stderr.String())
		}
	}
	matches, err := filepath.Glob(filepath.Join(dirs[0], "default", "*.yaml"))
	if err != nil || len(matches) == 0 {
		t.Fatalf("no policies in %s/default/: %v", dirs[0], err)
	}
	if top, _ := filepath.Glob(filepath.Join(dirs[0], "*.yaml")); len(top) != 0 {
		t.Errorf("policy files at the top level: %v, want them in namespace directories", top)
	}
	raw, err := os.ReadFile(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "kind: CiliumNetworkPolicy") || !strings.Contains(string(raw), "namespace: default") {
		t.Errorf("%s is not a CNP in default:\n%s", matches[0], raw)
	}
	ccnps := t.TempDir()
	if code := run(t.Context(), []string{"recommend", "--flows", flowsFile, "--out", ccnps}, nil, &bytes.Buffer{}, &bytes.Buffer{}); code != exitOK {
		t.Fatalf("recommend CCNPs exit %d", code)
	}
	check := func(dir string) (int, string) {
		var stdout bytes.Buffer
		code := run(t.Context(), []string{"check", "--policies", dir, "--flows", flowsFile}, nil, &stdout, &bytes.Buffer{})
		return code, stdout.String()
	}
	cnpCode, cnpOut := check(dirs[0])
	ccnpCode, ccnpOut := check(ccnps)
	if cnpCode != ccnpCode || cnpOut != ccnpOut || !strings.Contains(cnpOut, "denied") {
		t.Errorf("check of the CNPs: exit %d\n%s\nof the CCNPs: exit %d\n%s\nwant the same verdicts, the x-wing denied", cnpCode, cnpOut, ccnpCode, ccnpOut)
	}
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"diff", "--old", dirs[0], "--new", dirs[1]}, nil, &stdout, &stderr); code != exitOK {
		t.Errorf("diff of two runs exit %d, want %d:\n%s%s", code, exitOK, stdout.String(), stderr.String())
	}
}
