package cluster

import (
	"testing"

	"github.com/cilium/cilium/pkg/policy/api"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/recommender/recommender/pkg/synth"
)

// Ensure a policy with spec.log (synth --policy-log) is applied and kept as written by an API
// server with Cilium's CRDs (v1.20.2: the field exists from 1.18), not pruned.
func TestSyncPolicyLog(t *testing.T) {
	c := admin(t)
	name := "policy-log-payments-settlement-reconciler"
	p := testPolicy(name, "reconciler", "7070")
	p.Spec.Log = api.LogConfig{Value: synth.LogValue(name)}
	a := newApplier(t, c.dyn, enforce(), nil)
	if _, err := a.Sync(t.Context(), plan(promoted(p))); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	u := getCCNP(t, c.dyn, name)
	if u == nil {
		t.Fatalf("%s not applied", name)
	}
	got, _, _ := unstructured.NestedString(u.Object, "spec", "log", "value")
	if want := synth.LogValue(name); got != want {
		t.Errorf("spec.log.value in the cluster = %q, want %q", got, want)
	}
}
