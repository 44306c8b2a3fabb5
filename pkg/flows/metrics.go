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
	registerLag(f, s.State)
}

// registerLag exposes the ingest lag of a live source; the relay and the node source
// register the same series, one of them per daemon.
func registerLag(f promauto.Factory, state func() RelayState) {
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "recommender_ingest_lag_seconds",
		Help: "Seconds between now and the time of the newest flow received from Hubble Relay (or, reading the nodes, from any node).",
	}, func() float64 {
		last := state().LastEventTime
		if last.IsZero() {
			return 0
		}
		return time.Since(last).Seconds()
	})
}

// RegisterMetrics exposes the Peer service connection and the node streams on reg, read at
// scrape time. Node names are no label (unbounded); Nodes lists them.
func (s *NodesSource) RegisterMetrics(reg prometheus.Registerer) {
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "recommender_hubble_peers_connected",
		Help: "1 while the Notify stream of Hubble's Peer service is open (--hubble-peers), else 0.",
	}, func() float64 {
		if s.peerConnected.Load() {
			return 1
		}
		return 0
	})
	for _, state := range []string{"announced", "read", "connected"} {
		f.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "recommender_hubble_nodes",
			Help:        "Nodes the Peer service announced, those this replica reads (its assignment), and those with a stream open.",
			ConstLabels: prometheus.Labels{"state": state},
		}, func() float64 {
			var n int
			for _, ns := range s.Nodes() {
				switch {
				case state == "announced", state == "read" && ns.Read, state == "connected" && ns.Relay.Connected:
					n++
				}
			}
			return float64(n)
		})
	}
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "recommender_hubble_node_reconnects_total",
		Help: "Node and Peer service streams reopened after an error.",
	}, func() float64 { return float64(s.State().Reconnects) })
	registerLag(f, s.State)
}
