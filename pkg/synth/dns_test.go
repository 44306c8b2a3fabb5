package synth

import (
	"strings"
	"testing"

	policyaudit "github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
)

// Ensure --dns-subdomain-wildcard writes a "**." DNS rule that Cilium's parser accepts and
// that its matcher reads as any depth below the ancestor, and that without it the names stay
// exact.
func TestDNSSubdomainWildcard(t *testing.T) {
	client := wl("shop", "app=web")
	coredns := wl("kube-system", "k8s-app=kube-dns")
	snap := newSnap().conn(client, coredns, flows.ProtoUDP, 53, fwd(9),
		dnsNames("a.eu.example.com", "b.us.example.com", "c.ap.example.com")).snap
	for _, on := range []bool{false, true} {
		cfg := DefaultConfig()
		cfg.DNSSubdomainWildcard = on
		res := synthesize(t, snap, cfg)
		if got := strings.Join(dnsRulesOf(proposalOf(t, res, client)), " "); on != (got == "**.example.com") {
			t.Errorf("subdomains=%t: DNS rules %q", on, got)
		}
		set := auditSet(t, res)
		for _, q := range []struct {
			name  string
			allow bool
		}{{"a.eu.example.com.", true}, {"d.x.y.example.com.", on}, {"example.org.", false}} {
			ev := &flows.Event{Kind: flows.KindFlow, Src: wlPeer(client), Dst: wlPeer(coredns), Proto: flows.ProtoUDP, Port: 53,
				L7: &flows.L7{DNS: &flows.DNS{Query: q.name}}}
			v, err := set.Evaluate(ev)
			if err != nil {
				t.Fatal(err)
			}
			if got := v.Egress.Decision == policyaudit.DecisionAllowed; got != q.allow {
				t.Errorf("subdomains=%t: lookup %s egress %s, want allowed=%t", on, q.name, v.Egress, q.allow)
			}
		}
	}
}
