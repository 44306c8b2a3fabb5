package synth

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/policy/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/recommender/recommender/pkg/aggregate"
	policyaudit "github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
)

var update = flag.Bool("update", false, "update .golden files")

// renderAll is the golden form of a result: every policy file, then the report and the graph.
func renderAll(t *testing.T, res *Result) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, p := range res.Proposals {
		y, err := MarshalPolicy(p.Policy)
		if err != nil {
			t.Fatalf("MarshalPolicy(%s): %v", p.Name, err)
		}
		b.WriteString("# ---- " + p.Name + ".yaml\n")
		b.Write(y)
	}
	b.WriteString("# ---- " + ReportFile + "\n")
	b.Write(RenderReport(res))
	b.WriteString("# ---- " + GraphFile + "\n")
	b.Write(RenderGraph(res))
	return b.Bytes()
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run with -update to accept):\n%s", path, lineDiff(string(want), string(got)))
	}
}

// lineDiff shows the first differing lines, enough to see what changed.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n- " + wl + "\n+ " + gl
		}
	}
	return ""
}

func synthesize(t *testing.T, snap *aggregate.Snapshot, cfg Config) *Result {
	t.Helper()
	res, err := Synthesize(snap, cfg)
	if err != nil {
		t.Fatalf("Synthesize: %v", err)
	}
	return res
}

func policies(res *Result) []*v2.CiliumClusterwideNetworkPolicy {
	out := make([]*v2.CiliumClusterwideNetworkPolicy, 0, len(res.Proposals))
	for _, p := range res.Proposals {
		out = append(out, p.Policy)
	}
	return out
}

// Ensure generated policies and reports stay as reviewed, and are byte-identical on a
// second run and with edges in another order.
func TestGoldenSnapshots(t *testing.T) {
	l7 := DefaultConfig()
	l7.L7HTTP = true
	strict := DefaultConfig()
	strict.MinFlows = 100
	strict.MinObserve = 2 * time.Hour
	wide := DefaultConfig()
	wide.CIDRPrefixV4 = 24
	logged := DefaultConfig()
	logged.PolicyLog = true
	for _, tc := range []struct {
		name string
		snap func() *aggregate.Snapshot
		cfg  Config
	}{
		{"shop", shop, DefaultConfig()},
		{"bookinfo", bookinfo, DefaultConfig()},
		{"bookinfo-l7", bookinfo, l7},
		{"shop-l7", shop, l7},
		{"shop-cidr24", shop, wide},
		{"shop-too-little-evidence", shop, strict},
		{"policy-log", policyLogSnap, logged},
		{"empty", func() *aggregate.Snapshot { return nil }, DefaultConfig()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := renderAll(t, synthesize(t, tc.snap(), tc.cfg))
			checkGolden(t, tc.name, got)
			shuffled := tc.snap()
			if shuffled != nil {
				for k := range shuffled.Edges {
					slices.Reverse(shuffled.Edges[k])
				}
				slices.Reverse(shuffled.Workloads)
			}
			if again := renderAll(t, synthesize(t, shuffled, tc.cfg)); !bytes.Equal(got, again) {
				t.Errorf("second run with reordered input differs:\n%s", lineDiff(string(got), string(again)))
			}
		})
	}
}

// atomStrings renders a policy's atoms for table tests.
func atomStrings(p *v2.CiliumClusterwideNetworkPolicy) []string {
	var out []string
	for _, a := range Atoms(p) {
		out = append(out, a.String())
	}
	return out
}

func proposal(t *testing.T, res *Result, name string) *Proposal {
	t.Helper()
	for _, p := range res.Proposals {
		if p.Name == name {
			return p
		}
	}
	var names []string
	for _, p := range res.Proposals {
		names = append(names, p.Name)
	}
	t.Fatalf("no proposal %s; have %v (skipped %+v)", name, names, res.Skipped)
	return nil
}

// Ensure each construct becomes the rule it should, and nothing wider.
func TestConstructs(t *testing.T) {
	l7 := DefaultConfig()
	l7.L7HTTP = true
	res := synthesize(t, shop(), DefaultConfig())
	resL7 := synthesize(t, shop(), l7)
	for _, tc := range []struct {
		name   string
		res    *Result
		policy string
		want   []string
		absent []string
	}{
		{"workload selector skips version labels", res, "shop-redis", []string{"selects shop/app=redis"}, nil},
		{"ingress from workload with observed port only", res, "shop-cart",
			[]string{"ingress from shop/app=frontend 7070/TCP"}, []string{"ingress from shop/app=frontend 22/TCP"}},
		{"egress to workload", res, "shop-frontend", []string{"egress to shop/app=cart 7070/TCP"}, nil},
		{"icmp", res, "shop-cart", []string{"ingress from shop/app=frontend icmp IPv4 8"}, nil},
		{"collapsed range", res, "shop-redis", []string{"ingress from shop/app=cart 30000-30100/TCP"}, nil},
		{"dns to the observed server with names", res, "shop-frontend", []string{
			"egress to kube-system/k8s-app=kube-dns 53/TCP dns name api.stripe.com",
			"egress to kube-system/k8s-app=kube-dns 53/UDP dns pattern *.shop.svc.cluster.local",
		}, []string{"egress to kube-system/k8s-app=kube-dns 53/UDP"}},
		{"fqdn", res, "shop-frontend", []string{"egress to fqdn:api.stripe.com 443/TCP"}, nil},
		{"cidr", res, "shop-frontend", []string{"egress to cidr:203.0.113.7/32 443/TCP"}, nil},
		{"entities", res, "shop-frontend", []string{"egress to entity:kube-apiserver 6443/TCP", "ingress from entity:host 8080/TCP", "ingress from entity:world 8080/TCP"}, nil},
		{"audit evidence allows", res, "shop-redis", []string{"ingress from entity:remote-node 6379/TCP"}, nil},
		{"coredns ingress from its client", res, "kube-system-coredns", []string{"ingress from shop/app=frontend 53/UDP"}, nil},
		{"no L7 without --l7", res, "shop-cart", nil, []string{"ingress from shop/app=frontend 7070/TCP http GET /cart/[0-9]+(\\?.*)?"}},
		{"http rules", resL7, "shop-cart", []string{
			"ingress from shop/app=frontend 7070/TCP http GET /cart/[0-9]+(\\?.*)?",
			"ingress from shop/app=frontend 7070/TCP http POST /cart/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/items(\\?.*)?",
		}, []string{"ingress from shop/app=frontend 7070/TCP", "ingress from shop/app=frontend 7070/TCP http POST /cart/[0-9]+(\\?.*)?"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := atomStrings(proposal(t, tc.res, tc.policy).Policy)
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("%s: missing %q; have:\n%s", tc.policy, w, strings.Join(got, "\n"))
				}
			}
			for _, a := range tc.absent {
				if slices.Contains(got, a) {
					t.Errorf("%s: has %q, want it absent", tc.policy, a)
				}
			}
		})
	}
}

// Ensure review findings name every widening or fallback.
func TestFindings(t *testing.T) {
	res := synthesize(t, shop(), DefaultConfig())
	has := func(name string, k FindingKind, detail string) bool {
		for _, f := range proposal(t, res, name).Review {
			if f.Kind == k && strings.Contains(f.Peer+" "+f.Ports+" "+f.Detail, detail) {
				return true
			}
		}
		return false
	}
	for _, tc := range []struct {
		policy string
		kind   FindingKind
		detail string
	}{
		{"shop-cart", FindingPolicyDrop, "22/TCP"},
		{"shop-frontend", FindingPolicyDrop, "22/TCP"},
		{"shop-frontend", FindingCIDR, "203.0.113.7/32"},
		{"shop-frontend", FindingEntity, "entity:world"},
		{"shop-redis", FindingPortRange, "30000-30100/TCP"},
		{"shop-redis", FindingAuditOnly, "entity:remote-node"},
	} {
		if !has(tc.policy, tc.kind, tc.detail) {
			t.Errorf("%s: no %s finding about %q; have %+v", tc.policy, tc.kind, tc.detail, proposal(t, res, tc.policy).Review)
		}
	}
}

// Ensure the selector is the smallest unique label set, preferring application labels, and
// excludes superset workloads with DoesNotExist.
func TestSelector(t *testing.T) {
	for _, tc := range []struct {
		name   string
		w      aggregate.WorkloadKey
		others []aggregate.WorkloadKey
		want   string
	}{
		{"alone: preferred label", wl("a", "app=web", "team=x"), nil, "a/app=web"},
		{"app.kubernetes.io/name first", wl("a", "app=web", "app.kubernetes.io/name=web"), nil, "a/app.kubernetes.io/name=web"},
		{"shared app label needs a second", wl("a", "app=web", "component=api"), []aggregate.WorkloadKey{wl("a", "app=web", "component=worker")}, "a/component=api"},
		{"other namespace does not matter", wl("a", "app=web"), []aggregate.WorkloadKey{wl("b", "app=web")}, "a/app=web"},
		{"subset of another: DoesNotExist", wl("a", "app=web"), []aggregate.WorkloadKey{wl("a", "app=web", "role=canary")}, "a/!role,app=web"},
		{"version never selected", wl("a", "app=web", "version=v1"), []aggregate.WorkloadKey{wl("a", "app=web", "version=v2")}, "a/app=web"},
		{"version never used to exclude", wl("a", "app=web"), []aggregate.WorkloadKey{wl("a", "app=web", "version=v2", "track=canary")}, "a/!track,app=web"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := universe{}
			u.add("", tc.w)
			for _, o := range tc.others {
				u.add("", o)
			}
			c, err := u.choose("", tc.w)
			if err != nil {
				t.Fatalf("choose(%s): %v", tc.w, err)
			}
			sel := c.endpointSelector(tc.w.Namespace, "")
			if got := selectorString(&sel); got != tc.want {
				t.Errorf("choose(%s) = %s, want %s", tc.w, got, tc.want)
			}
		})
	}
}

// Ensure every reason for skipping a workload is reported, and an empty run says why.
func TestSkipReasons(t *testing.T) {
	minFlows := DefaultConfig()
	minFlows.MinFlows = 1000
	minObs := DefaultConfig()
	minObs.MinObserve = 24 * time.Hour
	onlyVersion := wl("a", "version=1")
	client := wl("a", "app=client")
	for _, tc := range []struct {
		name      string
		snap      *aggregate.Snapshot
		cfg       Config
		workload  aggregate.WorkloadKey
		reason    SkipReason
		emptyWant string
	}{
		{"few flows", shop(), minFlows, cart, SkipFewFlows, "too few flows"},
		{"short observation", shop(), minObs, cart, SkipShortObservation, "observed too briefly"},
		{"policy drops only", newSnap().conn(client, cart, flows.ProtoTCP, 22, policyDrops(5)).build(), DefaultConfig(), cart, SkipNoAllowedTraffic, "no allowed traffic"},
		{"no stable labels", newSnap().out(onlyVersion, fqdn("example.com"), flows.ProtoTCP, 443, fwd(3)).build(), DefaultConfig(), onlyVersion, SkipNoStableLabels, "no stable labels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := synthesize(t, tc.snap, tc.cfg)
			i := slices.IndexFunc(res.Skipped, func(s Skip) bool { return s.Workload.String() == tc.workload.String() })
			if i < 0 {
				t.Fatalf("%s not skipped; skipped %+v", tc.workload, res.Skipped)
			}
			if got := res.Skipped[i]; got.Reason != tc.reason || got.Detail == "" {
				t.Errorf("skip %s = %q (%s), want %q with a detail", tc.workload, got.Reason, got.Detail, tc.reason)
			}
			if len(res.Proposals) == 0 && !strings.Contains(res.Empty, tc.emptyWant) {
				t.Errorf("Empty = %q, want it to mention %q", res.Empty, tc.emptyWant)
			}
		})
	}
	t.Run("no flows", func(t *testing.T) {
		res := synthesize(t, &aggregate.Snapshot{}, DefaultConfig())
		if !strings.Contains(res.Empty, "no flows") {
			t.Errorf("Empty = %q, want it to say there were no flows", res.Empty)
		}
	})
	t.Run("flows without workloads", func(t *testing.T) {
		res := synthesize(t, &aggregate.Snapshot{Flows: 12}, DefaultConfig())
		if !strings.Contains(res.Empty, "12 flows were read but none involved a workload") {
			t.Errorf("Empty = %q", res.Empty)
		}
	})
}

// Ensure Validate refuses policies that select nothing or allow everything, and accepts
// what Synthesize writes.
func TestValidateRefusals(t *testing.T) {
	good := func() *v2.CiliumClusterwideNetworkPolicy {
		return proposal(t, synthesize(t, shop(), DefaultConfig()), "shop-frontend").Policy.DeepCopy()
	}
	if err := Validate(good(), "default"); err != nil {
		t.Fatalf("Validate(generated) = %v", err)
	}
	web := api.NewESFromMatchRequirements(map[string]string{namespaceKey: "a", "k8s:app": "web"}, nil)
	port := api.PortRules{{Ports: []api.PortProtocol{{Port: "80", Protocol: api.ProtoTCP}}}}
	for _, tc := range []struct {
		name   string
		mutate func(p *v2.CiliumClusterwideNetworkPolicy)
		want   error
	}{
		{"empty selector", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.EndpointSelector = api.NewESFromMatchRequirements(map[string]string{}, nil)
		}, ErrSelectsNothing},
		{"namespace only", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.EndpointSelector = api.NewESFromMatchRequirements(map[string]string{namespaceKey: "a"}, nil)
		}, ErrSelectsNothing},
		{"no namespace", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.EndpointSelector = api.NewESFromMatchRequirements(map[string]string{"k8s:app": "web"}, nil)
		}, ErrSelectsNothing},
		{"entity all", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.Egress = append(p.Spec.Egress, api.EgressRule{EgressCommonRule: api.EgressCommonRule{ToEntities: api.EntitySlice{api.EntityAll}}, ToPorts: port})
		}, ErrAllowsEverything},
		{"world all ports", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.Egress = append(p.Spec.Egress, api.EgressRule{EgressCommonRule: api.EgressCommonRule{ToEntities: api.EntitySlice{api.EntityWorld}}})
		}, ErrAllowsEverything},
		{"world-ipv4", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.Egress = append(p.Spec.Egress, api.EgressRule{EgressCommonRule: api.EgressCommonRule{ToEntities: api.EntitySlice{api.EntityWorldIPv4}}, ToPorts: port})
		}, ErrAllowsEverything},
		{"wildcard peer", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.Ingress = append(p.Spec.Ingress, api.IngressRule{IngressCommonRule: api.IngressCommonRule{FromEndpoints: []api.EndpointSelector{api.NewESFromMatchRequirements(map[string]string{}, nil)}}, ToPorts: port})
		}, ErrAllowsEverything},
		{"no peer", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.Ingress = append(p.Spec.Ingress, api.IngressRule{ToPorts: port})
		}, ErrAllowsEverything},
		{"all addresses", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.Egress = append(p.Spec.Egress, api.EgressRule{EgressCommonRule: api.EgressCommonRule{ToCIDRSet: api.CIDRRuleSlice{{Cidr: "0.0.0.0/0"}}}, ToPorts: port})
		}, ErrAllowsEverything},
		{"any name", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.Egress = append(p.Spec.Egress, api.EgressRule{ToFQDNs: api.FQDNSelectorSlice{{MatchPattern: "*"}}, ToPorts: port})
		}, ErrAllowsEverything},
		{"any port", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.Ingress = append(p.Spec.Ingress, api.IngressRule{IngressCommonRule: api.IngressCommonRule{FromEndpoints: []api.EndpointSelector{web}},
				ToPorts: api.PortRules{{Ports: []api.PortProtocol{{Port: "0", Protocol: api.ProtoAny}}}}})
		}, ErrAllowsEverything},
		{"cilium rejects mixed peers", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.Ingress = append(p.Spec.Ingress, api.IngressRule{IngressCommonRule: api.IngressCommonRule{
				FromEndpoints: []api.EndpointSelector{web}, FromEntities: api.EntitySlice{api.EntityHost}}, ToPorts: port})
		}, ErrCilium},
		{"cilium rejects bad http regex", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.Ingress = append(p.Spec.Ingress, api.IngressRule{IngressCommonRule: api.IngressCommonRule{FromEndpoints: []api.EndpointSelector{web}},
				ToPorts: api.PortRules{{Ports: []api.PortProtocol{{Port: "80", Protocol: api.ProtoTCP}}, Rules: &api.L7Rules{HTTP: api.PortRulesHTTP{{Path: "(("}}}}}})
		}, ErrCilium},
		{"schema rejects a long log value", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.Log.Value = strings.Repeat("x", 40)
		}, ErrSchema},
		{"schema rejects an unknown authentication mode", func(p *v2.CiliumClusterwideNetworkPolicy) {
			p.Spec.Ingress[0].Authentication = &api.Authentication{Mode: "sometimes"}
		}, ErrSchema},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := good()
			tc.mutate(p)
			err := Validate(p, "default")
			if !errors.Is(err, tc.want) {
				t.Errorf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
}

// Ensure fields the CRD does not declare are found (the API server would prune them).
func TestUnknownFields(t *testing.T) {
	s, err := ccnpSchema()
	if err != nil {
		t.Fatal(err)
	}
	obj := map[string]any{
		"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
		"metadata": map[string]any{"name": "x", "anything": 1},
		"spec": map[string]any{
			"endpointSelector": map[string]any{"matchLabels": map[string]any{"k8s:app": "web"}},
			"ingress":          []any{map[string]any{"fromEndpoint": []any{}}},
		},
	}
	got := unknownFields(s, obj, "")
	if !slices.Equal(got, []string{".spec.ingress[0].fromEndpoint"}) {
		t.Errorf("unknownFields = %v, want [.spec.ingress[0].fromEndpoint]", got)
	}
}

// Ensure names are DNS-1123, deterministic and unique even when workloads share a name.
func TestNames(t *testing.T) {
	a := wl("team", "app=api", "variant=a")
	b := wl("team", "app=api", "variant=b")
	snap := newSnap().workload(a, "Deployment/api").workload(b, "Deployment/api").
		out(a, fqdn("example.com"), flows.ProtoTCP, 443, fwd(1)).
		out(b, fqdn("example.com"), flows.ProtoTCP, 443, fwd(1)).
		out(wl("Weird_NS", "app=X.Y"), fqdn("example.com"), flows.ProtoTCP, 443, fwd(1)).build()
	res := synthesize(t, snap, DefaultConfig())
	var names []string
	for _, p := range res.Proposals {
		names = append(names, p.Name)
		if p.Policy.Name != p.Name {
			t.Errorf("policy name %s != proposal name %s", p.Policy.Name, p.Name)
		}
	}
	want := []string{"team-api-" + shortHash(a.String()), "team-api-" + shortHash(b.String()), "weird-ns-x-y"}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("names = %v, want %v", names, want)
	}
	if got := sanitizeName(strings.Repeat("a", 100)); len(got) > maxNameLen {
		t.Errorf("sanitizeName(100 chars) has %d chars", len(got))
	}
}

// Ensure generated HTTP rules, compiled with Go's regexp (RE2, the engine family Envoy uses)
// and anchored as Envoy anchors them (the whole :path, query included), match the requests
// seen and reject requests that were not.
func TestHTTPRulesMatchWhatEnvoySees(t *testing.T) {
	const id = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
	const sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	for _, tc := range []struct {
		name      string
		seen      []aggregate.HTTPSample
		match     []string // "METHOD :path"
		never     []string
		wantRules int
	}{
		{
			name:      "numeric ids and query strings",
			seen:      []aggregate.HTTPSample{{Method: "GET", Path: "/api/orders/42"}, {Method: "GET", Path: "/api/orders/7"}, {Method: "GET", Path: "/api/orders"}},
			match:     []string{"GET /api/orders/42", "GET /api/orders/42?expand=items", "GET /api/orders/1234567", "GET /api/orders", "GET /api/orders?id=42&page=2"},
			never:     []string{"GET /api/orders/42/cancel", "GET /api/orders/abc", "DELETE /api/orders/42", "get /api/orders/42", "GET /api/orders/", "GET /api/ordersX", "POST /api/orders", "GET /api/orders/42x", "GET /api/admin"},
			wantRules: 2,
		},
		{
			name:      "uuids and digests keep their shape",
			seen:      []aggregate.HTTPSample{{Method: "PUT", Path: "/cart/" + id + "/items"}, {Method: "GET", Path: "/blobs/" + sha}},
			match:     []string{"PUT /cart/00000000-1111-4222-8333-444444444444/items", "PUT /cart/" + id + "/items?x=1", "GET /blobs/" + strings.Repeat("a1", 32)},
			never:     []string{"PUT /cart/" + id, "PUT /cart/../admin/items", "PUT /cart/42/items", "GET /blobs/" + sha[:40], "GET /blobs/" + sha + "/raw", "GET /blobs/decade"},
			wantRules: 2,
		},
		{
			name:      "words of hex letters stay literal",
			seen:      []aggregate.HTTPSample{{Method: "GET", Path: "/feed/deadbeefdeadbeefcafe"}},
			match:     []string{"GET /feed/deadbeefdeadbeefcafe"},
			never:     []string{"GET /feed/0123456789abcdef0123"},
			wantRules: 1,
		},
		{
			name:      "grpc methods exact",
			seen:      []aggregate.HTTPSample{{Method: "POST", Path: "/hipstershop.CartService/GetCart"}, {Method: "POST", Path: "/grpc.health.v1.Health/Check"}},
			match:     []string{"POST /hipstershop.CartService/GetCart", "POST /grpc.health.v1.Health/Check"},
			never:     []string{"POST /hipstershop.CartService/EmptyCart", "POST /hipstershop.CartService/GetCart?x=1", "GET /hipstershop.CartService/GetCart", "POST /hipstershopXCartService/GetCart", "POST /hipstershop.CartService/GetCartX"},
			wantRules: 2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules := httpRulesFor(tc.seen)
			if len(rules) != tc.wantRules {
				t.Errorf("httpRulesFor(%v) = %d rules %v, want %d", tc.seen, len(rules), rules, tc.wantRules)
			}
			type compiled struct{ method, path *regexp.Regexp }
			var res []compiled
			for _, r := range rules {
				res = append(res, compiled{regexp.MustCompile("^(?:" + r.Method + ")$"), regexp.MustCompile("^(?:" + r.Path + ")$")})
			}
			allows := func(req string) bool {
				m, p, _ := strings.Cut(req, " ")
				return slices.ContainsFunc(res, func(c compiled) bool { return c.method.MatchString(m) && c.path.MatchString(p) })
			}
			for _, s := range tc.seen {
				if req := s.Method + " " + s.Path; !allows(req) {
					t.Errorf("seen request %q does not match %v", req, rules)
				}
			}
			for _, req := range tc.match {
				if !allows(req) {
					t.Errorf("%q does not match %v", req, rules)
				}
			}
			for _, req := range tc.never {
				if allows(req) {
					t.Errorf("%q matches %v, want no match", req, rules)
				}
			}
		})
	}
}

// Ensure two requests get the same path rule exactly when flows.HTTPPathShape gives them the
// same shape: the aggregator keeps one sample per shape, so a shape that merged paths synth
// tells apart would lose rules, and one that split them would waste the samples kept.
func TestPathRegexFollowsShape(t *testing.T) {
	const sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	reqs := [][2]string{
		{"GET", "/"}, {"GET", "/api/orders"}, {"GET", "/api/orders/42"}, {"GET", "/api/orders/7"},
		{"get", "/api/orders/7"}, {"GET", "/api/orders/42/"}, {"GET", "/api/orders/abc"},
		{"PUT", "/cart/3fa85f64-5717-4562-b3fc-2c963f66afa6/items"}, {"PUT", "/cart/00000000-1111-4222-8333-444444444444/items"},
		{"GET", "/blobs/" + sha}, {"GET", "/blobs/" + strings.Repeat("a1", 32)}, {"GET", "/blobs/" + sha[:40]},
		{"GET", "/feed/deadbeefdeadbeefcafe"}, {"GET", "/a/{int}"}, {"GET", "/a/1"},
		{"POST", "/hipstershop.CartService/GetCart"}, {"POST", "/pkg.Svc/deadbeefdeadbeef1234"}, {"POST", "/pkg.Svc/deadbeefdeadbeef5678"},
		{"GET", "/pkg.Svc/deadbeefdeadbeef1234"}, {"GET", "/pkg.Svc/deadbeefdeadbeef5678"},
	}
	for i, a := range reqs {
		for _, b := range reqs[i+1:] {
			sameShape := flows.HTTPPathShape(a[0], a[1]) == flows.HTTPPathShape(b[0], b[1])
			sameRule := pathRegex(strings.ToUpper(a[0]), a[1]) == pathRegex(strings.ToUpper(b[0]), b[1])
			if sameShape != sameRule {
				t.Errorf("%v and %v: same shape %t, same path rule %t (%q, %q)", a, b, sameShape, sameRule,
					pathRegex(strings.ToUpper(a[0]), a[1]), pathRegex(strings.ToUpper(b[0]), b[1]))
			}
		}
	}
}

func TestDNSRules(t *testing.T) {
	for _, tc := range []struct {
		name       string
		names      []string
		truncated  bool
		subdomains bool
		want       []string
	}{
		{"few names stay exact", []string{"a.example.com", "b.example.com"}, false, false, []string{"name a.example.com", "name b.example.com"}},
		{"family becomes one-label pattern", []string{"a.ns.svc.cluster.local", "b.ns.svc.cluster.local", "c.ns.svc.cluster.local", "x.org"}, false, false,
			[]string{"pattern *.ns.svc.cluster.local", "name x.org"}},
		{"never a pattern on a one-label parent", []string{"a.com", "b.com", "c.com"}, false, false, []string{"name a.com", "name b.com", "name c.com"}},
		{"truncated allows every lookup", []string{"a.com"}, true, false, []string{"pattern *"}},
		{"subdomains stay exact without the flag", []string{"a.x.example.com", "b.y.example.com", "c.z.example.com"}, false, false,
			[]string{"name a.x.example.com", "name b.y.example.com", "name c.z.example.com"}},
		{"subdomains under one ancestor become **. with the flag", []string{"a.x.example.com", "b.y.example.com", "c.z.example.com", "x.org"}, false, true,
			[]string{"pattern **.example.com", "name x.org"}},
		{"**. never on a one-label ancestor", []string{"a.x.com", "b.y.com", "c.z.com"}, false, true,
			[]string{"name a.x.com", "name b.y.com", "name c.z.com"}},
		{"one-label families keep *. with the flag", []string{"a.ns.svc.cluster.local", "b.ns.svc.cluster.local", "c.ns.svc.cluster.local"}, false, true,
			[]string{"pattern *.ns.svc.cluster.local"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range dnsRules(tc.names, tc.truncated, tc.subdomains) {
				if r.MatchName != "" {
					got = append(got, "name "+r.MatchName)
				} else {
					got = append(got, "pattern "+r.MatchPattern)
				}
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tc.want))
			if !slices.Equal(got, want) {
				t.Errorf("dnsRules(%v) = %v, want %v", tc.names, got, want)
			}
		})
	}
}

// Ensure a name a Cilium matchName cannot hold (a literal wildcard lookup, a quote, an empty
// label) costs the workload only that name: its policy is still written and valid, the name is
// allowed by the address a DNS answer gave for it or flagged as not allowed, and the names it
// can hold keep their rules. Such a name used to make Cilium refuse the whole policy.
func TestUnwritableNames(t *testing.T) {
	client, dnsServer := wl("shop", "app=client"), wl("kube-system", "k8s-app=kube-dns")
	fqdn := func(n string) aggregate.Peer { return aggregate.Peer{Kind: aggregate.PeerFQDN, FQDN: n} }
	snap := newSnap().
		conn(client, dnsServer, flows.ProtoUDP, 53, fwd(4), dnsNames("*.example.com", "api.example.com", "a..example.com", "with\"quote.example.com")).
		out(client, fqdn("api.example.com"), flows.ProtoTCP, 443, fwd(3)).
		out(client, fqdn("*.example.com"), flows.ProtoTCP, 443, fwd(2)).
		out(client, fqdn("with\"quote.example.com"), flows.ProtoTCP, 8443, fwd(2)).
		dns("192.0.2.7", "with\"quote.example.com").
		build()
	p := proposalOf(t, synthesize(t, snap, DefaultConfig()), client)
	if err := Validate(p.Policy, ""); err != nil {
		t.Fatalf("the policy written is not valid: %v", err)
	}
	var fqdns, cidrs []string
	for _, eg := range p.Policy.Spec.Egress {
		for _, f := range eg.ToFQDNs {
			fqdns = append(fqdns, f.MatchName+f.MatchPattern)
		}
		for _, c := range eg.ToCIDRSet {
			cidrs = append(cidrs, string(c.Cidr))
		}
	}
	dns := dnsRulesOf(p)
	if !slices.Equal(fqdns, []string{"api.example.com"}) {
		t.Errorf("toFQDNs = %v, want only api.example.com", fqdns)
	}
	if !slices.Equal(dns, []string{"api.example.com"}) {
		t.Errorf("DNS rules = %v, want only api.example.com", dns)
	}
	if !slices.Equal(cidrs, []string{"192.0.2.7/32"}) {
		t.Errorf("toCIDRSet = %v, want the address DNS gave for the quoted name", cidrs)
	}
	var details []string
	for _, f := range p.Review {
		if f.Kind == FindingUnexpressible {
			details = append(details, f.Peer+": "+f.Detail)
		}
	}
	want := []string{"*.example.com", "a..example.com", "matchName", "their lookups are not allowed"}
	for _, w := range want {
		if !slices.ContainsFunc(details, func(d string) bool { return strings.Contains(d, w) }) {
			t.Errorf("no unexpressible finding names %q: %q", w, details)
		}
	}

	// Only unwritable lookups: no DNS rule, and the finding says lookups stay unrestricted.
	only := newSnap().conn(client, dnsServer, flows.ProtoUDP, 53, fwd(4), dnsNames("*.example.com")).build()
	p = proposalOf(t, synthesize(t, only, DefaultConfig()), client)
	if !slices.ContainsFunc(p.Review, func(f Finding) bool {
		return f.Kind == FindingUnexpressible && strings.Contains(f.Detail, "not restricted by name")
	}) {
		t.Errorf("review %+v: want an unexpressible finding saying lookups are not restricted", p.Review)
	}
}

// Ensure HTTP rules match each request exactly as observed: a method keeps its case (methods
// are case-sensitive, and Cilium's rule is a regular expression, so it is quoted), and a
// request no rule can match exactly (a method that is no HTTP token, a path that is not
// origin-form) leaves the port at L4 with a finding rather than denying it once enforced. A
// character YAML cannot hold is written as a regular-expression escape.
func TestHTTPRulesMatchAsObserved(t *testing.T) {
	client, server := wl("shop", "app=client"), wl("shop", "app=api")
	cfg := DefaultConfig()
	cfg.L7HTTP = true
	httpOf := func(p *Proposal) []string {
		var out []string
		for _, in := range p.Policy.Spec.Ingress {
			for _, pr := range in.ToPorts {
				if pr.Rules != nil {
					for _, h := range pr.Rules.HTTP {
						out = append(out, h.Method+" "+h.Path)
					}
				}
			}
		}
		return out
	}
	exact := newSnap().conn(client, server, flows.ProtoTCP, 8080, fwd(3), httpReq("get", "/a"), httpReq("M.SEARCH", "/b"), httpReq("GET", "/c\x7f")).build()
	want := []string{"get /a" + querySuffix, `M\.SEARCH /b` + querySuffix, `GET /c\x{7f}` + querySuffix} // YAML refuses a raw DEL
	if got := httpOf(proposalOf(t, synthesize(t, exact, cfg), server)); !slices.Equal(got, want) {
		t.Errorf("HTTP rules %q, want %q", got, want)
	}
	for _, bad := range [][2]string{{"M SEARCH", "/b"}, {"OPTIONS", "*"}, {"", "/b"}} {
		snap := newSnap().conn(client, server, flows.ProtoTCP, 8080, fwd(3), httpReq("GET", "/a"), httpReq(bad[0], bad[1])).build()
		p := proposalOf(t, synthesize(t, snap, cfg), server)
		if got := httpOf(p); len(got) != 0 {
			t.Errorf("%q %q: HTTP rules %q, want the port at L4", bad[0], bad[1], got)
		}
		if !slices.ContainsFunc(p.Review, func(f Finding) bool {
			return f.Kind == FindingUnexpressible && strings.Contains(f.Detail, strconv.Quote(bad[1]))
		}) {
			t.Errorf("%q %q: review %+v, want an unexpressible finding naming the request", bad[0], bad[1], p.Review)
		}
	}
}

// Ensure a snapshot holding only one side of a workload edge still yields both rules.
func TestMirroredEdges(t *testing.T) {
	client, server := wl("a", "app=client"), wl("a", "app=server")
	b := newSnap()
	b.add(newEdge(client, flows.DirectionEgress, peerOf(server), flows.ProtoTCP, 80, []edgeOpt{fwd(5)}))
	res := synthesize(t, b.build(), DefaultConfig())
	got := atomStrings(proposal(t, res, "a-server").Policy)
	if !slices.Contains(got, "ingress from a/app=client 80/TCP") {
		t.Errorf("a-server atoms = %v, want the mirrored ingress", got)
	}
}

// Ensure the YAML carries provenance and no status, and reads back to the same atoms.
func TestWriteReadDir(t *testing.T) {
	dir := t.TempDir()
	stale := &v2.CiliumClusterwideNetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "cilium.io/v2", Kind: v2.CCNPKindDefinition},
		ObjectMeta: metav1.ObjectMeta{Name: "gone", Labels: map[string]string{LabelManagedBy: ManagedByValue}},
		Spec:       proposal(t, synthesize(t, shop(), DefaultConfig()), "shop-cart").Policy.Spec,
	}
	y, err := MarshalPolicy(stale)
	if err != nil {
		t.Fatal(err)
	}
	foreign := strings.Replace(string(y), "managed-by: recommender", "managed-by: someone-else", 1)
	for name, body := range map[string]string{"gone.yaml": string(y), "mine.yaml": foreign, "notes.txt": "x"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res := synthesize(t, shop(), DefaultConfig())
	sum, err := WriteDir(dir, res)
	if err != nil {
		t.Fatalf("WriteDir: %v", err)
	}
	if len(sum.Written) != len(res.Proposals) || !slices.Equal(sum.Removed, []string{filepath.Join(dir, "gone.yaml")}) {
		t.Errorf("WriteDir = %+v, want %d written and gone.yaml removed", sum, len(res.Proposals))
	}
	raw, err := os.ReadFile(filepath.Join(dir, "shop-frontend.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"app.kubernetes.io/managed-by: recommender", "recommender.io/revision: sha256:", "recommender.io/workload:"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("shop-frontend.yaml lacks %q", want)
		}
	}
	// Evidence that grows with every flow stays out of the object (issue 20).
	for _, unwanted := range []string{"recommender.io/flows", "recommender.io/observed-"} {
		if strings.Contains(string(raw), unwanted) {
			t.Errorf("shop-frontend.yaml has %q", unwanted)
		}
	}
	if strings.Contains(string(raw), "status:") {
		t.Error("shop-frontend.yaml has a status")
	}
	decoded, err := policyaudit.LoadDir(dir)
	if err != nil || len(decoded.Rejected) > 0 {
		t.Fatalf("read back: %v %v", err, decoded.Rejected)
	}
	back := decoded.CCNPs
	// mine.yaml (not ours) was kept and is read back too.
	if len(back) != len(res.Proposals)+1 {
		t.Fatalf("read back %d policies, want %d", len(back), len(res.Proposals)+1)
	}
	if d := Diff(policies(res), back); len(d) != 1 || d[0].Name != "gone" || d[0].Status != DiffAdded {
		t.Errorf("Diff(written, read back) = %+v, want only the foreign policy", d)
	}
}

// Ensure the diff is semantic: per peer and port, blind to order and metadata.
func TestDiff(t *testing.T) {
	old := policies(synthesize(t, shop(), DefaultConfig()))
	snap := shop()
	k := frontend.String()
	snap.Edges[k] = slices.DeleteFunc(snap.Edges[k], func(e aggregate.Edge) bool { return e.Peer.Kind == aggregate.PeerCIDR })
	snap.Edges[k] = append(snap.Edges[k], newEdge(frontend, flows.DirectionEgress, fqdn("api.example.com"), flows.ProtoTCP, 443, []edgeOpt{fwd(3)}))
	delete(snap.Edges, redis.String())
	snap.Workloads = slices.DeleteFunc(snap.Workloads, func(w aggregate.Workload) bool { return w.Key.String() == redis.String() })
	for k := range snap.Edges {
		snap.Edges[k] = slices.DeleteFunc(snap.Edges[k], func(e aggregate.Edge) bool { return e.Peer.Key() == peerOf(redis).Key() })
	}
	updated := policies(synthesize(t, snap, DefaultConfig()))
	got := map[string]PolicyDiff{}
	for _, d := range Diff(old, updated) {
		got[d.Name] = d
	}
	fe := got["shop-frontend"]
	if fe.Status != DiffChanged {
		t.Fatalf("shop-frontend diff = %+v, want changed", fe)
	}
	strs := func(cs []Change) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.String())
		}
		return out
	}
	if a := strs(fe.Added); !slices.Contains(a, "egress to fqdn:api.example.com 443/TCP") {
		t.Errorf("added = %v", a)
	}
	if r := strs(fe.Removed); !slices.Equal(r, []string{"egress to cidr:203.0.113.7/32 443/TCP"}) {
		t.Errorf("removed = %v", r)
	}
	if got["shop-redis"].Status != DiffRemoved {
		t.Errorf("shop-redis = %+v, want removed", got["shop-redis"])
	}
	if d := Diff(old, policies(synthesize(t, shop(), DefaultConfig()))); len(d) != 0 {
		t.Errorf("Diff(same) = %+v, want none", d)
	}
	// Reordering rules and changing annotations is no change.
	re := make([]*v2.CiliumClusterwideNetworkPolicy, len(old))
	for i, p := range old {
		re[i] = p.DeepCopy()
		slices.Reverse(re[i].Spec.Egress)
		re[i].Annotations = nil
	}
	if d := Diff(old, re); len(d) != 0 {
		t.Errorf("Diff(reordered) = %+v, want none", d)
	}
}

// Ensure that more flows and later observations on the same edges change no byte of a
// policy object: delivery writes only when the rules change (issue 20).
func TestPolicyObjectStableUnderNewEvidence(t *testing.T) {
	before := synthesize(t, shop(), DefaultConfig())
	grown := shop()
	for k, es := range grown.Edges {
		for i := range es {
			if es[i].Counts.Forwarded > 0 { // more of what was seen, no new kind of evidence
				es[i].Counts.Forwarded += 1000
			}
			es[i].LastSeen = es[i].LastSeen.Add(72 * time.Hour)
		}
		grown.Edges[k] = es
	}
	for i := range grown.Workloads {
		grown.Workloads[i].Flows += 5000
		grown.Workloads[i].LastSeen = grown.Workloads[i].LastSeen.Add(72 * time.Hour)
	}
	grown.Flows += 5000
	grown.To = grown.To.Add(72 * time.Hour)
	after := synthesize(t, grown, DefaultConfig())
	if len(before.Proposals) != len(after.Proposals) {
		t.Fatalf("proposals: %d before, %d after", len(before.Proposals), len(after.Proposals))
	}
	for i, p := range before.Proposals {
		b, err := MarshalPolicy(p.Policy)
		if err != nil {
			t.Fatal(err)
		}
		a, err := MarshalPolicy(after.Proposals[i].Policy)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s changed with new evidence only:\n%s\nwant\n%s", p.Name, a, b)
		}
	}
}

// Ensure a workload skipped because none of its edges could become a rule says why in the
// report itself: it has no policy whose review could carry the findings (issue 13).
func TestSkippedWorkloadNamesItsFindings(t *testing.T) {
	snap := newSnap().
		workload(frontend, "Deployment/frontend").
		workload(cart, "Deployment/cart").
		conn(frontend, cart, flows.ProtoUnknown, 0, fwd(10)).
		build()
	cfg := DefaultConfig()
	cfg.MinObserve = 0
	cfg.MinFlows = 1
	res := synthesize(t, snap, cfg)
	for _, s := range res.Skipped {
		if s.Reason != SkipNoAllowedTraffic {
			continue
		}
		if strings.Contains(s.Detail, "in the log") || !strings.Contains(s.Detail, "protocol cannot be written as a port rule") {
			t.Errorf("skip detail of %s = %q, want the finding itself", s.Display, s.Detail)
		}
		return
	}
	t.Fatalf("no workload skipped for lack of allowed traffic: %+v", res.Skipped)
}

// Ensure synthesis stops when its context ends, so SIGTERM is not held up by a big store
// (issue 15).
func TestSynthesizeContextCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	res, err := SynthesizeContext(ctx, shop(), DefaultConfig())
	if !errors.Is(err, context.Canceled) || res != nil {
		t.Errorf("SynthesizeContext(cancelled) = %v, %v; want context.Canceled and no result", res, err)
	}
}
