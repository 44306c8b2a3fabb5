package cluster

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Ensure pods are named after the workload users know, across rollouts.
func TestWorkloadOf(t *testing.T) {
	ref := func(apiVersion, kind, name string) *metav1.OwnerReference {
		return &metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name}
	}
	rsOwners := map[string]metav1.OwnerReference{
		"shop/web-7d9f":    *ref("apps/v1", "Deployment", "web"),
		"shop/rollout-1":   *ref("argoproj.io/v1alpha1", "Rollout", "canary"),
		"other/web-7d9f":   *ref("apps/v1", "Deployment", "other-web"),
		"shop/fake-deploy": *ref("example.com/v1", "Deployment", "not-apps"),
	}
	tests := []struct {
		name string
		ctrl *metav1.OwnerReference
		want Workload
	}{
		{"bare pod", nil, Workload{"shop", "Pod", "p"}},
		{"deployment via replicaset", ref("apps/v1", "ReplicaSet", "web-7d9f"), Workload{"shop", "Deployment", "web"}},
		{"replicaset without deployment", ref("apps/v1", "ReplicaSet", "lonely"), Workload{"shop", "ReplicaSet", "lonely"}},
		{"replicaset owned by another controller", ref("apps/v1", "ReplicaSet", "rollout-1"), Workload{"shop", "ReplicaSet", "rollout-1"}},
		{"deployment kind from another group", ref("apps/v1", "ReplicaSet", "fake-deploy"), Workload{"shop", "ReplicaSet", "fake-deploy"}},
		{"statefulset", ref("apps/v1", "StatefulSet", "db"), Workload{"shop", "StatefulSet", "db"}},
		{"daemonset", ref("apps/v1", "DaemonSet", "agent"), Workload{"shop", "DaemonSet", "agent"}},
		{"job", ref("batch/v1", "Job", "migrate"), Workload{"shop", "Job", "migrate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := workloadOf("shop", "p", tt.ctrl, rsOwners); got != tt.want {
				t.Errorf("workloadOf(%v) = %v, want %v", tt.ctrl, got, tt.want)
			}
		})
	}
}

// Ensure election timings that client-go would reject are refused up front.
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
