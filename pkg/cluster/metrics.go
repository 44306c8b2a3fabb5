package cluster

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the delivery series of an Applier.
type metrics struct {
	writes       *prometheus.CounterVec
	failures     prometheus.Counter
	pruneRefused prometheus.Counter
	conflicts    *prometheus.GaugeVec
	policies     *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry() // counted, not exported
	}
	f := promauto.With(reg)
	return &metrics{
		writes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "recommender_cluster_writes_total",
			Help: "Policy writes persisted in the cluster, by action (created, configured, pruned, drift-reverted); dry runs are not counted.",
		}, []string{"action"}),
		failures: f.NewCounter(prometheus.CounterOpts{
			Name: "recommender_cluster_write_failures_total",
			Help: "Policy writes the API server refused after retries.",
		}),
		pruneRefused: f.NewCounter(prometheus.CounterOpts{
			Name: "recommender_cluster_prunes_refused_total",
			Help: "Syncs whose prunes were refused because more policies were retired at once than --max-prune-ratio allows.",
		}),
		conflicts: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "recommender_cluster_conflicts",
			Help: "Desired policies the last sync could not write, by kind: not_owned (a same-name policy of another owner), drift (ours, changed by another field manager).",
		}, []string{"kind"}),
		policies: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "recommender_cluster_policies",
			Help: "Policies the last sync left as they are, by reason: kept (ours in the cluster, not proposed by this store), deferred (a destructive change waiting for --delivery-warmup), held (in audit while the cluster enforces).",
		}, []string{"state"}),
	}
}
