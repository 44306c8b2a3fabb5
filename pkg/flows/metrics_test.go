package flows_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/flows"
)

// Ensure skipped records are exposed per reason, every reason present from the start.
func TestSourceStatsSkippedByReason(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	st := &flows.Stats{}
	flows.RegisterMetrics(reg, st)
	st.Skip(flows.SkipReply)
	st.Skip(flows.SkipReply)
	st.Skip(flows.SkipNoIdentity)
	want := map[flows.SkipReason]float64{flows.SkipReply: 2, flows.SkipNoIdentity: 1}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[flows.SkipReason]float64{}
	series := 0
	for _, mf := range mfs {
		if mf.GetName() != "recommender_flows_skipped_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			series++
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" {
					got[flows.SkipReason(lp.GetValue())] = m.GetCounter().GetValue()
				}
			}
		}
	}
	if series != len(flows.SkipReasons()) {
		t.Errorf("%d series, want one per reason (%d)", series, len(flows.SkipReasons()))
	}
	for _, r := range flows.SkipReasons() {
		if got[r] != want[r] {
			t.Errorf("recommender_flows_skipped_total{reason=%q} = %v, want %v", r, got[r], want[r])
		}
	}
}
