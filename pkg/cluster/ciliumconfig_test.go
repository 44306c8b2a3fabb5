package cluster

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ciliumConfigFixture creates Cilium's ConfigMap in namespace with data, as Cilium's Helm
// chart does, and deletes it after the test.
func ciliumConfigFixture(t *testing.T, c clients, namespace string, data map[string]string) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: CiliumConfigMap, Namespace: namespace}, Data: data}
	if _, err := c.core.ConfigMaps(namespace).Create(t.Context(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.core.ConfigMaps(namespace).Delete(context.Background(), CiliumConfigMap, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// Ensure CiliumClusterName reads cluster-name from cilium-config, takes Cilium's default
// when the key is missing, and reports a missing ConfigMap as NotFound.
func TestCiliumClusterName(t *testing.T) {
	c := admin(t)
	r := NewReader(c.core, c.apps, c.dyn)
	tests := []struct {
		name     string
		data     map[string]string // nil: no ConfigMap
		want     string
		notFound bool
	}{
		{"named", map[string]string{"cluster-name": "east", "cluster-id": "1"}, "east", false},
		{"key missing", map[string]string{"enable-policy": "default"}, "default", false},
		{"no configmap", nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := readerFixture(t, c, "cilium")
			if tt.data != nil {
				ciliumConfigFixture(t, c, ns, tt.data)
			}
			got, err := r.CiliumClusterName(t.Context(), ns)
			if tt.notFound {
				if !apierrors.IsNotFound(err) {
					t.Fatalf("CiliumClusterName(%s) = %q, %v; want NotFound", ns, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("CiliumClusterName(%s) = %q, %v; want %q", ns, got, err, tt.want)
			}
		})
	}
}
