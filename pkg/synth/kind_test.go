package synth

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	slim_metav1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"
	"github.com/cilium/cilium/pkg/policy/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/recommender/recommender/internal/flowgen"
	"github.com/recommender/recommender/internal/realdata"
	policyaudit "github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
)

// kindCase is a recording and the cluster its proposals are for.
type kindCase struct {
	name    string
	paths   func(t *testing.T) []string
	cluster string
	l7      bool
}

func kindCases() []kindCase {
	bundled := func(names ...string) func(t *testing.T) []string {
		return func(t *testing.T) []string { return recordings(t, names...) }
	}
	mesh := func(t *testing.T) []string { return []string{meshRecording(t)} }
	return []kindCase{
		{name: "starwars", paths: bundled("starwars.jsonl")},
		{name: "starwars-l7", paths: bundled("starwars.jsonl"), l7: true},
		{name: "boutique", paths: bundled("boutique.jsonl")},
		{name: "all", paths: bundled("*.jsonl")},
		{name: "mesh-east", paths: mesh, cluster: flowgen.MeshEast},
		{name: "mesh-west", paths: mesh, cluster: flowgen.MeshWest},
		// Real captures (kind and GKE), each learned on its own as in TestRealCapturesSelfConsistent.
		{name: "real-tcp", paths: real("hubble-otel-basic-sample-400-tcp-flows.jsonl")},
		{name: "real-udp", paths: real("hubble-otel-basic-sample-400-udp-flows.jsonl")},
		{name: "real-http", paths: real("hubble-otel-basic-sample-348-http-flows.jsonl"), l7: true},
	}
}

// real returns the path of a real capture, skipping the test where they are not available.
func real(name string) func(t *testing.T) []string {
	return func(t *testing.T) []string { return []string{realCapture(t, name)} }
}

// realCapture returns the path of the real capture name (internal/realdata), skipping t where
// it is not available.
func realCapture(t *testing.T, name string) string {
	t.Helper()
	dir := realdata.Dir("flows")
	if dir == "" {
		t.Skipf("no real captures (set %s)", realdata.Env)
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("real capture not available: %v", err)
	}
	return p
}

// recordingEvents reads the flows of recordings as the daemon sees them.
func recordingEvents(t *testing.T, paths []string) []*flows.Event {
	t.Helper()
	var out []*flows.Event
	for _, p := range paths {
		for _, ev := range meshEvents(t, p) {
			if ev.Kind == flows.KindFlow {
				out = append(out, ev)
			}
		}
	}
	return out
}

// verdicts evaluates every event against the proposals, added as CCNPs or through render as CNPs.
func verdicts(t *testing.T, res *Result, cfg policyaudit.Config, events []*flows.Event, render func(*v2.CiliumClusterwideNetworkPolicy) (*v2.CiliumNetworkPolicy, error)) []policyaudit.Verdict {
	t.Helper()
	set := policyaudit.NewPolicySet(cfg)
	for _, p := range res.Proposals {
		if render == nil {
			if err := set.AddCCNP(p.Policy); err != nil {
				t.Fatalf("AddCCNP(%s): %v", p.Name, err)
			}
			continue
		}
		c, err := render(p.Policy)
		if err != nil {
			t.Fatalf("render %s as a CNP: %v", p.Name, err)
		}
		if err := set.AddCNP(c); err != nil {
			t.Fatalf("AddCNP(%s): %v", p.Name, err)
		}
	}
	out := make([]policyaudit.Verdict, 0, len(events))
	for _, ev := range events {
		v, err := set.Evaluate(ev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func sameDecision(a, b policyaudit.DirectionVerdict) bool {
	return a.Decision == b.Decision && a.Reason == b.Reason
}

// dropPeerNamespaces is the naive rendering AsCNP must not be: the CCNP's rules as they are,
// but with the namespace taken out of every peer selector, which a CNP then reads as its own.
func dropPeerNamespaces(p *v2.CiliumClusterwideNetworkPolicy) (*v2.CiliumNetworkPolicy, error) {
	c, err := AsCNP(p)
	if err != nil {
		return nil, err
	}
	c.Spec = mapPeers(c.Spec, func(es api.EndpointSelector) api.EndpointSelector {
		delete(es.MatchLabels, namespaceKey)
		return es
	})
	return c, nil
}

// Ensure every proposal rendered as a CiliumNetworkPolicy gives the verdict its CCNP gives on
// every flow of the bundled recordings and of the mesh recording (peers in other namespaces,
// entities, FQDNs, CIDRs and remote clusters included), under both settings of
// policy-default-local-cluster; and that a rendering which lets the CNP's namespace stand in
// for the peers' would not (the comparison can fail).
func TestCNPSameVerdicts(t *testing.T) {
	for _, tc := range kindCases() {
		t.Run(tc.name, func(t *testing.T) {
			paths := tc.paths(t)
			cfg := DefaultConfig()
			cfg.ClusterName, cfg.L7HTTP, cfg.PolicyKind = tc.cluster, tc.l7, KindCNP
			res := synthesize(t, recordingSnapshot(t, paths...), cfg)
			if res.Kind != KindCNP || len(res.Proposals) == 0 {
				t.Fatalf("Result.Kind = %q with %d proposals, want %q and some", res.Kind, len(res.Proposals), KindCNP)
			}
			events := recordingEvents(t, paths)
			naiveDiffers := false
			for _, anyCluster := range []bool{false, true} {
				acfg := policyaudit.Config{ClusterName: res.Cluster, PolicyAnyCluster: anyCluster}
				want := verdicts(t, res, acfg, events, nil)
				got := verdicts(t, res, acfg, events, AsCNP)
				naive := verdicts(t, res, acfg, events, dropPeerNamespaces)
				enforced := 0
				for i, ev := range events {
					if !sameDecision(got[i].Egress, want[i].Egress) || !sameDecision(got[i].Ingress, want[i].Ingress) {
						t.Errorf("any-cluster=%t %s -> %s %s: CNP %v, CCNP %v", anyCluster, ev.Src.String(), ev.Dst.String(), ev.PortString(), got[i], want[i])
					}
					if want[i].Egress.Reason == policyaudit.ReasonAllowRule || want[i].Ingress.Reason == policyaudit.ReasonAllowRule {
						enforced++
					}
					if !sameDecision(naive[i].Egress, want[i].Egress) || !sameDecision(naive[i].Ingress, want[i].Ingress) {
						naiveDiffers = true
					}
				}
				if enforced == 0 {
					t.Errorf("any-cluster=%t: no flow was allowed by a rule: the comparison proves nothing", anyCluster)
				}
			}
			if crossNamespace(res) && !naiveDiffers {
				t.Error("dropping the peers' namespaces changed no verdict although peers live in other namespaces: the comparison cannot fail")
			}
		})
	}
}

// crossNamespace reports whether some proposal allows a peer of another namespace.
func crossNamespace(res *Result) bool {
	for _, p := range res.Proposals {
		ns := p.Workload.Namespace
		for _, r := range p.Policy.Spec.Egress {
			for _, s := range r.ToEndpoints {
				if v, ok := s.MatchLabels[namespaceKey]; ok && v != ns {
					return true
				}
			}
		}
		for _, r := range p.Policy.Spec.Ingress {
			for _, s := range r.FromEndpoints {
				if v, ok := s.MatchLabels[namespaceKey]; ok && v != ns {
					return true
				}
			}
		}
	}
	return false
}

// parsedJSON is what Cilium's parser (ParseToCiliumRule, through CCNP.Parse / CNP.Parse, as
// the agent loads a policy) makes of a policy, without the rule labels that name the object.
func parsedJSON(t *testing.T, rules api.Rules) string {
	t.Helper()
	for _, r := range rules {
		r.Labels = nil
	}
	b, err := json.Marshal(rules)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func parseCCNP(t *testing.T, p *v2.CiliumClusterwideNetworkPolicy, cluster string) string {
	t.Helper()
	rs, err := p.DeepCopy().Parse(discardLogger, cluster)
	if err != nil {
		t.Fatalf("parse CCNP %s: %v", p.Name, err)
	}
	return parsedJSON(t, rs)
}

func parseCNP(t *testing.T, p *v2.CiliumNetworkPolicy, cluster string) string {
	t.Helper()
	rs, err := p.DeepCopy().Parse(discardLogger, cluster)
	if err != nil {
		t.Fatalf("parse CNP %s/%s: %v", p.Namespace, p.Name, err)
	}
	return parsedJSON(t, rs)
}

// Ensure Cilium's own parser makes the same rules of each proposal's CNP as of its CCNP
// (endpointSelector and every peer selector scoped alike), and of FromCNP's way back, for
// every proposal of the recordings.
func TestCNPParsesLikeCCNP(t *testing.T) {
	for _, tc := range kindCases() {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ClusterName, cfg.L7HTTP = tc.cluster, tc.l7
			res := synthesize(t, recordingSnapshot(t, tc.paths(t)...), cfg)
			for _, p := range res.Proposals {
				c, err := AsCNP(p.Policy)
				if err != nil {
					t.Fatalf("AsCNP(%s): %v", p.Name, err)
				}
				if c.Namespace != p.Workload.Namespace || c.Name != p.Name || c.Labels[LabelManagedBy] != ManagedByValue ||
					c.Annotations[AnnotationRevision] != "sha256:"+p.Revision {
					t.Errorf("AsCNP(%s) = %s/%s labels %v annotations %v, want the workload's namespace and the proposal's metadata",
						p.Name, c.Namespace, c.Name, c.Labels, c.Annotations)
				}
				for _, cluster := range []string{res.Cluster, "cluster-from-agent"} {
					want := parseCCNP(t, p.Policy, cluster)
					if got := parseCNP(t, c, cluster); got != want {
						t.Errorf("%s (cluster %q): CNP parses to\n%s\nCCNP to\n%s", p.Name, cluster, got, want)
					}
					if got := parseCCNP(t, FromCNP(c), cluster); got != want {
						t.Errorf("%s (cluster %q): FromCNP(AsCNP) parses to\n%s\nwant\n%s", p.Name, cluster, got, want)
					}
				}
			}
		})
	}
}

func sel(ml map[string]string, reqs ...slim_metav1.LabelSelectorRequirement) api.EndpointSelector {
	return api.NewESFromMatchRequirements(ml, reqs)
}

// Ensure AsCNP keeps the meaning of hand-written peer selectors Cilium scopes differently in
// the two kinds (no namespace, namespace labels, the empty selector, reserved labels, the any:
// source), checked by Cilium's parser, and FromCNP the meaning of a CNP's.
func TestCNPSelectorScoping(t *testing.T) {
	subject := sel(map[string]string{namespaceKey: "shop", "k8s:app": "web"})
	peers := []api.EndpointSelector{
		sel(map[string]string{"k8s:app": "db"}),                                    // no namespace: any (CCNP), own (CNP)
		sel(map[string]string{namespaceLabelsK8s + "team": "a", "k8s:app": "api"}), // namespace labels
		sel(nil), // {}: every endpoint with a namespace (CCNP), every pod of shop (CNP)
		sel(map[string]string{"reserved:host": ""}),
		sel(map[string]string{anyNamespaceKey: "other", "k8s:app": "x"}),
		sel(map[string]string{namespaceKey: "kube-system", "k8s:k8s-app": "kube-dns"}),
		{}, // a nil LabelSelector, as a Go caller may build it
	}
	tcp := api.PortRules{{Ports: []api.PortProtocol{{Port: "80", Protocol: api.ProtoTCP}}}}
	ccnp := &v2.CiliumClusterwideNetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "cilium.io/v2", Kind: v2.CCNPKindDefinition},
		ObjectMeta: metav1.ObjectMeta{Name: "shop-web", ResourceVersion: "7"},
		Spec: &api.Rule{
			EndpointSelector: subject,
			Ingress:          []api.IngressRule{{IngressCommonRule: api.IngressCommonRule{FromEndpoints: peers}, ToPorts: tcp}},
			Egress:           []api.EgressRule{{EgressCommonRule: api.EgressCommonRule{ToEndpoints: peers}, ToPorts: tcp}},
			EgressDeny:       []api.EgressDenyRule{{EgressCommonRule: api.EgressCommonRule{ToEndpoints: peers[:1]}}},
		},
	}
	c, err := AsCNP(ccnp)
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespace != "shop" || c.ResourceVersion != "" {
		t.Errorf("AsCNP namespace %q resourceVersion %q, want shop and none", c.Namespace, c.ResourceVersion)
	}
	if got, want := parseCNP(t, c, "c1"), parseCCNP(t, ccnp, "c1"); got != want {
		t.Errorf("CNP parses to\n%s\nCCNP to\n%s", got, want)
	}
	if !c.Spec.Egress[0].ToEndpoints[0].HasKey(namespaceKey) || ccnp.Spec.Egress[0].ToEndpoints[0].HasKey(namespaceKey) {
		t.Error("AsCNP did not write out the namespace requirement, or changed its input")
	}

	// The other way: a CNP's unscoped peers mean its own namespace. A namespace-label selector
	// (peers[1]) is left out: a CCNP always gets io.kubernetes.pod.namespace Exists added to
	// it, which a CNP does not, so the two parses differ by a requirement every endpoint with
	// namespace labels meets.
	peers = slices.Delete(slices.Clone(peers), 1, 2)
	cnp := &v2.CiliumNetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "cilium.io/v2", Kind: v2.CNPKindDefinition},
		ObjectMeta: metav1.ObjectMeta{Name: "shop-web", Namespace: "shop"},
		Spec: &api.Rule{
			EndpointSelector: sel(map[string]string{"k8s:app": "web"}),
			Egress:           []api.EgressRule{{EgressCommonRule: api.EgressCommonRule{ToEndpoints: peers}, ToPorts: tcp}},
		},
	}
	back := FromCNP(cnp)
	if got, want := parseCCNP(t, back, "c1"), parseCNP(t, cnp, "c1"); got != want {
		t.Errorf("FromCNP parses to\n%s\nthe CNP to\n%s", got, want)
	}
	if back.Namespace != "" || back.Spec.EndpointSelector.MatchLabels[namespaceKey] != "shop" {
		t.Errorf("FromCNP = namespace %q selector %v, want cluster-scoped selecting in shop", back.Namespace, back.Spec.EndpointSelector.MatchLabels)
	}
}

// Ensure policies that a CNP cannot express are refused with ErrNotNamespaced, not rendered
// with another meaning.
func TestAsCNPRefuses(t *testing.T) {
	web := map[string]string{namespaceKey: "shop", "k8s:app": "web"}
	for _, tc := range []struct {
		name  string
		rules []*api.Rule
	}{
		{"no namespace", []*api.Rule{{EndpointSelector: sel(map[string]string{"k8s:app": "web"})}}},
		{"namespace by expression", []*api.Rule{{EndpointSelector: sel(map[string]string{"k8s:app": "web"},
			slim_metav1.LabelSelectorRequirement{Key: namespaceKey, Operator: slim_metav1.LabelSelectorOpIn, Values: []string{"a", "b"}})}}},
		{"host policy", []*api.Rule{{NodeSelector: sel(map[string]string{"k8s:kubernetes.io/hostname": "n1"})}}},
		{"init endpoints", []*api.Rule{{EndpointSelector: sel(map[string]string{namespaceKey: "shop", reservedInitSelectKey: ""})}}},
		{"specs in two namespaces", []*api.Rule{{EndpointSelector: sel(web)}, {EndpointSelector: sel(map[string]string{namespaceKey: "other", "k8s:app": "web"})}}},
		{"no spec", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &v2.CiliumClusterwideNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Specs: tc.rules}
			if _, err := AsCNP(p); !errors.Is(err, ErrNotNamespaced) {
				t.Errorf("AsCNP = %v, want ErrNotNamespaced", err)
			}
		})
	}
}

// Ensure --policy-kind CiliumNetworkPolicy lays the output out per namespace, reads back with
// the one policy-directory reader (audit.LoadDir) to the same rules, and that switching kinds
// removes the other kind's stale files of ours (and a namespace directory left empty) while
// leaving others' files alone.
func TestWriteDirNamespaced(t *testing.T) {
	dir := t.TempDir()
	ccnpCfg := DefaultConfig()
	ccnps := synthesize(t, shop(), ccnpCfg)
	if _, err := WriteDir(dir, ccnps); err != nil {
		t.Fatal(err)
	}
	// A CNP of ours in a namespace no longer proposed, and someone else's file there.
	if err := os.MkdirAll(filepath.Join(dir, "gone"), 0o755); err != nil {
		t.Fatal(err)
	}
	old, err := AsCNP(proposal(t, ccnps, "shop-cart").Policy)
	if err != nil {
		t.Fatal(err)
	}
	old.Namespace, old.Name = "gone", "gone-cart"
	y, err := MarshalCNP(old)
	if err != nil {
		t.Fatal(err)
	}
	foreign := strings.Replace(string(y), "managed-by: recommender", "managed-by: someone-else", 1)
	for path, body := range map[string]string{"gone/gone-cart.yaml": string(y), "kept/other.yaml": foreign} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, path), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	cfg := DefaultConfig()
	cfg.PolicyKind = KindCNP
	res := synthesize(t, shop(), cfg)
	sum, err := WriteDir(dir, res)
	if err != nil {
		t.Fatalf("WriteDir: %v", err)
	}
	var want []string
	for _, p := range res.Proposals {
		want = append(want, filepath.Join(dir, p.Workload.Namespace, p.Name+".yaml"))
	}
	slices.Sort(want)
	if !slices.Equal(sum.Written, want) {
		t.Errorf("written %v, want %v", sum.Written, want)
	}
	wantRemoved := []string{filepath.Join(dir, "gone", "gone-cart.yaml")}
	for _, p := range ccnps.Proposals {
		wantRemoved = append(wantRemoved, filepath.Join(dir, p.Name+".yaml"))
	}
	slices.Sort(wantRemoved)
	if !slices.Equal(sum.Removed, wantRemoved) {
		t.Errorf("removed %v, want %v", sum.Removed, wantRemoved)
	}
	if _, err := os.Stat(filepath.Join(dir, "gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty namespace directory gone/ left behind (%v)", err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "shop", "shop-frontend.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: CiliumNetworkPolicy", "namespace: shop", "managed-by: recommender"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("shop/shop-frontend.yaml lacks %q", want)
		}
	}
	d, err := policyaudit.LoadDir(dir)
	if err != nil || len(d.Rejected) > 0 {
		t.Fatalf("LoadDir: %v %v", err, d.Rejected)
	}
	if len(d.CCNPs) != 0 || len(d.CNPs) != len(res.Proposals)+1 {
		t.Fatalf("read back %d CCNPs and %d CNPs, want 0 and %d", len(d.CCNPs), len(d.CNPs), len(res.Proposals)+1)
	}
	var back []*v2.CiliumClusterwideNetworkPolicy
	for _, c := range d.CNPs {
		if c.Labels[LabelManagedBy] == ManagedByValue {
			back = append(back, FromCNP(c))
		}
	}
	if diff := Diff(policies(res), back); len(diff) != 0 {
		t.Errorf("Diff(proposed, read back as CNPs) = %+v, want none", diff)
	}
}

// Ensure the CNP rendering of the bundled recordings stays as reviewed.
func TestGoldenCNP(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PolicyKind = KindCNP
	res := synthesize(t, recordingSnapshot(t, recordings(t, "starwars.jsonl")...), cfg)
	var b strings.Builder
	for _, p := range res.Proposals {
		y, err := MarshalAs(p.Policy, res.Kind)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("# ---- " + p.Workload.Namespace + "/" + p.Name + ".yaml\n")
		b.Write(y)
	}
	checkGolden(t, "flows-starwars-cnp", []byte(b.String()))
}
