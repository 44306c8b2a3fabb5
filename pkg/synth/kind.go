package synth

import (
	"errors"
	"fmt"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	slim_metav1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"
	"github.com/cilium/cilium/pkg/policy/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PolicyKind is the kind of Cilium object proposals are written as (--policy-kind). Synthesis
// builds one CiliumClusterwideNetworkPolicy per workload either way (Proposal.Policy); with
// KindCNP the edges (WriteDir, the cluster applier, GitOps) render it as a
// CiliumNetworkPolicy in the workload's namespace with the same meaning (AsCNP), so a team
// holding rights in its own namespaces only can review and apply it (issue 18).
type PolicyKind string

const (
	// KindCCNP writes CiliumClusterwideNetworkPolicies, the default. The zero value means it too.
	KindCCNP PolicyKind = v2.CCNPKindDefinition
	// KindCNP writes one CiliumNetworkPolicy per workload, in the workload's namespace.
	KindCNP PolicyKind = v2.CNPKindDefinition
)

// Namespaced reports whether policies of this kind live in a namespace.
func (k PolicyKind) Namespaced() bool { return k == KindCNP }

// Validate rejects a kind other than the two Cilium policy kinds.
func (k PolicyKind) Validate() error {
	switch k {
	case "", KindCCNP, KindCNP:
		return nil
	}
	return fmt.Errorf("--policy-kind %q: want %s or %s", string(k), KindCCNP, KindCNP)
}

// ErrNotNamespaced is returned by AsCNP for a policy that cannot be a CiliumNetworkPolicy
// without changing what it selects: its endpointSelector names no single namespace (a CNP
// always selects in its own), selects initializing endpoints (they carry no namespace
// label), or it is a host policy (nodeSelector).
var ErrNotNamespaced = errors.New("policy does not select in one namespace")

// Selector keys Cilium's ParseToCiliumRule (pkg/k8s/apis/cilium.io/utils) looks at when it
// scopes a selector to a policy's namespace.
const (
	anyNamespaceKey       = "any:" + "io.kubernetes.pod.namespace"
	namespaceLabelsK8s    = "k8s:io.cilium.k8s.namespace.labels."
	namespaceLabelsAny    = "any:io.cilium.k8s.namespace.labels."
	reservedKeyPrefix     = "reserved:"
	reservedInitSelectKey = "reserved:init"
)

// PolicyNamespace returns the namespace a policy selects its workload in: the
// k8s:io.kubernetes.pod.namespace label of every spec's endpointSelector. Synthesis always
// writes it; a policy without it, or with specs in different namespaces, is ErrNotNamespaced.
func PolicyNamespace(p *v2.CiliumClusterwideNetworkPolicy) (string, error) {
	ns := ""
	for _, r := range rulesOf(p) {
		sel := r.EndpointSelector
		switch {
		case r.NodeSelector.LabelSelector != nil:
			return "", fmt.Errorf("policy %s: %w: it is a host policy (nodeSelector)", p.Name, ErrNotNamespaced)
		case sel.LabelSelector == nil || sel.MatchLabels[namespaceKey] == "":
			return "", fmt.Errorf("policy %s: %w: its endpointSelector has no %s label", p.Name, ErrNotNamespaced, namespaceKey)
		case sel.HasKey(reservedInitSelectKey):
			return "", fmt.Errorf("policy %s: %w: it selects initializing endpoints, which have no namespace", p.Name, ErrNotNamespaced)
		case ns != "" && sel.MatchLabels[namespaceKey] != ns:
			return "", fmt.Errorf("policy %s: %w: its specs select in %s and %s", p.Name, ErrNotNamespaced, ns, sel.MatchLabels[namespaceKey])
		}
		ns = sel.MatchLabels[namespaceKey]
	}
	if ns == "" {
		return "", fmt.Errorf("policy %s: %w: no spec", p.Name, ErrNotNamespaced)
	}
	return ns, nil
}

// AsCNP renders p as a CiliumNetworkPolicy of the same name, labels and annotations in the
// namespace its endpointSelector names (PolicyNamespace), meaning exactly what p means.
//
// Cilium reads the two kinds' selectors differently (ParseToCiliumRule): a CNP's
// endpointSelector always gets the policy's namespace, and a peer selector (fromEndpoints,
// toEndpoints, also in deny rules) that names no namespace gets the policy's namespace in a
// CNP but "any namespace" (io.kubernetes.pod.namespace Exists) in a CCNP. Peer selectors that
// name a reserved label, or already name a namespace (k8s: or any: source), are left alone by
// both. So a peer selector naming no namespace gets the Exists requirement written out (also
// one on namespace labels, io.cilium.k8s.namespace.labels.*, which a CNP leaves unscoped and
// a CCNP scopes with Exists: written out, both parse the same);
// generated peers always name theirs, so for them the rules are copied unchanged. Entities,
// CIDRs, FQDNs and nodes are read the same in both kinds. The revision annotation stays: it
// is the hash of the spec synthesis built, which AsCNP does not change for generated policies.
func AsCNP(p *v2.CiliumClusterwideNetworkPolicy) (*v2.CiliumNetworkPolicy, error) {
	ns, err := PolicyNamespace(p)
	if err != nil {
		return nil, err
	}
	out := &v2.CiliumNetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v2.SchemeGroupVersion.String(), Kind: v2.CNPKindDefinition},
		ObjectMeta: *p.ObjectMeta.DeepCopy(),
	}
	out.Namespace = ns
	out.ResourceVersion, out.UID, out.CreationTimestamp, out.ManagedFields = "", "", metav1.Time{}, nil
	scope := func(es api.EndpointSelector) api.EndpointSelector {
		if namesNoNamespace(es) {
			es.AddMatchExpression(namespaceKey, slim_metav1.LabelSelectorOpExists, []string{})
		}
		return es
	}
	if p.Spec != nil {
		out.Spec = mapPeers(p.Spec, scope)
	}
	for _, r := range p.Specs {
		out.Specs = append(out.Specs, mapPeers(r, scope))
	}
	return out, nil
}

// FromCNP is AsCNP's inverse: the clusterwide form of a CiliumNetworkPolicy (name, labels and
// annotations kept), meaning what the CNP means, as the daemon keeps the policies it owns. A
// peer selector naming no namespace, no reserved label and no namespace labels gets the
// CNP's namespace written out, and so does the endpointSelector.
func FromCNP(p *v2.CiliumNetworkPolicy) *v2.CiliumClusterwideNetworkPolicy {
	out := &v2.CiliumClusterwideNetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v2.SchemeGroupVersion.String(), Kind: v2.CCNPKindDefinition},
		ObjectMeta: *p.ObjectMeta.DeepCopy(),
	}
	out.Namespace = ""
	ns := p.Namespace
	scope := func(es api.EndpointSelector) api.EndpointSelector {
		if namesNoNamespace(es) && !es.HasKeyPrefix(namespaceLabelsK8s) && !es.HasKeyPrefix(namespaceLabelsAny) {
			es.AddMatch(namespaceKey, ns)
		}
		return es
	}
	subject := func(r *api.Rule) *api.Rule {
		r = mapPeers(r, scope)
		if r.EndpointSelector.LabelSelector != nil {
			// A CNP selects in its own namespace whatever its selector says (Cilium overwrites it).
			r.EndpointSelector.AddMatch(namespaceKey, ns)
		}
		return r
	}
	if p.Spec != nil {
		out.Spec = subject(p.Spec)
	}
	for _, r := range p.Specs {
		out.Specs = append(out.Specs, subject(r))
	}
	return out
}

// namesNoNamespace reports whether Cilium would scope a peer selector to a namespace: it
// names neither a reserved label nor io.kubernetes.pod.namespace (k8s: or any: source).
func namesNoNamespace(es api.EndpointSelector) bool {
	return !es.HasKeyPrefix(reservedKeyPrefix) && !es.HasKey(namespaceKey) && !es.HasKey(anyNamespaceKey)
}

// mapPeers returns a deep copy of r with every endpoint peer selector (allow and deny, both
// directions) passed through f.
func mapPeers(r *api.Rule, f func(api.EndpointSelector) api.EndpointSelector) *api.Rule {
	out := r.DeepCopy()
	each := func(sels []api.EndpointSelector) {
		for i := range sels {
			if sels[i].LabelSelector == nil {
				// Cilium reads a missing selector as the empty one ({}), which it then scopes.
				sels[i] = api.NewESFromMatchRequirements(nil, nil)
			}
			sels[i] = f(sels[i])
		}
	}
	for i := range out.Ingress {
		each(out.Ingress[i].FromEndpoints)
	}
	for i := range out.IngressDeny {
		each(out.IngressDeny[i].FromEndpoints)
	}
	for i := range out.Egress {
		each(out.Egress[i].ToEndpoints)
	}
	for i := range out.EgressDeny {
		each(out.EgressDeny[i].ToEndpoints)
	}
	return out
}

func rulesOf(p *v2.CiliumClusterwideNetworkPolicy) []*api.Rule {
	var out []*api.Rule
	if p.Spec != nil {
		out = append(out, p.Spec)
	}
	return append(out, p.Specs...)
}

// MarshalAs renders a proposal's policy as kind: MarshalPolicy for a CCNP, AsCNP and
// MarshalCNP for a CNP.
func MarshalAs(p *v2.CiliumClusterwideNetworkPolicy, kind PolicyKind) ([]byte, error) {
	if !kind.Namespaced() {
		return MarshalPolicy(p)
	}
	c, err := AsCNP(p)
	if err != nil {
		return nil, err
	}
	return MarshalCNP(c)
}
