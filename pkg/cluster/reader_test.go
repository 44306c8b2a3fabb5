package cluster

import (
	"testing"

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
