package cluster

import (
	"testing"
	"time"
)

// Ensure lease names and timings that client-go would reject or retry forever are refused up front.
func TestElectionConfigValidate(t *testing.T) {
	ok := DefaultElectionConfig("pod-0")
	tests := []struct {
		name   string
		change func(*ElectionConfig)
		ok     bool
	}{
		{"default", func(*ElectionConfig) {}, true},
		{"no identity", func(c *ElectionConfig) { c.Identity = "" }, false},
		{"no name", func(c *ElectionConfig) { c.Name = "" }, false},
		{"upper-case name", func(c *ElectionConfig) { c.Name = "Recommender" }, false},
		{"bad namespace", func(c *ElectionConfig) { c.Namespace = "kube_system" }, false},
		{"renew not below lease", func(c *ElectionConfig) { c.RenewDeadline = c.LeaseDuration }, false},
		{"retry not below renew", func(c *ElectionConfig) { c.RetryPeriod = c.RenewDeadline }, false},
		{"zero retry", func(c *ElectionConfig) { c.RetryPeriod = 0 }, false},
		{"short but ordered", func(c *ElectionConfig) {
			c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = 3*time.Second, 2*time.Second, 100*time.Millisecond
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.change(&cfg)
			if err := cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate(%+v) = %v, want ok=%v", cfg, err, tt.ok)
			}
		})
	}
}
