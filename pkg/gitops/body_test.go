package gitops

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/recommender/recommender/internal/mermaidcheck"
)

var update = flag.Bool("update", false, "update .golden files")

// goldenChangeSet is a change set with every kind of change against goldenBase.
func goldenChangeSet() ChangeSet {
	t0 := time.Date(2026, 2, 20, 8, 30, 0, 0, time.UTC)
	frontend := proposal("frontend-ingress", StateAudit, "9f2c1ab")
	frontend.YAML = []byte(frontendYAML)
	// A new policy: every atom is added, as synth.Diff against nothing says.
	frontend.Added = []string{
		"egress to fqdn:api.stripe.com 443/TCP",
		"egress to kube-system/k8s-app=kube-dns 53/UDP dns name api.stripe.com",
		"ingress from shop/app=web 8080/TCP",
		"selects shop/app=frontend",
	}
	frontend.Evidence = []RuleEvidence{
		{Rule: "ingress shop/Deployment/web 8080/TCP", Flows: 18234, FirstSeen: t0, LastSeen: t0.Add(72 * time.Hour),
			SamplePeers: []string{"shop/web-7d9f", "shop/web-a1b2"}},
		{Rule: "egress fqdn:api.stripe.com 443/TCP", Flows: 97, FirstSeen: t0.Add(time.Hour), LastSeen: t0.Add(70 * time.Hour),
			SamplePeers: []string{"api.stripe.com", "a|b", "c", "d", "e", "f", "g"}},
	}
	frontend.Window = Window{Start: t0, Clean: 26 * time.Hour, Required: 7 * 24 * time.Hour, FlowsSeen: 18331}

	backend := proposal("backend-db", StateAudit, "41d0e7c")
	backend.YAML = []byte(backendYAML)
	backend.Added = []string{"egress to db/app=postgres 5432/TCP", "egress to entity:kube-apiserver 443/TCP"}
	// The second one is not in synth's form: listed, not drawn.
	backend.Removed = []string{"egress to cache/app=redis 6379/TCP", "rule with `backticks`"}
	backend.Evidence = []RuleEvidence{{Rule: "egress db/StatefulSet/postgres 5432/TCP", Flows: 5120, FirstSeen: t0, LastSeen: t0.Add(48 * time.Hour),
		SamplePeers: []string{"db/postgres-0"}}}
	backend.WouldDeny = []DeniedFlow{
		{Peer: "cache/redis-0", Direction: "egress", Protocol: "TCP", Port: 6379, Count: 12},
		{Peer: "world 203.0.113.7", Direction: "egress", Protocol: "ICMPv4", Count: 3},
		{Peer: "reserved:kube-apiserver", Direction: "egress", Protocol: "TCP", Port: 443, Count: 1, Learned: true},
	}
	backend.Closed = []string{"ingress"}
	backend.Window = Window{Start: t0.Add(24 * time.Hour), Clean: 90 * time.Minute, Required: 7 * 24 * time.Hour, FlowsSeen: 0}

	payments := proposal("payments", StateEnforced, "c0ffee1")
	payments.YAML = []byte(paymentsYAML)
	payments.Added = []string{"ingress from shop/app=checkout 9000/TCP"}
	payments.Evidence = []RuleEvidence{{Rule: "ingress shop/Deployment/checkout 9000/TCP", Flows: 40211, FirstSeen: t0, LastSeen: t0.Add(7 * 24 * time.Hour)}}
	payments.Window = Window{Start: t0, Clean: 7*24*time.Hour + 3*time.Hour, Required: 7 * 24 * time.Hour, FlowsSeen: 40211}
	payments.Dropped = []DroppedFlow{
		{Peer: "shop/Deployment/fraud-check", Direction: "ingress", Protocol: "TCP", Port: 9000, Count: 12, Policy: "payments", Ours: true,
			Attribution: "default deny: no rule allowed the flow"},
		{Peer: "world", Direction: "ingress", Protocol: "TCP", Port: 9000, Count: 3, Policy: "CiliumNetworkPolicy/shop/block-world",
			Attribution: "named by Hubble"},
	}

	return ChangeSet{frontend, backend, payments, proposal("search", StateAudit, "5e5e5e5")}
}

// The YAML of the golden proposals, as synth.MarshalPolicy writes it.
const (
	frontendYAML = `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  annotations:
    recommender.io/workload: shop/Deployment/frontend
  name: frontend-ingress
spec:
  egress:
  - toEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: kube-system
        k8s:k8s-app: kube-dns
    toPorts:
    - ports:
      - port: "53"
        protocol: UDP
      rules:
        dns:
        - matchName: api.stripe.com
  - toFQDNs:
    - matchName: api.stripe.com
    toPorts:
    - ports:
      - port: "443"
        protocol: TCP
  endpointSelector:
    matchLabels:
      k8s:app: frontend
      k8s:io.kubernetes.pod.namespace: shop
  ingress:
  - fromEndpoints:
    - matchLabels:
        k8s:app: web
        k8s:io.kubernetes.pod.namespace: shop
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
`
	backendYAML = `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  annotations:
    recommender.io/workload: shop/Deployment/backend
  name: backend-db
spec:
  egress:
  - toEndpoints:
    - matchLabels:
        k8s:app: postgres
        k8s:io.kubernetes.pod.namespace: db
    toPorts:
    - ports:
      - port: "5432"
        protocol: TCP
  - toEntities:
    - kube-apiserver
    toPorts:
    - ports:
      - port: "443"
        protocol: TCP
  - toEntities:
    - kube-apiserver
    toPorts:
    - ports:
      - port: "6443"
        protocol: TCP
  endpointSelector:
    matchLabels:
      k8s:app: backend
      k8s:io.kubernetes.pod.namespace: shop
  ingress:
  - {}
`
	paymentsYAML = `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: payments
spec:
  endpointSelector:
    matchLabels:
      k8s:app: payments
      k8s:io.kubernetes.pod.namespace: shop
  ingress:
  - fromEndpoints:
    - matchLabels:
        k8s:app: checkout
        k8s:io.kubernetes.pod.namespace: shop
    toPorts:
    - ports:
      - port: "9000"
        protocol: TCP
`
)

// goldenBase is the base branch the golden change set is planned against.
func goldenBase() map[string][]byte {
	searchOld := proposal("search", StateEnforced, "0ld0ld0")
	backendOld := proposal("backend-db", StateAudit, "1111111")
	paymentsOld := proposal("payments", StateAudit, "c0ffee1")
	legacy := proposal("legacy-cron", StateAudit, "2222222")
	return map[string][]byte{
		"policies/enforced/search.yaml":   render(&searchOld),
		"policies/audit/backend-db.yaml":  render(&backendOld),
		"policies/audit/payments.yaml":    render(&paymentsOld),
		"policies/audit/legacy-cron.yaml": render(&legacy),
	}
}

// Ensure that the PR bodies a reviewer reads stay as reviewed (go test -update rewrites them).
func TestPRBodyGolden(t *testing.T) {
	cs, err := goldenChangeSet().normalize()
	if err != nil {
		t.Fatal(err)
	}
	pl := makePlan("policies", goldenBase(), cs)
	if len(pl.Promotions) != 1 {
		t.Fatalf("promotions = %d, want 1", len(pl.Promotions))
	}
	for name, got := range map[string]string{
		"proposals": prBody(KindProposals, pl.Proposals.Changes) + "\n<!-- commit message -->\n" + pl.Proposals.Message,
		"promotion": prBody(KindPromotion, pl.Promotions[0].Changes) + "\n<!-- commit message -->\n" + pl.Promotions[0].Message,
	} {
		t.Run(name, func(t *testing.T) {
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("body differs from %s (rerun with -update and review the diff):\n%s", golden, got)
			}
		})
	}
}

// Ensure that input order never changes what is written or said.
func TestPlanIgnoresOrder(t *testing.T) {
	cs := goldenChangeSet()
	rev := ChangeSet{cs[3], cs[1], cs[2], cs[0]}
	a, _ := cs.normalize()
	b, _ := rev.normalize()
	if a.fingerprint() != b.fingerprint() {
		t.Errorf("fingerprints differ by order")
	}
	pa, pb := makePlan("policies", goldenBase(), a), makePlan("policies", goldenBase(), b)
	if prBody(KindProposals, pa.Proposals.Changes) != prBody(KindProposals, pb.Proposals.Changes) || pa.Proposals.Message != pb.Proposals.Message {
		t.Errorf("body or message differ by order")
	}
}

// Ensure that evidence alone does not change the fingerprint, and a revision or state does.
func TestFingerprint(t *testing.T) {
	base := ChangeSet{proposal("a", StateAudit, "r1")}
	more := ChangeSet{proposal("a", StateAudit, "r1")}
	more[0].Evidence = []RuleEvidence{{Rule: "x", Flows: 9}}
	rev := ChangeSet{proposal("a", StateAudit, "r2")}
	state := ChangeSet{proposal("a", StateEnforced, "r1")}
	if base.fingerprint() != more.fingerprint() {
		t.Errorf("evidence changed the fingerprint")
	}
	if base.fingerprint() == rev.fingerprint() || base.fingerprint() == state.fingerprint() {
		t.Errorf("revision or state did not change the fingerprint")
	}
}

// Ensure that the plan table in makePlan's comment holds, row by row.
func TestMakePlan(t *testing.T) {
	a := proposal("a", StateAudit, "r1")
	e := proposal("a", StateEnforced, "r1")
	for _, tc := range []struct {
		name       string
		base       map[string][]byte
		cs         ChangeSet
		wantOps    []Op
		wantFiles  []string
		promotions int
	}{
		{"add audit", nil, ChangeSet{a}, []Op{OpAdd}, []string{"p/audit/a.yaml"}, 0},
		{"unchanged", map[string][]byte{"p/audit/a.yaml": render(&a)}, ChangeSet{a}, nil, []string{"p/audit/a.yaml"}, 0},
		{"update", map[string][]byte{"p/audit/a.yaml": []byte(headerPrefix + " old")}, ChangeSet{a}, []Op{OpUpdate}, []string{"p/audit/a.yaml"}, 0},
		{"demote", map[string][]byte{"p/enforced/a.yaml": render(&e)}, ChangeSet{a}, []Op{OpDemote}, []string{"p/audit/a.yaml"}, 0},
		{"promote", map[string][]byte{"p/audit/a.yaml": render(&a)}, ChangeSet{e}, nil, []string{"p/audit/a.yaml"}, 1},
		{"enforced update", map[string][]byte{"p/enforced/a.yaml": []byte(headerPrefix)}, ChangeSet{e}, []Op{OpUpdate}, []string{"p/enforced/a.yaml"}, 0},
		{"add enforced", nil, ChangeSet{e}, []Op{OpAdd}, []string{"p/enforced/a.yaml"}, 0},
		{"both on base", map[string][]byte{"p/audit/a.yaml": render(&a), "p/enforced/a.yaml": render(&e)}, ChangeSet{e}, []Op{OpPromote}, []string{"p/enforced/a.yaml"}, 0},
		{"remove", map[string][]byte{"p/audit/a.yaml": render(&a)}, nil, []Op{OpRemove}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl := makePlan("p", tc.base, tc.cs)
			var ops []Op
			for _, c := range pl.Proposals.Changes {
				ops = append(ops, c.Op)
			}
			var files []string
			for f := range pl.Proposals.Files {
				files = append(files, f)
			}
			if strings.Join(opsToStrings(ops), ",") != strings.Join(opsToStrings(tc.wantOps), ",") ||
				strings.Join(files, ",") != strings.Join(tc.wantFiles, ",") || len(pl.Promotions) != tc.promotions {
				t.Errorf("makePlan = ops %v files %v promotions %d, want %v %v %d", ops, files, len(pl.Promotions), tc.wantOps, tc.wantFiles, tc.promotions)
			}
		})
	}
}

func opsToStrings(ops []Op) []string {
	var s []string
	for _, o := range ops {
		s = append(s, string(o))
	}
	return s
}

// Ensure that an oversized body is cut at a line end, under GitHub's limit, with a note, and
// never inside a graph.
func TestTruncateBody(t *testing.T) {
	long := strings.Repeat("line of text\n", maxBodyRunes/5)
	got := truncateBody(long)
	if n := len([]rune(got)); n > 65536 || !strings.HasSuffix(got, truncatedBodyNotes) {
		t.Errorf("truncated body has %d runes, suffix %q", n, got[len(got)-40:])
	}
	if short := "short\n"; truncateBody(short) != short {
		t.Errorf("short body changed")
	}
	graph := "```mermaid\nflowchart LR\n" + strings.Repeat("  n0 --> n1\n", 100) + "```\n"
	head := strings.Repeat("x", maxBodyRunes-len(graph)/2) + "\n"
	got = truncateBody(head + graph + "after\n")
	if got != strings.TrimSuffix(head, "\n")+truncatedBodyNotes {
		t.Errorf("body cut inside a graph ends %q, want the graph left out", got[len(got)-80:])
	}
}

// Ensure that every graph of the golden bodies is well formed and that Mermaid parses it, and
// that a change set whose graphs do not fit gets a body without graphs rather than a cut one.
func TestPRBodyGraphs(t *testing.T) {
	var blocks []string
	for _, name := range []string{"proposals", "promotion"} {
		raw, err := os.ReadFile(filepath.Join("testdata", name+".golden"))
		if err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, mermaidcheck.CheckDocument(t, name, string(raw), 1)...)
	}
	var changes []Change
	for i := range 400 {
		p := proposal(fmt.Sprintf("p%03d", i), StateAudit, "r1")
		p.YAML = []byte(frontendYAML)
		changes = append(changes, Change{Policy: p.Name, Op: OpAdd, To: "policies/audit/" + p.Name + ".yaml", Proposal: &p})
	}
	for _, tc := range []struct {
		policies int
		graphs   int
	}{{40, 40}, {400, 0}} {
		body := prBody(KindProposals, changes[:tc.policies])
		if n := utf8.RuneCountInString(body); n > maxBodyRunes+len(truncatedBodyNotes) {
			t.Errorf("body of %d policies has %d runes, want at most %d", tc.policies, n, maxBodyRunes)
		}
		if got := mermaidcheck.CheckDocument(t, fmt.Sprint(tc.policies, " policies"), body, tc.graphs); len(got) != tc.graphs {
			t.Errorf("body of %d policies has %d graphs, want %d", tc.policies, len(got), tc.graphs)
		}
		if left := strings.Contains(body, "graphs of the policies are left out"); left != (tc.graphs == 0) {
			t.Errorf("body of %d policies says graphs are left out: %t", tc.policies, left)
		}
	}
	mermaidcheck.Parse(t, blocks)
}

// Ensure that a proposal is drawn from either Cilium policy kind's YAML and that anything
// else, or a policy that allows nothing, is not drawn.
func TestDrawKinds(t *testing.T) {
	cnp := strings.Replace(paymentsYAML, "kind: CiliumClusterwideNetworkPolicy", "kind: CiliumNetworkPolicy", 1)
	for _, tc := range []struct {
		name, yaml string
		drawn      bool
	}{
		{"ccnp", paymentsYAML, true},
		{"cnp", cnp, true},
		{"other kind", strings.Replace(paymentsYAML, "kind: CiliumClusterwideNetworkPolicy", "kind: ConfigMap", 1), false},
		{"no rules", "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: x\nspec: {}\n", false},
		{"not yaml", "{", false},
	} {
		p := proposal("payments", StateAudit, "r1")
		p.YAML = []byte(tc.yaml)
		if d := draw(&p); (d != nil) != tc.drawn {
			t.Errorf("draw(%s) = %v, want drawn %t", tc.name, d, tc.drawn)
		}
	}
}
