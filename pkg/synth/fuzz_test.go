package synth_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/synth"
)

// explained reports whether the proposal of ev's client says why its traffic to the world is
// not allowed: a name a Cilium matchName cannot hold, with no address known for it.
func explained(res *synth.Result, ev *flows.Event) bool {
	if ev.Dst.Kind != flows.PeerWorld && ev.L7 == nil {
		return false
	}
	for _, p := range res.Proposals {
		if p.Workload.Namespace != ev.Src.Namespace || !slices.Equal(p.Workload.Labels, ev.Src.Labels) {
			continue
		}
		for _, f := range p.Review {
			if f.Kind == synth.FindingUnexpressible && f.Direction == flows.DirectionEgress {
				return true
			}
		}
	}
	return false
}

// FuzzObservedStaysAllowed runs flows whose namespace, label, DNS name, port and HTTP request
// come from the fuzzer through the whole offline pipeline: the Aggregator, Synthesize, the YAML the project
// writes, and that YAML read back strictly (audit.DecodeYAML, as `check` and the daemon read
// policies) and evaluated. Whatever the Aggregator accepts, the policies written from it must
// decode, build, and allow every flow they were learned from, or say in the client's review
// why not: a policy that drops observed traffic takes production down when it is enforced.
func FuzzObservedStaysAllowed(f *testing.F) {
	f.Add("shop", "app", "web", "api.example.com", uint16(8080), "GET", "v1/items/42")
	f.Add("kube-system", "k8s-app", "kube-dns", "*.example.com", uint16(53), "POST", "hipstershop.CartService/GetCart")
	f.Add("a", "app.kubernetes.io/name", "x_y.z-1", "xn--bcher-kva.example", uint16(65535), "get", "a/(b)/[c]/{d}/e+f/*/.")
	f.Add("a", "app", "m", "x.example", uint16(80), "get", "a")
	f.Add("a", "app", "p", "x.example", uint16(80), "GET", "a/(b)/[c]/{d}/e+f/*/.")
	f.Add("shop", "tier", "", "EXAMPLE.com.", uint16(0), "", "")
	f.Add("shop", "version", "1:2", "a\"b.example.com", uint16(1), "PATCH", "blobs/9f86d081884c7d659a2feaa0c55ad015/x?q=1")
	f.Fuzz(func(t *testing.T, ns, key, value, name string, port uint16, method, path string) {
		now := time.Now().UTC().Add(-time.Minute)
		events := func() []*flows.Event {
			client := flows.Peer{Kind: flows.PeerWorkload, Namespace: ns,
				Labels: flows.NewLabels("k8s:"+key+"="+value, "k8s:app=client", "k8s:io.kubernetes.pod.namespace="+ns)}
			server := flows.Peer{Kind: flows.PeerWorkload, Namespace: "shop",
				Labels: flows.NewLabels("k8s:app=api", "k8s:io.kubernetes.pod.namespace=shop")}
			dnsServer := flows.Peer{Kind: flows.PeerWorkload, Namespace: "kube-system",
				Labels: flows.NewLabels("k8s:k8s-app=kube-dns", "k8s:io.kubernetes.pod.namespace=kube-system")}
			// As the normalizer hands names on (flows.Peer.Names).
			var names []string
			if n := strings.TrimSuffix(strings.ToLower(name), "."); n != "" {
				names = []string{n}
			}
			world := flows.Peer{Kind: flows.PeerWorld, IP: "203.0.113.9", Names: names}
			ev := func(src, dst flows.Peer, proto flows.Protocol, port uint16) *flows.Event {
				return &flows.Event{Kind: flows.KindFlow, Time: now, Src: src, Dst: dst, Proto: proto, Port: port,
					Verdict: flows.VerdictForwarded, Connection: true}
			}
			query := ev(client, dnsServer, flows.ProtoUDP, 53)
			query.Type, query.L7 = flows.EventL7, &flows.L7{DNS: &flows.DNS{Query: name}}
			// As the normalizer cuts Hubble's URL ("http://host/" + path) to its path.
			urlPath, _, _ := strings.Cut("/"+path, "?")
			urlPath, _, _ = strings.Cut(urlPath, "#")
			request := ev(client, server, flows.ProtoTCP, 8080)
			request.Type, request.L7 = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: method, Host: "api.shop", Path: urlPath}}
			return []*flows.Event{
				ev(client, server, flows.ProtoTCP, port),
				ev(client, world, flows.ProtoTCP, 443),
				query,
				request,
			}
		}
		a, err := aggregate.NewAggregator(aggregate.Config{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var accepted []int
		for i, ev := range events() {
			if a.Add(ev) {
				accepted = append(accepted, i)
			}
		}
		cfg := synth.DefaultConfig()
		cfg.L7HTTP = true
		if port%2 == 1 { // both kinds the daemon writes
			cfg.PolicyKind = synth.KindCNP
		}
		res, err := synth.Synthesize(a.Snapshot(), cfg)
		if err != nil {
			t.Fatalf("Synthesize: %v", err)
		}
		d := &audit.Decoded{}
		for _, p := range res.Proposals {
			y, err := synth.MarshalPolicy(p.Policy)
			if cfg.PolicyKind == synth.KindCNP {
				var cnp *v2.CiliumNetworkPolicy
				if cnp, err = synth.AsCNP(p.Policy); err == nil {
					y, err = synth.MarshalCNP(cnp)
				}
			}
			if err != nil {
				t.Fatalf("render %s as %s: %v", p.Name, cfg.PolicyKind, err)
			}
			if err := audit.DecodeYAML(bytes.NewReader(y), p.Name+".yaml", d); err != nil {
				t.Fatalf("the policy written for %s does not read back: %v\n%s", p.Name, err, y)
			}
		}
		set, err := d.Build(audit.Config{})
		if err != nil {
			t.Fatalf("the policies written do not build: %v", err)
		}
		again := events()
		for _, i := range accepted {
			v, err := set.Evaluate(again[i])
			if err != nil {
				t.Fatalf("Evaluate(flow %d): %v", i, err)
			}
			if v.Denied() && !explained(res, again[i]) {
				t.Errorf("flow %d (%s -> %s %d/%s), learned from, is denied by the policies written: %+v",
					i, again[i].Src.Key(), again[i].Dst.Key(), again[i].Port, again[i].Proto, v)
			}
		}
	})
}
