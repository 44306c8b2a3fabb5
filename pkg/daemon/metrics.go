package daemon

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the daemon's own series: the sync loop's. Every stage registers its own (the
// source: flows.RegisterMetrics; the store and aggregator: pkg/aggregate; audit and
// lifecycle: pkg/auditor; delivery: pkg/cluster, pkg/gitops).
type metrics struct {
	syncs    *prometheus.CounterVec
	lastSync prometheus.Gauge
}

// newMetrics makes the series; register registers them.
func newMetrics() *metrics {
	f := promauto.With(nil)
	return &metrics{
		syncs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "recommender_sync_runs_total",
			Help: "Synthesis and delivery runs, by result (ok; conflict: delivered, but policies in conflict are left for a human; error).",
		}, []string{"result"}),
		lastSync: f.NewGauge(prometheus.GaugeOpts{
			Name: "recommender_sync_last_success_timestamp_seconds",
			Help: "Unix time of the last successful synthesis and delivery run.",
		}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.syncs, m.lastSync}
}

// register registers all of cs on reg or, failing, none: what it registered before the
// failure is unregistered again.
func register(reg prometheus.Registerer, cs []prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}
