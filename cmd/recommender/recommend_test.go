package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recommender/recommender/internal/mermaidcheck"
	"github.com/recommender/recommender/pkg/synth"
)

// Ensure the README's quick start works on the bundled recordings with no cluster: a shell
// glob after --flows, a summary on stdout, one YAML per policy, REPORT.md and GRAPH.md with
// well-formed graphs.
func TestRecommendQuickStart(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "flows", "*.jsonl"))
	if err != nil || len(files) < 2 {
		t.Fatalf("recordings: %v %v", files, err)
	}
	out := filepath.Join(t.TempDir(), "out")
	stdout, err := execute(t, append(append([]string{"recommend", "--flows"}, files...), "--out", out)...)
	if err != nil {
		t.Fatalf("recommend: %v\n%s", err, stdout)
	}
	if !strings.Contains(stdout, "policies written to "+out) || !strings.Contains(stdout, "report: "+filepath.Join(out, "REPORT.md")) {
		t.Errorf("summary = %q", stdout)
	}
	yamls, _ := filepath.Glob(filepath.Join(out, "*.yaml"))
	if len(yamls) == 0 {
		t.Fatal("no policy written")
	}
	for _, doc := range []string{"REPORT.md", "GRAPH.md"} {
		raw, err := os.ReadFile(filepath.Join(out, doc))
		if err != nil {
			t.Fatal(err)
		}
		mermaidcheck.CheckDocument(t, doc, string(raw), 1)
	}
	if !strings.Contains(stdout, "graph: "+filepath.Join(out, "GRAPH.md")) {
		t.Errorf("summary = %q, want the graph's path", stdout)
	}
	// diff: a directory against itself is equal (exit 0), against an empty one it differs.
	if got, err := execute(t, "diff", "--old", out, "--new", out); err != nil || got != "" {
		t.Errorf("diff same = %q, %v; want no output, no error", got, err)
	}
	empty := t.TempDir()
	got, err := execute(t, "diff", "--old", empty, "--new", out)
	if !errors.Is(err, errDiffers) || !strings.Contains(got, "+ default-deathstar (new policy)") {
		t.Errorf("diff empty..out = %v\n%s", err, got)
	}
}

// Ensure flag mistakes are reported before anything is read.
func TestRecommendFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"recommend", "--flows", "x.jsonl"}, "--out is required"},
		{[]string{"recommend", "--db", "x.db", "--flows", "x.jsonl", "--out", "o"}, "exclude each other"},
		{[]string{"recommend", "--flows", "x.jsonl", "--out", "o", "--l7", "kafka"}, "only http"},
		{[]string{"recommend", "--flows", "x.jsonl", "--out", "o", "--cidr-prefix", "4"}, "--cidr-prefix-v4 4"},
		{[]string{"recommend", "--flows", "x.jsonl", "--out", "o", "--quiet-directions", "closed"}, `--quiet-directions "closed": want deny or open`},
		{[]string{"recommend", "stray", "--out", "o"}, "unexpected arguments"},
		{[]string{"diff", "--old", "a"}, "--old and --new are required"},
	} {
		if _, err := execute(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

// Ensure --policy-log writes spec.log with each policy's LogValue, and that without it no
// policy carries one (the default leaves the policies, and so their revisions, as before).
func TestRecommendPolicyLog(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "flows", "*.jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("recordings: %v %v", files, err)
	}
	for _, on := range []bool{false, true} {
		out := filepath.Join(t.TempDir(), "out")
		args := append(append([]string{"recommend", "--flows"}, files...), "--out", out)
		if on {
			args = append(args, "--policy-log")
		}
		if stdout, err := execute(t, args...); err != nil {
			t.Fatalf("recommend --policy-log=%t: %v\n%s", on, err, stdout)
		}
		yamls, _ := filepath.Glob(filepath.Join(out, "*.yaml"))
		if len(yamls) == 0 {
			t.Fatal("no policy written")
		}
		for _, y := range yamls {
			b, err := os.ReadFile(y)
			if err != nil {
				t.Fatal(err)
			}
			name := strings.TrimSuffix(filepath.Base(y), ".yaml")
			want := "\n  log:\n    value: " + synth.LogValue(name) + "\n"
			if got := strings.Contains(string(b), want); got != on {
				t.Errorf("--policy-log=%t: %s has %q: %t, want %t", on, y, want, got, on)
			}
			if !on && strings.Contains(string(b), "\n  log:") {
				t.Errorf("%s has spec.log without --policy-log", y)
			}
		}
	}
}
