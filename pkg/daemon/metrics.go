package daemon

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"strings"

	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/lifecycle"
)

// metrics are the daemon's own series: audit verdicts and lifecycle. Ingest, relay and store
// series are registered from the counters those stages keep (see registerSourceMetrics).
type metrics struct {
	wouldDeny   *prometheus.CounterVec
	policyDrops *prometheus.CounterVec
	auditDeny   *prometheus.CounterVec
	workloads   *prometheus.GaugeVec
	held        prometheus.Gauge
	clean       *prometheus.GaugeVec
	revisions   prometheus.Counter
	promotions  prometheus.Counter
	syncs       *prometheus.CounterVec
	lastSync    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		wouldDeny: f.NewCounterVec(prometheus.CounterOpts{
			Name: "recommender_would_deny_flows_total",
			Help: "Flows the proposed (audit) policy of a workload would deny, by workload, direction and kind of peer.",
		}, []string{"namespace", "workload", "direction", "peer_kind"}),
		auditDeny: f.NewCounterVec(prometheus.CounterOpts{
			Name: "recommender_cilium_audit_flows_total",
			Help: "Flows Hubble reported with verdict AUDIT (Cilium in policy-audit-mode would have denied them), by workload and direction.",
		}, []string{"namespace", "workload", "direction"}),
		policyDrops: f.NewCounterVec(prometheus.CounterOpts{
			Name: "recommender_policy_drops_total",
			Help: "Flows of workloads with an enforced policy that Cilium dropped for policy reasons, by workload and direction.",
		}, []string{"namespace", "workload", "direction"}),
		workloads: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "recommender_workloads",
			Help: "Workloads per lifecycle state (observing, audit, enforced).",
		}, []string{"state"}),
		held: f.NewGauge(prometheus.GaugeOpts{
			Name: "recommender_workloads_held",
			Help: "Workloads in audit whose revision is held for review after a would-be-denied flow (--learn=false); restart with --learn to release them.",
		}),
		clean: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "recommender_workload_window_clean_seconds",
			Help: "Seconds the observation window of a workload in audit has been clean (0 after a would-be-denied flow).",
		}, []string{"namespace", "workload"}),
		revisions: f.NewCounter(prometheus.CounterOpts{
			Name: "recommender_policy_revisions_total",
			Help: "Policy revisions proposed (a new rule set for a workload).",
		}),
		promotions: f.NewCounter(prometheus.CounterOpts{
			Name: "recommender_policy_promotions_total",
			Help: "Policies promoted from audit to enforced.",
		}),
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

// setStates publishes the lifecycle counts; every state gets a series, zero included.
func (m *metrics) setStates(counts map[lifecycle.State]int) {
	for _, s := range lifecycle.States {
		m.workloads.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
}

// registerSourceStats exposes a source's counters as Prometheus counters. They are read
// at scrape time from the atomics the source keeps, so the hot path pays nothing.
func registerSourceStats(reg prometheus.Registerer, st *flows.Stats) {
	f := promauto.With(reg)
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "recommender_flows_ingested_total",
		Help: "Flow events received from the source and handed to aggregation.",
	}, func() float64 { return float64(st.Events.Load()) })
	var names []string
	for _, r := range flows.SkipReasons() {
		names = append(names, string(r))
	}
	skipReasonList := strings.Join(names, ", ")
	for _, r := range flows.SkipReasons() {
		f.NewCounterFunc(prometheus.CounterOpts{
			Name:        "recommender_flows_skipped_total",
			Help:        "Records received but not aggregated, by reason (" + skipReasonList + "; README, Troubleshooting, says what each means and how to fix the capture).",
			ConstLabels: prometheus.Labels{"reason": string(r)},
		}, func() float64 { return float64(st.SkippedBy(r)) })
	}
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "recommender_flows_malformed_total",
		Help: "Records that could not be decoded.",
	}, func() float64 { return float64(st.Malformed.Load()) })
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "recommender_flows_lost_total",
		Help: "Events Hubble reported lost (ring buffer overflow), summed over nodes.",
	}, func() float64 { return float64(st.Lost.Load()) })
}
