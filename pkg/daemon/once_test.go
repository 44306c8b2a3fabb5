package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// Ensure `run --once` over recordings ends by itself after a final sync that writes the
// proposals to --out, and that a namespace shard proposes policies for its namespaces only.
func TestOnceShardWritesOut(t *testing.T) {
	dir := t.TempDir()
	d := fileDeps(t, dir, nil, "boutique.jsonl")
	store := d.Store
	sc := synth.DefaultConfig()
	sc.MinObserve = 0
	out := filepath.Join(dir, "out")
	dm, err := New(Config{SyncInterval: time.Hour, OutDir: out, Once: true, Namespaces: []string{"ops", "kube-system"},
		Lifecycle: lifecycle.DefaultConfig(), Synth: sc}, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := dm.Run(t.Context()); err != nil {
		t.Fatalf("Run = %v, want nil at the end of the recording", err)
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{"GRAPH.md", "REPORT.md", "kube-system-coredns.yaml", "ops-boutique-operator.yaml"}
	if !slices.Equal(got, want) {
		t.Errorf("--out holds %v, want %v", got, want)
	}
	// The daemon's report says what the source skipped, as recommend's does (issue 13).
	report, err := os.ReadFile(filepath.Join(out, "REPORT.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(report), "## Skipped input records") || !strings.Contains(string(report), "| reply |") {
		t.Errorf("daemon REPORT.md lacks the skipped input records:\n%s", report)
	}
	// The lifecycle made by the final sync was committed before Run returned.
	snap, err := store.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range snap.Workloads {
		b, err := store.Lifecycle(w.Key.String())
		if err != nil {
			t.Fatal(err)
		}
		inShard := w.Key.Namespace == "ops" || w.Key.Namespace == "kube-system"
		if !inShard {
			if b != nil {
				t.Errorf("lifecycle of %s outside the shard = %s, want none", w.Key, b)
			}
			continue
		}
		r, err := lifecycle.UnmarshalRecord(b)
		if err != nil {
			t.Fatalf("lifecycle of %s after Run: %v", w.Key, err)
		}
		if r.State != lifecycle.Audit {
			t.Errorf("stored lifecycle of %s = %s, want audit", w.Key, r.State)
		}
	}
}
