package auditor

import (
	"testing"
	"time"
)

// Ensure the progress bar counts both promotion gates: the lesser of window time and flows.
func TestProgress(t *testing.T) {
	for _, tc := range []struct {
		clean, window   time.Duration
		flows, minFlows uint64
		want            int
	}{
		{0, time.Hour, 0, 100, 0},
		{30 * time.Minute, time.Hour, 100, 100, 50},
		{time.Hour, time.Hour, 25, 100, 25},
		{2 * time.Hour, time.Hour, 500, 100, 100},
		{time.Minute, 0, 0, 0, 100},
	} {
		if got := progress(tc.clean, tc.window, tc.flows, tc.minFlows); got != tc.want {
			t.Errorf("progress(%s, %s, %d, %d) = %d, want %d", tc.clean, tc.window, tc.flows, tc.minFlows, got, tc.want)
		}
	}
}
