package aggregate

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type aggMetrics struct {
	overflow       *prometheus.CounterVec
	rejected       *prometheus.CounterVec
	churningLabels prometheus.Counter
}

// newAggMetrics registers the aggregator's series; cfg's caps are published as they are, so
// alerts compare the store's size with them.
func newAggMetrics(reg prometheus.Registerer, cfg Config) *aggMetrics {
	limits := promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
		Name: "recommender_store_limit",
		Help: "Configured caps of the store (edges, workloads); compare with recommender_store_edges and recommender_store_workloads.",
	}, []string{"kind"})
	limits.WithLabelValues("edges").Set(float64(cfg.MaxEdges))
	limits.WithLabelValues("workloads").Set(float64(cfg.MaxWorkloads))
	return &aggMetrics{
		overflow: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "recommender_aggregate_overflow_total",
			Help: "Observations dropped because the workload or edge cap was reached, by cap.",
		}, []string{"cap"}),
		rejected: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "recommender_aggregate_rejected_total",
			Help: "Malformed records dropped before aggregation, by reason (time, future, endpoint, port, identity, name, dns, http).",
		}, []string{"reason"}),
		churningLabels: promauto.With(reg).NewCounter(prometheus.CounterOpts{
			Name: "recommender_aggregate_churning_labels_total",
			Help: "Label keys found churning within one workload and dropped from its identity.",
		}),
	}
}

type storeMetrics struct {
	commitDuration prometheus.Histogram
	commits        prometheus.Counter
	sizeBytes      prometheus.Gauge
	edges          prometheus.Gauge
	workloads      prometheus.Gauge
	expired        prometheus.Counter
}

func newStoreMetrics(reg prometheus.Registerer) *storeMetrics {
	f := promauto.With(reg)
	return &storeMetrics{
		commitDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name: "recommender_store_commit_duration_seconds",
			Help: "Time to write one batch (edges and ingest cursor) in one fsynced transaction.",
			// Commits fsync: milliseconds on SSDs, up to seconds on busy network disks.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		commits: f.NewCounter(prometheus.CounterOpts{
			Name: "recommender_store_commits_total",
			Help: "Batches committed to the store.",
		}),
		sizeBytes: f.NewGauge(prometheus.GaugeOpts{
			Name: "recommender_store_size_bytes",
			Help: "Size of the store file; bbolt files never shrink, see recommender compact.",
		}),
		edges: f.NewGauge(prometheus.GaugeOpts{
			Name: "recommender_store_edges",
			Help: "Edges in the store after the last commit.",
		}),
		workloads: f.NewGauge(prometheus.GaugeOpts{
			Name: "recommender_store_workloads",
			Help: "Workloads in the store after the last commit.",
		}),
		expired: f.NewCounter(prometheus.CounterOpts{
			Name: "recommender_store_expired_edges_total",
			Help: "Edges removed by the retention sweep.",
		}),
	}
}
