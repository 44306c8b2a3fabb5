package flows

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// RegisterMetrics exposes a source's counters as Prometheus series on reg. They are read at
// scrape time from the atomics Stats keeps, so the hot path pays nothing.
func RegisterMetrics(reg prometheus.Registerer, st *Stats) {
	f := promauto.With(reg)
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "recommender_flows_ingested_total",
		Help: "Flow events received from the source and handed to aggregation.",
	}, func() float64 { return float64(st.Events.Load()) })
	var names []string
	for _, r := range SkipReasons() {
		names = append(names, string(r))
	}
	reasons := strings.Join(names, ", ")
	for _, r := range SkipReasons() {
		f.NewCounterFunc(prometheus.CounterOpts{
			Name:        "recommender_flows_skipped_total",
			Help:        "Records received but not aggregated, by reason (" + reasons + "; README, Troubleshooting, says what each means and how to fix the capture).",
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

// RegisterMetrics exposes the relay connection's state on reg, read at scrape time.
func (s *RelaySource) RegisterMetrics(reg prometheus.Registerer) {
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "recommender_relay_connected",
		Help: "1 while a Hubble Relay stream is open, else 0.",
	}, func() float64 {
		if s.State().Connected {
			return 1
		}
		return 0
	})
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "recommender_relay_reconnects_total",
		Help: "Hubble Relay streams reopened after an error.",
	}, func() float64 { return float64(s.State().Reconnects) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "recommender_ingest_lag_seconds",
		Help: "Seconds between now and the time of the newest flow received from Hubble Relay.",
	}, func() float64 {
		last := s.State().LastEventTime
		if last.IsZero() {
			return 0
		}
		return time.Since(last).Seconds()
	})
}
