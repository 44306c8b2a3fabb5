package cluster

import (
	"errors"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/synth"
)

// synthesize runs the pipeline of `recommend --flows` on recordings: file
// source, connection folding, in-memory aggregation, synthesis.
func synthesize(t *testing.T, cfg synth.Config, paths ...string) *synth.Result {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	src, err := flows.NewFileSource(flows.FileConfig{Paths: paths, Strict: true}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	agg, err := aggregate.NewAggregator(aggregate.Config{}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := agg.AddAll(t.Context(), flows.NewFolder(src, src.Stats())); err != nil {
		t.Fatalf("read %v: %v", paths, err)
	}
	res, err := synth.Synthesize(agg.Snapshot(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// Ensure every policy synthesized from testdata/flows passes the API
// server's schema validation and is stored as generated.
func TestSyncSynthesizedFromRecordings(t *testing.T) {
	c := admin(t)
	all, err := filepath.Glob(filepath.Join("..", "..", "testdata", "flows", "*.jsonl"))
	if err != nil || len(all) == 0 {
		t.Fatalf("no recordings in testdata/flows: %v", err)
	}
	l7 := synth.DefaultConfig()
	l7.L7HTTP = true
	cases := map[string]struct {
		cfg   synth.Config
		paths []string
	}{
		"all":    {synth.DefaultConfig(), all},
		"all-l7": {l7, all},
	}
	for _, p := range all {
		cases[filepath.Base(p)] = struct {
			cfg   synth.Config
			paths []string
		}{synth.DefaultConfig(), []string{p}}
	}
	a := newApplier(t, c.dyn, enforce(), nil)
	revisions := map[string][]string{} // every revision applied under each name
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			res := synthesize(t, tc.cfg, tc.paths...)
			if len(res.Proposals) == 0 {
				t.Fatalf("no proposals from %v: %s", tc.paths, res.Empty)
			}
			var desired []Desired
			for _, p := range res.Proposals {
				desired = append(desired, Desired{Policy: p.Policy, Promoted: true})
				revisions[p.Name] = append(revisions[p.Name], p.Policy.Annotations[synth.AnnotationRevision])
			}
			sr, err := a.Sync(t.Context(), Plan{Desired: desired, Destructive: true})
			if err != nil {
				t.Fatalf("Sync(%d synthesized policies) = %v", len(desired), err)
			}
			if n := sr.Count(ActionCreated) + sr.Count(ActionConfigured) + sr.Count(ActionUnchanged); n != len(desired) {
				t.Errorf("Sync() applied %d policies, want %d (%v)", n, len(desired), sr.Changes)
			}
			for _, p := range res.Proposals {
				got := getCCNP(t, c.dyn, p.Name)
				if got == nil {
					t.Errorf("%s not in the cluster", p.Name)
					continue
				}
				if s, want := specJSON(t, got.Object["spec"]), specJSON(t, p.Policy.Spec); s != want {
					t.Errorf("%s spec in cluster = %s, want %s", p.Name, s, want)
				}
			}
		})
	}
	// Retiring every policy at once is what a store that lost its memory would do: refused.
	everything := Plan{Destructive: true}
	for name, revs := range revisions {
		everything.Retired = append(everything.Retired, Retired{Name: name, Revisions: revs})
	}
	sr, err := a.Sync(t.Context(), everything)
	if !errors.Is(err, ErrPruneRefused) {
		t.Fatalf("Sync(all retired) = %v, want ErrPruneRefused", err)
	}
	if n := sr.Count(ActionPruneRefused); n != len(revisions) || n != len(sr.Changes) {
		t.Errorf("Sync(all retired) = %v, want %d refused prunes and nothing else", sr.Changes, len(revisions))
	}
	cfg := enforce()
	cfg.MaxPruneRatio = 1
	sr, err = newApplier(t, c.dyn, cfg, nil).Sync(t.Context(), everything)
	if err != nil {
		t.Fatalf("Sync(all retired, --max-prune-ratio 1) = %v", err)
	}
	if sr.Count(ActionPruned) != len(revisions) || sr.Count(ActionPruned) != len(sr.Changes) {
		t.Errorf("Sync(all retired, --max-prune-ratio 1) = %v, want only prunes", sr.Changes)
	}
}
