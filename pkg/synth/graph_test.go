package synth

import (
	"fmt"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/policy/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/recommender/recommender/internal/mermaidcheck"
	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// hostile is a hand-written policy whose names hold what breaks Mermaid: quotes, brackets,
// slashes, pipes, semicolons, #, <, backticks, a newline, an FQDN wildcard, an IPv6 CIDR.
func hostile() *v2.CiliumClusterwideNetworkPolicy {
	tcp := func(port string) api.PortRules {
		return api.PortRules{{Ports: []api.PortProtocol{{Port: port, Protocol: api.ProtoTCP}}}}
	}
	sel := func(kv ...string) api.EndpointSelector {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return api.NewESFromMatchRequirements(m, nil)
	}
	return &v2.CiliumClusterwideNetworkPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: "cilium.io/v2", Kind: v2.CCNPKindDefinition},
		ObjectMeta: metav1.ObjectMeta{Name: "hostile", Annotations: map[string]string{
			AnnotationWorkload: "shop/Deployment/\"quoted\" [v1] <b>#1;|`x`\nend %% x",
		}},
		Spec: &api.Rule{
			EndpointSelector: sel(namespaceKey, "shop", "k8s:app", `we"b[1]/x`),
			Ingress: []api.IngressRule{
				{IngressCommonRule: api.IngressCommonRule{FromCIDRSet: api.CIDRRuleSlice{{Cidr: "2001:db8::/32"}}}, ToPorts: tcp("8080")},
				{IngressCommonRule: api.IngressCommonRule{FromEndpoints: []api.EndpointSelector{sel(namespaceKey, "o|ther", "k8s:a;b", "c#d<e>")}}, ToPorts: tcp("443")},
				{IngressCommonRule: api.IngressCommonRule{FromEntities: api.EntitySlice{api.EntityWorld}}, ToPorts: api.PortRules{{
					Ports: []api.PortProtocol{{Port: "80", Protocol: api.ProtoTCP}},
					Rules: &api.L7Rules{HTTP: []api.PortRuleHTTP{{Method: "GET", Path: `/a\|b"c"`}}},
				}}},
			},
			Egress: []api.EgressRule{
				{ToFQDNs: api.FQDNSelectorSlice{{MatchPattern: "*.example.com"}, {MatchName: "api.example.com"}}, ToPorts: tcp("443")},
				{EgressCommonRule: api.EgressCommonRule{ToCIDRSet: api.CIDRRuleSlice{{Cidr: "10.0.0.0/8", ExceptCIDRs: []api.CIDR{"10.1.0.0/16"}}}}, ToPorts: tcp("5432")},
				{EgressCommonRule: api.EgressCommonRule{ToEndpoints: []api.EndpointSelector{sel("k8s:app", "end")}}, ToPorts: tcp("1")},
			},
		},
	}
}

// entity matches one Mermaid entity, as mermaidText writes them.
var entityRef = regexp.MustCompile(`#([0-9]+);`)

// labels returns the decoded text of every quoted label of a block, as Mermaid shows it.
func labels(block string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(block, -1) {
		s := strings.ReplaceAll(m[1], "<br/>", "\n")
		out = append(out, html.UnescapeString(entityRef.ReplaceAllString(s, "&#$1;")))
	}
	return out
}

// Ensure that names holding Mermaid's special characters are escaped, parse, and read back as written.
func TestMermaidEscapesLabels(t *testing.T) {
	p := hostile()
	block := PolicyGraph(p, nil, nil).Mermaid()
	blocks := mermaidcheck.CheckDocument(t, "hostile", block, 1)
	got := strings.Join(labels(blocks[0]), "\n")
	for _, want := range []string{
		"shop/Deployment/\"quoted\" [v1] <b>#1;|`x` end %% x", // the newline became a space
		`shop/app=we"b[1]/x`, "cidr:2001:db8::/32", "fqdn-pattern:*.example.com", "fqdn:api.example.com",
		"o|ther/a;b=c#d<e>", "cidr:10.0.0.0/8 except 10.1.0.0/16", "{app=end}", "80/TCP (1 http rule)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("labels lack %q:\n%s", want, got)
		}
	}
	checkGolden(t, "graph-hostile", []byte(block)) // TestGoldenGraphsParse hands it to Mermaid
}

// Ensure that the checker refuses what would break a graph, so that the checks above can fail.
func TestMermaidCheckRefuses(t *testing.T) {
	for name, block := range map[string]string{
		"raw quote":       "flowchart LR\n  n0[\"a\"b\"]\n",
		"raw pipe":        "flowchart LR\n  n0[\"a\"]\n  n1[\"b\"]\n  n0 -->|\"x|y\"| n1\n",
		"undeclared edge": "flowchart LR\n  n0[\"a\"]\n  n0 --> n1\n",
		"twice":           "flowchart LR\n  n0[\"a\"]\n  n0[\"b\"]\n",
		"link index":      "flowchart LR\n  n0[\"a\"]\n  n1[\"b\"]\n  n0 --> n1\n  linkStyle 1 stroke:#000\n",
		"class":           "flowchart LR\n  n0[\"a\"]\n  class n0 added\n",
		"open subgraph":   "flowchart LR\n  subgraph ns0[\"a\"]\n  n0[\"a\"]\n",
		"semicolon":       "flowchart LR\n  n0[\"a;b\"]\n",
	} {
		if err := mermaidcheck.Check(block); err == nil {
			t.Errorf("Check(%s) = nil, want an error", name)
		}
	}
}

// Ensure that every graph in the golden files is well formed and that Mermaid parses it (one
// node process for all of them: starting Mermaid takes seconds).
func TestGoldenGraphsParse(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, path := range paths {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		if strings.Contains(string(raw), "kind: CiliumClusterwideNetworkPolicy") {
			want = strings.Count(string(raw), "# ---- ") // a graph per policy, GRAPH.md's; REPORT.md has none of its own
			want--
		}
		all = append(all, mermaidcheck.CheckDocument(t, path, string(raw), want)...)
	}
	mermaidcheck.Parse(t, all)
}

// Ensure that a pull request's graph marks added and removed rules, draws removed ones, and
// stays as reviewed.
func TestPolicyGraphMarksChanges(t *testing.T) {
	old := proposal(t, synthesize(t, shop(), DefaultConfig()), "shop-frontend").Policy
	snap := shop()
	k := frontend.String()
	snap.Edges[k] = slices.DeleteFunc(snap.Edges[k], func(e aggregate.Edge) bool {
		return e.Peer.Kind == aggregate.PeerCIDR || e.Peer.Kind == aggregate.PeerEntity && e.Peer.Entity == "world"
	})
	snap.Edges[k] = append(snap.Edges[k],
		newEdge(frontend, flows.DirectionEgress, fqdn("api.example.com"), flows.ProtoTCP, 443, []edgeOpt{fwd(3)}),
		newEdge(frontend, flows.DirectionEgress, entity("kube-apiserver"), flows.ProtoTCP, 443, []edgeOpt{fwd(3)}),
		newEdge(frontend, flows.DirectionEgress, peerOf(coredns), flows.ProtoUDP, 53, []edgeOpt{fwd(3), dnsNames("api.example.com")}))
	cur := proposal(t, synthesize(t, snap, DefaultConfig()), "shop-frontend").Policy
	d := Diff([]*v2.CiliumClusterwideNetworkPolicy{old}, []*v2.CiliumClusterwideNetworkPolicy{cur})
	if len(d) != 1 {
		t.Fatalf("Diff = %+v, want one changed policy", d)
	}
	g := PolicyGraph(cur, d[0].Added, d[0].Removed)
	if !g.Marked() {
		t.Errorf("graph of a change is not marked")
	}
	marks := map[GraphMark]int{}
	for _, e := range g.Edges {
		marks[e.Mark]++
	}
	// Added: the fqdn peer. Removed: the CIDR and world. Changed: kube-apiserver (+443), DNS (+1 name).
	if marks[MarkAdded] != 1 || marks[MarkRemoved] != 2 || marks[MarkChanged] != 2 {
		t.Errorf("edge marks = %v, want 1 added, 2 removed, 2 changed", marks)
	}
	block := g.Mermaid()
	mermaidcheck.CheckDocument(t, "marked", block, 1)
	for _, want := range []string{"-.->|\"8080/TCP\"|", "==>|\"443/TCP\"|", "+443/TCP", "(3 dns rules, +1)", "classDef removed", "classDef added", "linkStyle"} {
		if !strings.Contains(block, want) {
			t.Errorf("marked graph lacks %q", want)
		}
	}
	checkGolden(t, "graph-marked", []byte(block))
}

// Ensure that a workload with more peers than the bound draws MaxPolicyGraphEdges of them,
// changed ones first, and counts the rest; and that the cluster graph is bounded too.
func TestGraphsAreBounded(t *testing.T) {
	b := newSnap().workload(redis, "StatefulSet/redis")
	const clients = 3 * MaxPolicyGraphEdges
	for i := range clients {
		c := wl("shop", fmt.Sprintf("app=client-%03d", i))
		b.workload(c, fmt.Sprintf("Deployment/client-%03d", i)).conn(c, redis, flows.ProtoTCP, 6379, fwd(5))
		for j := range 3 { // many connections for GRAPH.md: each client also calls three others
			s := wl("shop", fmt.Sprintf("app=client-%03d", (i+j+1)%clients))
			b.conn(c, s, flows.ProtoTCP, uint16(8000+j), fwd(5))
		}
	}
	res := synthesize(t, b.build(), DefaultConfig())
	p := proposal(t, res, "shop-redis").Policy
	last := Change{Direction: "ingress", Peer: "shop/app=client-119", Port: "6379/TCP"}
	if !slices.Contains(Atoms(p), last) {
		t.Fatalf("atoms lack %v", last)
	}
	g := PolicyGraph(p, []Change{last}, nil)
	// clients ingress edges and the closed egress; one "+N more" edge for the ingress left out.
	omitted := clients + 1 - MaxPolicyGraphEdges
	if len(g.Edges) != MaxPolicyGraphEdges+1 || g.Omitted != omitted {
		t.Errorf("graph has %d edges, %d omitted; want %d and %d", len(g.Edges), g.Omitted, MaxPolicyGraphEdges+1, omitted)
	}
	if g.Edges[0].Mark != MarkAdded {
		t.Errorf("first edge = %+v, want the added one", g.Edges[0])
	}
	block := g.Mermaid()
	if want := fmt.Sprintf("+%d more ingress peers", omitted); !strings.Contains(block, want) {
		t.Errorf("graph lacks %q", want)
	}
	cg := ClusterGraph(res)
	if len(cg.Edges) != MaxClusterGraphEdges || cg.Omitted == 0 {
		t.Errorf("cluster graph has %d edges, %d omitted; want %d and some", len(cg.Edges), cg.Omitted, MaxClusterGraphEdges)
	}
	doc := string(RenderGraph(res))
	if !strings.Contains(doc, fmt.Sprintf("+%d more connections", cg.Omitted)) {
		t.Errorf("GRAPH.md does not count the connections it left out")
	}
	mermaidcheck.CheckDocument(t, "bounded", block+doc, 2)
}

// Ensure that ParseChange reads back every atom String writes, peers and ports with spaces
// included, and refuses what String never writes.
func TestParseChangeRoundTrip(t *testing.T) {
	var atoms []Change
	for _, res := range []*Result{synthesize(t, shop(), DefaultConfig()), synthesize(t, bookinfo(), Config{L7HTTP: true, MinFlows: 1, CIDRPrefixV4: 32, CIDRPrefixV6: 128, QuietDirections: QuietDeny})} {
		for _, p := range res.Proposals {
			atoms = append(atoms, Atoms(p.Policy)...)
		}
	}
	atoms = append(atoms, Atoms(hostile())...)
	atoms = append(atoms,
		Change{Direction: "egress-deny", Peer: "any peer", Port: "any port"},
		Change{Direction: "ingress-deny", Peer: "node {kubernetes.io/os=linux}", Port: "icmp IPv6 128"},
		Change{Direction: "egress", Peer: "service default/kubernetes", Port: "http-metrics/TCP", L7: "http GET /metrics host a b"},
		Change{Direction: "egress", Peer: "ns/env In (a,b) (cluster east)", Port: "1024-2048/UDP"},
		Change{Direction: "ingress", Peer: "cidr-group:office", Port: "0/ANY"},
		Change{Direction: "egress", Peer: "kube-system/k8s-app=kube-dns", Port: "53/UDP", L7: "dns pattern *.example.com"},
	)
	for _, c := range atoms {
		got, err := ParseChange(c.String())
		if err != nil || got != c {
			t.Errorf("ParseChange(%q) = %+v, %v; want %+v", c.String(), got, err, c)
		}
	}
	for _, s := range []string{"", "ingress from shop/app=web", "egress to 443/TCP", "allows everything", "egress to a b c"} {
		if c, err := ParseChange(s); err == nil {
			t.Errorf("ParseChange(%q) = %+v, want an error", s, c)
		}
	}
}
