package gitops

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the publishing series of a Publisher.
type metrics struct {
	publications *prometheus.CounterVec
	pushes       prometheus.Counter
	pullRequests *prometheus.CounterVec
	lastSuccess  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry() // counted, not exported
	}
	f := promauto.With(reg)
	return &metrics{
		publications: f.NewCounterVec(prometheus.CounterOpts{
			Name: "recommender_gitops_publications_total",
			Help: "GitOps publication attempts, by result (published, unchanged, deferred by --pr-interval, error).",
		}, []string{"result"}),
		pushes: f.NewCounter(prometheus.CounterOpts{
			Name: "recommender_gitops_branch_pushes_total",
			Help: "Commits pushed to the policy repository's recommender/* branches.",
		}),
		pullRequests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "recommender_gitops_pull_requests_total",
			Help: "Pull requests opened or edited, by action (created, updated).",
		}, []string{"action"}),
		lastSuccess: f.NewGauge(prometheus.GaugeOpts{
			Name: "recommender_gitops_last_success_timestamp_seconds",
			Help: "Unix time of the last publication that completed without error (published or unchanged).",
		}),
	}
}

// observe counts one publication attempt.
func (m *metrics) observe(res Result, err error) {
	switch {
	case err != nil:
		m.publications.WithLabelValues("error").Inc()
	default:
		m.publications.WithLabelValues(string(res.Status)).Inc()
		if res.Status != StatusDeferred {
			m.lastSuccess.SetToCurrentTime()
		}
	}
	for _, b := range res.Branches {
		if b.Pushed {
			m.pushes.Inc()
		}
		if pr := b.PullRequest; pr != nil {
			switch {
			case pr.Created:
				m.pullRequests.WithLabelValues("created").Inc()
			case pr.Updated:
				m.pullRequests.WithLabelValues("updated").Inc()
			}
		}
	}
}
