package daemon

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// fileDeps returns the stages of a daemon reading a recording into a store in dir: a real
// bbolt file, an aggregator and an ingester (metrics on reg, when not nil). They are closed
// when the test ends.
func fileDeps(t *testing.T, dir string, reg Registry, recording string) Deps {
	t.Helper()
	d, closeDeps := openDeps(t, depsConfig{db: filepath.Join(dir, "db"), recording: filepath.Join(recordings, recording), reg: reg})
	t.Cleanup(closeDeps)
	return d
}

// depsConfig says what openDeps builds.
type depsConfig struct {
	db, recording string
	// reg gets the stages' metrics; nil: a new pedantic registry.
	reg Registry
	// norm normalizes the recording; nil: the default Normalizer.
	norm *flows.Normalizer
}

// openDeps builds the stages of a daemon reading cfg.recording into the store at cfg.db. The
// returned func closes the source and the store, so a later run may open the same store.
func openDeps(t *testing.T, cfg depsConfig) (Deps, func()) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	reg := cfg.reg
	if reg == nil {
		reg = prometheus.NewPedanticRegistry()
	}
	store, err := aggregate.Open(cfg.db, aggregate.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	agg, err := aggregate.NewAggregator(aggregate.Config{}, log, reg)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	src, err := flows.NewFileSource(flows.FileConfig{Paths: []string{cfg.recording}}, cfg.norm, log)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	closeDeps := func() {
		src.Close()
		store.Close()
	}
	flows.RegisterMetrics(reg, src.Stats())
	return Deps{Log: log, Registry: reg, Source: flows.NewFolder(src, src.Stats()), Stats: src.Stats(),
		Store: store, Aggregator: agg}, closeDeps
}
