package synth

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/cilium/pkg/policy/api"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// reconciler's policy name (payments-settlement-settlement-reconciler) is longer than the 32
// characters Cilium allows in spec.log.value.
var reconciler = wl("payments-settlement", "app=reconciler")

// policyLogSnap has one workload whose name fits spec.log.value and one whose name does not.
func policyLogSnap() *aggregate.Snapshot {
	return newSnap().
		workload(frontend, "Deployment/frontend").
		workload(cart, "Deployment/cart").
		workload(reconciler, "Deployment/settlement-reconciler").
		conn(frontend, cart, flows.ProtoTCP, 7070, fwd(20)).
		conn(reconciler, cart, flows.ProtoTCP, 7070, fwd(5)).
		build()
}

// Ensure LogValue keeps names that fit Cilium's limit and shortens longer ones to a distinct
// value within it.
func TestLogValue(t *testing.T) {
	long := "payments-settlement-settlement-reconciler"
	for _, tt := range []struct {
		name, want string
	}{
		{"shop-frontend", "shop-frontend"},
		{strings.Repeat("a", 32), strings.Repeat("a", 32)},
		{long, "payments-settlement-settl-" + shortHash(long)},
		// The cut lands after a '-': no "--" before the hash.
		{"payments-settlement-abcd-reconciler", "payments-settlement-abcd-" + shortHash("payments-settlement-abcd-reconciler")},
	} {
		got := LogValue(tt.name)
		if got != tt.want {
			t.Errorf("LogValue(%q) = %q, want %q", tt.name, got, tt.want)
		}
		if len(got) > maxLogValue {
			t.Errorf("LogValue(%q) = %q: %d characters, Cilium allows %d", tt.name, got, len(got), maxLogValue)
		}
	}
	if a, b := LogValue(long), LogValue(long+"-2"); a == b {
		t.Errorf("LogValue of two long names with one prefix = %q for both, want distinct", a)
	}
}

// Ensure --policy-log writes each policy's LogValue, changes the revision (the value is part
// of the rules) and nothing else, and that the CRD schema check refuses a value Cilium would.
func TestPolicyLog(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PolicyLog = true
	with := synthesize(t, policyLogSnap(), cfg)
	without := synthesize(t, policyLogSnap(), DefaultConfig())
	if len(with.Proposals) != 3 || len(without.Proposals) != 3 {
		t.Fatalf("proposals: %d with --policy-log, %d without, want 3 (skipped %+v)", len(with.Proposals), len(without.Proposals), with.Skipped)
	}
	for i, p := range with.Proposals {
		if got, want := p.Policy.Spec.Log.Value, LogValue(p.Name); got != want {
			t.Errorf("%s: spec.log.value = %q, want %q", p.Name, got, want)
		}
		q := without.Proposals[i]
		if q.Policy.Spec.Log != (api.LogConfig{}) {
			t.Errorf("%s without --policy-log: spec.log = %+v, want none", q.Name, q.Policy.Spec.Log)
		}
		if p.Revision == q.Revision {
			t.Errorf("%s: revision %s with and without spec.log, want a new revision", p.Name, p.Revision)
		}
		rule := *p.Policy.Spec
		rule.Log = api.LogConfig{}
		if rev, err := Revision(&rule); err != nil || rev != q.Revision {
			t.Errorf("%s: rules other than spec.log differ from the policy without --policy-log (revision %s, want %s, err %v)", p.Name, rev, q.Revision, err)
		}
	}

	tooLong := with.Proposals[0].Policy.DeepCopy()
	tooLong.Spec.Log.Value = strings.Repeat("x", maxLogValue+1)
	if err := Validate(tooLong, ""); !errors.Is(err, ErrSchema) {
		t.Errorf("Validate with a %d-character spec.log.value = %v, want ErrSchema", maxLogValue+1, err)
	}
}
