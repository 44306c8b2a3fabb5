package main

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// newBuildInfoCollector exposes recommender_build_info{version,goversion} = 1.
func newBuildInfoCollector() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "recommender_build_info",
		Help: "Build information of the running recommender; the value is always 1.",
	}, []string{"version", "goversion"})
	g.WithLabelValues(Version, runtime.Version()).Set(1)
	return g
}
