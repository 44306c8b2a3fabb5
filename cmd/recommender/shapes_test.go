package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recommender/recommender/pkg/audit"
)

const shapeFlows = "../../pkg/flows/testdata/shapes"

// Ensure recordings that hold only L7 events give policies, and check of those policies
// against the same recording passes: an L7 request is the proof of its connection.
func TestRecommendL7Only(t *testing.T) {
	for _, name := range []string{"l7-only-dns.jsonl", "l7-only-http.jsonl"} {
		t.Run(name, func(t *testing.T) {
			rec := filepath.Join(shapeFlows, name)
			out := t.TempDir()
			stdout, _, err := runCmd(t.Context(), "recommend", "--flows", rec, "--out", out, "--log-level", "error")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(stdout, "2 policies written") {
				t.Fatalf("recommend: %s, want a policy for each end", stdout)
			}
			if _, _, err := runCmd(t.Context(), "check", "--policies", out, "--flows", rec, "--log-level", "error"); err != nil {
				t.Errorf("check of the recommended policies against their recording: %v", err)
			}
		})
	}
}

// Ensure a flow the recording shows dropped is reported as already dropped and does not
// fail check, while recommend-then-check on the same recording passes.
func TestCheckAlreadyDropped(t *testing.T) {
	rec := "testdata/shapes/dropped.jsonl"
	out := t.TempDir()
	if _, _, err := runCmd(t.Context(), "recommend", "--flows", rec, "--out", out, "--log-level", "error"); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := runCmd(t.Context(), "check", "--policies", out, "--flows", rec, "--log-level", "error")
	if err != nil {
		t.Fatalf("check: %v\n%s", err, stdout)
	}
	if !strings.Contains(stdout, "already-dropped") || !strings.Contains(stderr, "already dropped in the recording 1") {
		t.Errorf("check output:\n%s%s\nwant the dropped batch -> api flow reported as already dropped", stdout, stderr)
	}
}

// Ensure each rejected policy document is named with file, document index and field path,
// the others are evaluated, and the exit status says some were not (errUnevaluable, exit 1).
func TestCheckRejectedDocuments(t *testing.T) {
	_, stderr, err := runCmd(t.Context(), "check", "--policies", "testdata/shapes/rejected", "--flows", "testdata/shapes/dropped.jsonl", "--log-level", "error")
	if !errors.Is(err, errUnevaluable) || errors.Is(err, errWouldDeny) {
		t.Fatalf("check error = %v, want errUnevaluable alone", err)
	}
	file := filepath.Join("testdata/shapes/rejected", "policies.yaml")
	for _, want := range []string{
		file + "#1 (CiliumNetworkPolicy/shop/kafka-consumers): unknown field description, spec.ingress[0].toPorts[0].rules.kafka",
		file + "#2: CiliumNetworkPolicy/shop/bad-cidr: invalid policy",
		"policies 1 (2 not evaluated), flows evaluated 2",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	stdout, _, _ := runCmd(t.Context(), "check", "--policies", "testdata/shapes/rejected", "--flows", "testdata/shapes/dropped.jsonl", "-o", "json", "--log-level", "error")
	var j audit.ReportJSON
	if err := json.Unmarshal([]byte(stdout), &j); err != nil || len(j.Rejected) != 2 || j.AlreadyDropped != 1 {
		t.Errorf("check -o json: %+v (err %v), want the 2 rejected documents and 1 already-dropped flow", j, err)
	}
	// Nothing left to evaluate is an error naming the documents, not a pass.
	dir := t.TempDir()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	first := strings.SplitN(string(data), "\n---\n", 2)[0]
	if err := os.WriteFile(filepath.Join(dir, "only-bad.yaml"), []byte(first), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = runCmd(t.Context(), "check", "--policies", dir, "--flows", "testdata/shapes/dropped.jsonl", "--log-level", "error")
	if err == nil || !strings.Contains(err.Error(), "only-bad.yaml#1") || !strings.Contains(err.Error(), "no policy") {
		t.Errorf("check of a directory of rejected documents: %v, want an error naming only-bad.yaml#1", err)
	}
}

// Ensure recommend on a capture with label-less pods (exporter field mask) names the pods it
// wrote no selector for and why, on stdout and in REPORT.md, and an empty result names the
// skip reasons.
func TestRecommendNamesSkips(t *testing.T) {
	out := t.TempDir()
	stdout, _, err := runCmd(t.Context(), "recommend", "--flows", filepath.Join(shapeFlows, "exporter-fieldmask.jsonl"), "--out", out, "--log-level", "error")
	if err != nil {
		t.Fatal(err)
	}
	report, err := os.ReadFile(filepath.Join(out, "REPORT.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"no_identity 2", "no selector written for 3 workloads", "the flow source skipped 5 records"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	for _, want := range []string{"## Skipped input records", "| no_identity | 2 |", "shop/web (pods web-6d5f8c7b9d-x2x4k): flow carries no labels", "The flow source skipped 5 records"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("REPORT.md lacks %q:\n%s", want, report)
		}
	}
}
