package cluster

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"syscall"
	"testing"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/policy/api"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/recommender/recommender/pkg/synth"
)

var discard = slog.New(slog.DiscardHandler)

// testPolicy builds a CCNP with Cilium's types: pods app=<app> in namespace
// shop accept TCP <port> from app=client.
func testPolicy(name, app, port string) *ciliumv2.CiliumClusterwideNetworkPolicy {
	return &ciliumv2.CiliumClusterwideNetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/part-of": "shop"}},
		Spec: &api.Rule{
			EndpointSelector: api.NewESFromLabels(
				labels.NewLabel("app", app, labels.LabelSourceK8s),
				labels.NewLabel("io.kubernetes.pod.namespace", "shop", labels.LabelSourceK8s),
			),
			Ingress: []api.IngressRule{{
				IngressCommonRule: api.IngressCommonRule{
					FromEndpoints: []api.EndpointSelector{api.NewESFromLabels(labels.NewLabel("app", "client", labels.LabelSourceK8s))},
				},
				ToPorts: api.PortRules{{Ports: []api.PortProtocol{{Port: port, Protocol: api.ProtoTCP}}}},
			}},
		},
	}
}

// Ensure flag values are checked before anything starts.
func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"default", DefaultConfig(), true},
		{"enforce dry-run", Config{Apply: ApplyEnforce, DryRun: DryRunServer}, true},
		{"audit mode", Config{Apply: ApplyEnforce, DryRun: DryRunNone, ClusterAuditMode: true}, true},
		{"empty apply", Config{DryRun: DryRunNone}, false},
		{"unknown apply", Config{Apply: "on", DryRun: DryRunNone}, false},
		{"client dry-run", Config{Apply: ApplyEnforce, DryRun: "client"}, false},
		{"cnp in namespaces", Config{Apply: ApplyEnforce, DryRun: DryRunNone, PolicyKind: synth.KindCNP, Namespaces: []string{"shop"}}, true},
		{"ccnp in namespaces", Config{Apply: ApplyEnforce, DryRun: DryRunNone, Namespaces: []string{"shop"}}, false},
		{"unknown kind", Config{Apply: ApplyEnforce, DryRun: DryRunNone, PolicyKind: "NetworkPolicy"}, false},
		{"empty namespace", Config{Apply: ApplyEnforce, DryRun: DryRunNone, PolicyKind: synth.KindCNP, Namespaces: []string{""}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate(%+v) = %v, want ok=%v", tt.cfg, err, tt.ok)
			}
		})
	}
}

// Ensure apply=off never reaches the API server unless a server dry-run is asked for.
func TestSyncApplyOff(t *testing.T) {
	// Nothing listens on port 1: any request would fail with a connection error.
	dyn, err := dynamic.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewApplier(dyn, DefaultConfig(), nil, discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Sync(t.Context(), Plan{Desired: []Desired{{Policy: testPolicy("p", "web", "80"), Promoted: true}}, Destructive: true})
	if !errors.Is(err, ErrApplyDisabled) {
		t.Fatalf("Sync with apply=off = %v, want ErrApplyDisabled", err)
	}
	if len(res.Changes) != 0 {
		t.Errorf("Sync with apply=off changes = %v, want none", res.Changes)
	}
}

// Ensure input that cannot be applied is rejected before any write, and that CNPs get the
// namespace their selector names, within --namespace.
func TestCheckDesired(t *testing.T) {
	other := testPolicy("a", "x", "1")
	other.Spec.EndpointSelector = api.NewESFromLabels(labels.NewLabel("app", "x", labels.LabelSourceK8s),
		labels.NewLabel("io.kubernetes.pod.namespace", "bank", labels.LabelSourceK8s))
	cnp := Config{PolicyKind: synth.KindCNP}
	scoped := Config{PolicyKind: synth.KindCNP, Namespaces: []string{"shop"}}
	tests := []struct {
		name    string
		cfg     Config
		desired []Desired
		want    []string
		wantErr bool
	}{
		{"sorted by name", Config{}, []Desired{{Policy: testPolicy("b", "x", "1")}, {Policy: testPolicy("a", "x", "1")}}, []string{"a", "b"}, false},
		{"nil policy", Config{}, []Desired{{}}, nil, true},
		{"no name", Config{}, []Desired{{Policy: testPolicy("", "x", "1")}}, nil, true},
		{"duplicate", Config{}, []Desired{{Policy: testPolicy("a", "x", "1")}, {Policy: testPolicy("a", "y", "2")}}, nil, true},
		{"cnp sorted by namespace", cnp, []Desired{{Policy: testPolicy("b", "x", "1")}, {Policy: other}}, []string{"bank/a", "shop/b"}, false},
		{"cnp outside --namespace", scoped, []Desired{{Policy: testPolicy("b", "x", "1")}, {Policy: other}}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := (&Applier{cfg: tt.cfg}).checkDesired(tt.desired)
			if (err != nil) != tt.wantErr {
				t.Fatalf("checkDesired() error = %v, want error %v", err, tt.wantErr)
			}
			var names []string
			for _, d := range got {
				names = append(names, key(d.ns, d.Policy.Name))
			}
			if !reflect.DeepEqual(names, tt.want) {
				t.Errorf("checkDesired() names = %v, want %v", names, tt.want)
			}
		})
	}
}

// Ensure the apply body carries our label, the precondition and no server-owned fields.
func TestEncode(t *testing.T) {
	p := testPolicy("web", "web", "80")
	p.UID = "u1"
	p.ResourceVersion = "7"
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	for _, tc := range []struct {
		rv, kind, namespace string
	}{{"", "CiliumClusterwideNetworkPolicy", ""}, {"42", "CiliumClusterwideNetworkPolicy", ""}, {"", "CiliumNetworkPolicy", "shop"}, {"42", "CiliumNetworkPolicy", "shop"}} {
		rv := tc.rv
		t.Run(tc.kind+"/rv="+rv, func(t *testing.T) {
			body, _, err := encode(p, true, rv, synth.PolicyKind(tc.kind))
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			u := unstructured.Unstructured{Object: m}
			if got, want := u.GetAPIVersion()+"/"+u.GetKind(), "cilium.io/v2/"+tc.kind; got != want {
				t.Errorf("encode() type = %s, want %s", got, want)
			}
			if got := u.GetNamespace(); got != tc.namespace {
				t.Errorf("encode() namespace = %q, want %q", got, tc.namespace)
			}
			wantLabels := map[string]string{synth.LabelManagedBy: synth.ManagedByValue, "app.kubernetes.io/part-of": "shop"}
			if got := u.GetLabels(); !reflect.DeepEqual(got, wantLabels) {
				t.Errorf("encode() labels = %v, want %v", got, wantLabels)
			}
			if got := u.GetResourceVersion(); got != rv {
				t.Errorf("encode() resourceVersion = %q, want %q", got, rv)
			}
			meta := m["metadata"].(map[string]any)
			for _, k := range []string{"uid", "managedFields", "creationTimestamp"} {
				if _, ok := meta[k]; ok {
					t.Errorf("encode() metadata has %s, want it dropped", k)
				}
			}
			if _, ok := m["status"]; ok {
				t.Error("encode() has status, want it dropped")
			}
			if _, ok := m["spec"].(map[string]any); !ok {
				t.Error("encode() has no spec")
			}
		})
	}
	if p.Labels[synth.LabelManagedBy] != "" {
		t.Error("encode() changed the caller's labels")
	}
}

// Ensure apply outcomes are told apart by content, which also works in dry-run.
func TestClassify(t *testing.T) {
	obj := func(labels map[string]any, spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"metadata": map[string]any{"name": "p", "labels": labels, "resourceVersion": "1"},
			"spec":     spec,
		}}
	}
	ours := map[string]any{synth.LabelManagedBy: synth.ManagedByValue}
	spec := map[string]any{"endpointSelector": map[string]any{}}
	tests := []struct {
		name          string
		before, after *unstructured.Unstructured
		want          Action
	}{
		{"absent before", nil, obj(ours, spec), ActionCreated},
		{"same", obj(ours, spec), obj(ours, spec), ActionUnchanged},
		{"spec changed", obj(ours, spec), obj(ours, map[string]any{"ingress": []any{}}), ActionConfigured},
		{"label added", obj(ours, spec), obj(map[string]any{synth.LabelManagedBy: synth.ManagedByValue, "x": "y"}, spec), ActionConfigured},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.before, tt.after); got != tt.want {
				t.Errorf("classify() = %s, want %s", got, tt.want)
			}
		})
	}
}

// Ensure only errors that can go away are retried.
func TestRetriable(t *testing.T) {
	gr := schema.GroupResource{Group: "cilium.io", Resource: "ciliumclusterwidenetworkpolicies"}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"conflict", apierrors.NewConflict(gr, "p", errors.New("rv")), true},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 1), true},
		{"internal", apierrors.NewInternalError(errors.New("etcd")), true},
		{"unavailable", apierrors.NewServiceUnavailable("starting"), true},
		{"server timeout", apierrors.NewServerTimeout(gr, "patch", 1), true},
		{"connection refused", &url.Error{Op: "Patch", URL: "https://k", Err: &net.OpError{Op: "dial", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}}, true},
		{"connection reset", &url.Error{Op: "Patch", URL: "https://k", Err: &net.OpError{Op: "read", Err: &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}}}, true},
		{"EOF", &url.Error{Op: "Patch", URL: "https://k", Err: io.EOF}, true},
		{"client timeout", &url.Error{Op: "Patch", URL: "https://k", Err: timeoutError{}}, true},
		{"untrusted certificate", &url.Error{Op: "Patch", URL: "https://k", Err: x509.UnknownAuthorityError{}}, false},
		{"invalid", apierrors.NewInvalid(schema.GroupKind{Group: "cilium.io", Kind: "CiliumClusterwideNetworkPolicy"}, "p", nil), false},
		{"forbidden", apierrors.NewForbidden(gr, "p", errors.New("rbac")), false},
		{"not found", apierrors.NewNotFound(gr, "p"), false},
		{"not leader", ErrNotLeader, false},
		{"canceled", context.Canceled, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retriable(tt.err); got != tt.want {
				t.Errorf("retriable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// Ensure a NotOwnedError matches ErrNotOwned and names the other manager.
func TestNotOwnedError(t *testing.T) {
	var err error = &NotOwnedError{Name: "p", ManagedBy: "helm"}
	if !errors.Is(err, ErrNotOwned) {
		t.Error("errors.Is(NotOwnedError, ErrNotOwned) = false, want true")
	}
	if got, want := err.Error(), `ciliumclusterwidenetworkpolicy p exists and is managed by "helm", not recommender`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
