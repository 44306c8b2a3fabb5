package daemon

import (
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

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
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
