package auditor

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/recommender/recommender/pkg/lifecycle"
)

// metrics are the audit stage's series: verdicts, drops and lifecycle (docs/metrics.md).
type metrics struct {
	lastFlow     prometheus.GaugeFunc
	wouldDeny    *prometheus.CounterVec
	policyDrops  *prometheus.CounterVec
	foreignDrops *prometheus.CounterVec
	auditDeny    *prometheus.CounterVec
	workloads    *prometheus.GaugeVec
	held         prometheus.Gauge
	clean        *prometheus.GaugeVec
	revisions    prometheus.Counter
	promotions   prometheus.Counter
}

// newMetrics makes the series, registered by register; clock is the flow clock
// (Auditor.Clock).
func newMetrics(clock func() time.Time) *metrics {
	f := promauto.With(nil)
	lastFlow := f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "recommender_ingest_last_flow_timestamp_seconds",
		Help: "Flow time (Unix seconds) of the newest event ingested: the clock windows and retention run on.",
	}, func() float64 {
		if t := clock(); !t.IsZero() {
			return float64(t.UnixNano()) / 1e9
		}
		return 0
	})
	return &metrics{
		lastFlow: lastFlow,
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
			Help: "Flows of workloads with a generated policy in force that Cilium dropped for policy reasons and that are blamed on that policy (named by Hubble, or a default deny), by workload, direction and policy.",
		}, []string{"namespace", "workload", "direction", "policy"}),
		foreignDrops: f.NewCounterVec(prometheus.CounterOpts{
			Name: "recommender_foreign_policy_drops_total",
			Help: "Flows of workloads with a generated policy in force that Cilium dropped because of another policy (named by Hubble, or an explicit deny or authentication rule, which generated policies never contain), by workload, direction and that policy.",
		}, []string{"namespace", "workload", "direction", "policy"}),
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
	}
}

// collectors are every series, for the caller to register.
func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.lastFlow, m.wouldDeny, m.policyDrops, m.foreignDrops, m.auditDeny,
		m.workloads, m.held, m.clean, m.revisions, m.promotions}
}

// setStates publishes the lifecycle counts; every state gets a series, zero included.
func (m *metrics) setStates(counts map[lifecycle.State]int) {
	for _, s := range lifecycle.States {
		m.workloads.WithLabelValues(string(s)).Set(float64(counts[s]))
	}
}
