package daemon

import (
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// fileDeps returns the stages of a daemon reading a recording into a store in dir: a real
// bbolt file, an aggregator and an ingester (metrics on reg, when not nil).
func fileDeps(t *testing.T, dir string, reg Registry, recording string) Deps {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	var r prometheus.Registerer
	if reg != nil {
		r = reg
	}
	store, err := aggregate.Open(filepath.Join(dir, "db"), aggregate.Options{Registerer: r})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	agg, err := aggregate.NewAggregator(aggregate.Config{}, log, r)
	if err != nil {
		t.Fatal(err)
	}
	in, err := aggregate.NewIngester(store, agg, aggregate.IngesterConfig{BatchSize: 100, BatchInterval: time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	src, err := flows.NewFileSource(flows.FileConfig{Paths: []string{filepath.Join(recordings, recording)}}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	if reg == nil {
		reg = prometheus.NewPedanticRegistry()
	}
	return Deps{Log: log, Registry: reg, Source: flows.NewFolder(src, src.Stats()), Stats: src.Stats(),
		Store: store, Aggregator: agg, Ingester: in}
}
