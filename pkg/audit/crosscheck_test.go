package audit_test

// This file is the only place the pkg/policy engine is imported: it is heavy to build and
// marked test-only (policy.LookupFlow), which is why the evaluator re-derives verdicts itself.

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/cilium/pkg/identity"
	"github.com/cilium/cilium/pkg/identity/identitymanager"
	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/option"
	"github.com/cilium/cilium/pkg/policy"
	"github.com/cilium/cilium/pkg/policy/api"
	"github.com/cilium/cilium/pkg/policy/types"
	testidentity "github.com/cilium/cilium/pkg/testutils/identity"
	testpolicy "github.com/cilium/cilium/pkg/testutils/policy"
	"github.com/cilium/cilium/pkg/u8proto"

	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
)

// xEndpoint is one flow end known to both evaluators: Cilium's identity and our peer.
type xEndpoint struct {
	id   *identity.Identity
	peer flows.Peer
}

// The two clusters of the cross-check's mesh: policies are evaluated for the local one.
const (
	xLocal  = "east"
	xRemote = "west"
)

func crossEndpoints() []xEndpoint {
	var out []xEndpoint
	nid := identity.NumericIdentity(1000)
	for _, cluster := range []string{xLocal, xRemote} {
		for _, ns := range []string{"shop", "billing"} {
			for _, app := range []string{"web", "db", "frontend"} {
				nid++
				// The labels Cilium gives a pod: its own, its namespace, the namespace's name
				// label, the cluster and the service account. Flows carry the cluster label too.
				lbls := labels.ParseLabelArray(
					"k8s:app="+app,
					"k8s:io.kubernetes.pod.namespace="+ns,
					"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name="+ns,
					"k8s:io.cilium.k8s.policy.cluster="+cluster,
					"k8s:io.cilium.k8s.policy.serviceaccount=default",
				)
				out = append(out, xEndpoint{
					id: identity.NewIdentityFromLabelArray(nid, lbls),
					peer: flows.Peer{Kind: flows.PeerWorkload, Namespace: ns,
						Labels: flows.NewLabels("k8s:app="+app, "k8s:io.cilium.k8s.policy.cluster="+cluster, "k8s:io.cilium.k8s.policy.serviceaccount=default")},
				})
			}
		}
	}
	for _, e := range []struct {
		nid  identity.NumericIdentity
		name string
	}{{identity.ReservedIdentityHost, "host"}, {identity.ReservedIdentityRemoteNode, "remote-node"}, {identity.ReservedIdentityKubeAPIServer, "kube-apiserver"}} {
		out = append(out, xEndpoint{
			id:   identity.NewIdentityFromLabelArray(e.nid, labels.LabelArray{labels.NewLabel(e.name, "", labels.LabelSourceReserved)}),
			peer: flows.Peer{Kind: flows.PeerEntity, Entity: e.name},
		})
	}
	for i, ip := range []string{"10.1.2.3", "10.2.3.4", "192.0.2.8"} {
		addr := netip.MustParseAddr(ip)
		out = append(out, xEndpoint{
			id:   identity.NewIdentityFromLabelArray(identity.IdentityScopeLocal|identity.NumericIdentity(i+1), labels.GetCIDRLabels(netip.PrefixFrom(addr, 32)).LabelArray()),
			peer: flows.Peer{Kind: flows.PeerWorld, Entity: "world", IP: ip},
		})
	}
	return out
}

// policyGen writes random policies from the constructs both evaluators understand.
type policyGen struct{ r *rand.Rand }

func (g policyGen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

func (g policyGen) subject() string {
	return g.pick(
		"{matchLabels: {app: web}}",
		"{matchLabels: {app: db}}",
		"{matchLabels: {k8s:io.kubernetes.pod.namespace: shop}}",
		"{}",
		"{matchExpressions: [{key: app, operator: In, values: [web, frontend]}]}",
	)
}

func (g policyGen) peer(dir string) string {
	ep, ent, cidr, cidrSet := "fromEndpoints", "fromEntities", "fromCIDR", "fromCIDRSet"
	if dir == "egress" {
		ep, ent, cidr, cidrSet = "toEndpoints", "toEntities", "toCIDR", "toCIDRSet"
	}
	switch g.r.IntN(10) {
	case 0:
		return ep + ": [{matchLabels: {app: " + g.pick("web", "db", "frontend") + "}}]"
	case 8:
		// A peer in a named cluster, as recommender writes them (issue 16).
		return ep + ": [{matchLabels: {app: " + g.pick("web", "db") + ", io.cilium.k8s.policy.cluster: " + g.pick(xLocal, xRemote) + "}}]"
	case 9:
		return ep + ": [{matchLabels: {k8s:io.kubernetes.pod.namespace: " + g.pick("shop", "billing") + ", k8s:io.cilium.k8s.policy.cluster: " + g.pick(xLocal, xRemote) + "}}]"
	case 1:
		return ep + ": [{matchLabels: {app: " + g.pick("web", "db") + ", k8s:io.kubernetes.pod.namespace: " + g.pick("shop", "billing") + "}}]"
	case 2:
		return ep + ": [{matchExpressions: [{key: app, operator: NotIn, values: [db]}]}]"
	case 3:
		return ep + ": [{}]"
	case 4:
		return ent + ": [" + g.pick("world", "cluster", "all", "remote-node", "host", "kube-apiserver", "cluster") + "]"
	case 5:
		return cidr + ": [" + g.pick("10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/24") + "]"
	case 6:
		return cidrSet + ": [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]"
	}
	return "" // ports only: any peer
}

func (g policyGen) ports() string {
	n := g.r.IntN(3)
	if n == 0 {
		return ""
	}
	var ps []string
	for range n {
		p := "{port: \"" + g.pick("80", "443", "5432", "53", "0") + "\""
		if g.r.IntN(4) == 0 {
			p = "{port: \"" + g.pick("80", "5000") + "\", endPort: " + g.pick("443", "5432", "8080")
		}
		ps = append(ps, p+", protocol: "+g.pick("TCP", "UDP", "ANY")+"}")
	}
	return "toPorts: [{ports: [" + strings.Join(ps, ", ") + "]}]"
}

func (g policyGen) rule(dir string) string {
	parts := []string{}
	if p := g.peer(dir); p != "" {
		parts = append(parts, p)
	}
	if p := g.ports(); p != "" {
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		parts = append(parts, g.peer(dir)+"") // an empty rule is valid too: {}
	}
	return "  - {" + strings.Join(parts, ", ") + "}\n"
}

func (g policyGen) policy(i int) string {
	var b strings.Builder
	if g.r.IntN(3) == 0 {
		fmt.Fprintf(&b, "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p%d, namespace: %s}\n", i, g.pick("shop", "billing"))
	} else {
		fmt.Fprintf(&b, "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: p%d}\n", i)
	}
	fmt.Fprintf(&b, "spec:\n  endpointSelector: %s\n", g.subject())
	if g.r.IntN(8) == 0 {
		fmt.Fprintf(&b, "  enableDefaultDeny: {ingress: %t, egress: %t}\n", g.r.IntN(2) == 0, g.r.IntN(2) == 0)
	}
	wrote := false
	for _, sec := range []struct{ name, dir string }{{"ingress", "ingress"}, {"egress", "egress"}, {"ingressDeny", "ingress"}, {"egressDeny", "egress"}} {
		chance := 2
		if strings.HasSuffix(sec.name, "Deny") {
			chance = 5
		}
		if g.r.IntN(chance) != 0 && (wrote || sec.name != "egressDeny") {
			continue
		}
		wrote = true
		fmt.Fprintf(&b, "  %s:\n", sec.name)
		for range 1 + g.r.IntN(2) {
			b.WriteString(g.rule(sec.dir))
		}
	}
	return b.String()
}

// ciliumRepo loads the decoded policies into Cilium's own policy repository.
// policyCluster is what the agent passes to Parse (cmtypes.LocalClusterNameForPolicies).
func ciliumRepo(t *testing.T, d *audit.Decoded, ids []xEndpoint, policyCluster string) (*policy.Repository, identitymanager.IDManager) {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	idmap := identity.IdentityMap{}
	for _, e := range ids {
		idmap[e.id.ID] = e.id.LabelArray
	}
	idmgr := identitymanager.NewIDManager(logger)
	repo := policy.NewPolicyRepository(logger, idmap, nil, nil, idmgr, testpolicy.NewPolicyMetricsNoop())
	repo.GetSelectorCache().SetLocalIdentityNotifier(testidentity.NewDummyIdentityNotifier())
	idmgr.Subscribe(testpolicy.SelectorCacheObserver{Cache: repo.GetSubjectSelectorCache()})
	var rules api.Rules
	for _, p := range d.CCNPs {
		rs, err := p.DeepCopy().Parse(logger, policyCluster)
		if err != nil {
			t.Fatalf("cilium parse %s: %v", p.Name, err)
		}
		rules = append(rules, rs...)
	}
	for _, p := range d.CNPs {
		rs, err := p.DeepCopy().Parse(logger, policyCluster)
		if err != nil {
			t.Fatalf("cilium parse %s: %v", p.Name, err)
		}
		rules = append(rules, rs...)
	}
	repo.MustAddList(rules)
	return repo, idmgr
}

// Ensure our verdicts equal Cilium's own engine (policy.LookupFlow) for random policy sets over
// every pair of endpoints of a two-cluster mesh, several ports, TCP and UDP, under both
// settings of policy-default-local-cluster (issue 16). ICMP is left out: LookupFlow cannot
// check it. Directions whose endpoint is not a local workload are not compared (we do not
// evaluate host or world as policy subjects, and another cluster enforces its own policies).
func TestCrossCheckCiliumEngine(t *testing.T) {
	api.InitEntities(xLocal) // what the agent does at start; the engine reads it
	option.Config.UnsafeDaemonConfigOption.AllowLocalhost = option.AllowLocalhostAlways
	for _, tc := range []struct {
		name          string
		anyCluster    bool
		policyCluster string
	}{
		{"policy-default-local-cluster=true", false, xLocal},
		{"policy-default-local-cluster=false", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			crossCheck(t, audit.Config{ClusterName: xLocal, PolicyAnyCluster: tc.anyCluster}, tc.policyCluster)
		})
	}
}

func crossCheck(t *testing.T, cfg audit.Config, policyCluster string) {
	ids := crossEndpoints()
	sets := 10
	if testing.Short() {
		sets = 4
	}
	r := rand.New(rand.NewPCG(6, 1))
	compared, denied, remote := 0, 0, 0
	for set := range sets {
		g := policyGen{r}
		var docs []string
		for i := range 1 + r.IntN(4) {
			docs = append(docs, g.policy(i))
		}
		yamlText := strings.Join(docs, "---\n")
		d := &audit.Decoded{}
		if err := audit.DecodeYAML(strings.NewReader(yamlText), fmt.Sprintf("set%d", set), d); err != nil {
			t.Fatalf("set %d: %v\n%s", set, err, yamlText)
		}
		ours, err := d.Build(cfg)
		if err != nil {
			t.Fatalf("set %d: %v\n%s", set, err, yamlText)
		}
		repo, idmgr := ciliumRepo(t, d, ids, policyCluster)
		logger := slog.New(slog.DiscardHandler)
		failures := 0
		for _, src := range ids {
			for _, dst := range ids {
				for _, port := range []uint16{53, 80, 443, 5432, 8080} {
					for _, proto := range []flows.Protocol{flows.ProtoTCP, flows.ProtoUDP} {
						u8 := u8proto.TCP
						if proto == flows.ProtoUDP {
							u8 = u8proto.UDP
						}
						want, _, _, err := policy.LookupFlow(logger, repo, idmgr, types.Flow{From: src.id, To: dst.id, Proto: u8, Dport: port})
						if err != nil {
							t.Fatalf("LookupFlow: %v", err)
						}
						ev := &flows.Event{Kind: flows.KindFlow, Src: src.peer, Dst: dst.peer, Proto: proto, Port: port}
						v, err := ours.Evaluate(ev)
						if err != nil {
							t.Fatal(err)
						}
						for _, c := range []struct {
							dir  string
							ours audit.DirectionVerdict
							want types.Decision
						}{{"egress", v.Egress, want.Egress}, {"ingress", v.Ingress, want.Ingress}} {
							if c.ours.Decision == audit.DecisionNotApplicable {
								continue
							}
							compared++
							if c.want != types.DecisionAllowed {
								denied++
							}
							if src.peer.Labels.Cluster() == xRemote || dst.peer.Labels.Cluster() == xRemote {
								remote++
							}
							if (c.ours.Decision == audit.DecisionAllowed) != (c.want == types.DecisionAllowed) {
								failures++
								if failures <= 5 {
									t.Errorf("set %d: %s -> %s %d/%s %s: ours %s, cilium %s", set, src.peer.String(), dst.peer.String(), port, proto, c.dir, c.ours, c.want)
								}
							}
						}
					}
				}
			}
		}
		if failures > 0 {
			t.Errorf("set %d: %d mismatches; policies:\n%s", set, failures, yamlText)
		}
	}
	// Both outcomes must be well represented, or the comparison proves little.
	if denied < compared/10 || denied > compared*9/10 {
		t.Errorf("cilium denied %d of %d direction verdicts; the generator should give a mix", denied, compared)
	}
	if remote < compared/10 {
		t.Errorf("%d of %d verdicts involve the remote cluster; the mesh is not exercised", remote, compared)
	}
	t.Logf("compared %d direction verdicts (%d denied, %d with a remote peer) over %d policy sets", compared, denied, remote, sets)
}
