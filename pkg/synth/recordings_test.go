package synth

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// recordingSnapshot folds recorded flows into a snapshot the way `recommend --flows` does:
// file source, connection folding, in-memory aggregator.
func recordingSnapshot(t *testing.T, paths ...string) *aggregate.Snapshot {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	src, err := flows.NewFileSource(flows.FileConfig{Paths: paths, Strict: true}, nil, log)
	if err != nil {
		t.Fatalf("open recordings: %v", err)
	}
	defer src.Close()
	agg, err := aggregate.NewAggregator(aggregate.Config{}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := agg.AddAll(t.Context(), flows.NewFolder(src, src.Stats())); err != nil {
		t.Fatalf("read recordings: %v", err)
	}
	return agg.Snapshot()
}

func recordings(t *testing.T, names ...string) []string {
	t.Helper()
	var out []string
	for _, n := range names {
		m, err := filepath.Glob(filepath.Join("..", "..", "testdata", "flows", n))
		if err != nil || len(m) == 0 {
			t.Fatalf("no recordings %s: %v", n, err)
		}
		out = append(out, m...)
	}
	slices.Sort(out)
	return out
}

// Ensure the policies and report for the bundled recordings stay as reviewed, are
// byte-identical on a second run, and satisfy the evaluator properties.
func TestGoldenRecordings(t *testing.T) {
	l7 := DefaultConfig()
	l7.L7HTTP = true
	for _, tc := range []struct {
		name  string
		files []string
		cfg   Config
	}{
		{"flows-starwars", []string{"starwars.jsonl"}, DefaultConfig()},
		{"flows-starwars-l7", []string{"starwars.jsonl"}, l7},
		{"flows-boutique", []string{"boutique.jsonl"}, DefaultConfig()},
		// What the README's quick start runs: recommend --flows testdata/flows/*.jsonl.
		{"flows-all", []string{"*.jsonl"}, DefaultConfig()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			paths := recordings(t, tc.files...)
			snap := recordingSnapshot(t, paths...)
			got := renderAll(t, synthesize(t, snap, tc.cfg))
			checkGolden(t, tc.name, got)
			if again := renderAll(t, synthesize(t, recordingSnapshot(t, paths...), tc.cfg)); !bytes.Equal(got, again) {
				t.Errorf("second run differs:\n%s", lineDiff(string(got), string(again)))
			}
			checkProperties(t, snap, tc.cfg)
		})
	}
}
