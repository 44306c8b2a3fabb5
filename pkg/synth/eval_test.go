package synth

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/policy/api"

	"github.com/recommender/recommender/pkg/flows"
)

// This file is a minimal policy evaluator for the property tests: L3 peers (endpoints,
// entities, CIDR sets, FQDN names), L4 ports with ranges, ICMP types and HTTP method/path.
// It implements Cilium's allow semantics for allow-only rules: an endpoint that some policy
// selects with rules in a direction is default-deny in that direction, and a flow passes
// when both the client's egress and the server's ingress allow it.

// end is one end of a test flow.
type end struct {
	ns     string
	labels flows.Labels // "k8s:app=web"
	entity string       // reserved entity: host, world, ...
	ip     string
	name   string // DNS name the client used to reach an external server
}

func (e end) isWorkload() bool { return e.entity == "" && e.ip == "" && e.name == "" }

// testFlow is one connection to evaluate.
type testFlow struct {
	src, dst    end
	proto       flows.Protocol
	port        uint16
	method, url string // HTTP request, optional
}

func selectorMatches(s *api.EndpointSelector, e end) bool {
	if !e.isWorkload() || s.LabelSelector == nil {
		return false
	}
	get := func(key string) (string, bool) {
		src, k, ok := strings.Cut(key, ":")
		if !ok {
			src, k = "any", key
		}
		if k == flows.LabelNamespace {
			return e.ns, true
		}
		for _, l := range e.labels {
			ls, kv := flows.SplitSource(l)
			lk, lv, _ := strings.Cut(kv, "=")
			if lk == k && (src == "any" || src == ls) {
				return lv, true
			}
		}
		return "", false
	}
	for k, v := range s.MatchLabels {
		if got, ok := get(k); !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		_, ok := get(r.Key)
		switch r.Operator {
		case "DoesNotExist":
			if ok {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		default:
			return false // not generated; unknown to this evaluator
		}
	}
	return true
}

func entityMatches(es api.EntitySlice, e end) bool {
	for _, x := range es {
		if string(x) == e.entity || (x == api.EntityWorld && e.ip != "" && e.entity == "") {
			return true
		}
	}
	return false
}

func cidrMatches(cs api.CIDRRuleSlice, e end) bool {
	a, err := netip.ParseAddr(e.ip)
	if err != nil {
		return false
	}
	for _, c := range cs {
		if p, err := netip.ParsePrefix(string(c.Cidr)); err == nil && p.Contains(a) {
			return true
		}
	}
	return false
}

func fqdnMatches(fs api.FQDNSelectorSlice, e end) bool {
	for _, f := range fs {
		if f.MatchName != "" && f.MatchName == e.name {
			return true
		}
		if f.MatchPattern != "" && dnsPatternMatches(f.MatchPattern, e.name) {
			return true
		}
	}
	return false
}

// dnsPatternMatches implements Cilium's matchPattern: "*" alone matches everything, otherwise
// "*" matches within one label.
func dnsPatternMatches(pattern, name string) bool {
	if pattern == "*" {
		return true
	}
	re := "^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, `[-a-zA-Z0-9_]*`) + "$"
	return regexp.MustCompile(re).MatchString(name)
}

// portsAllow reports whether the port rules admit the flow (L4, and HTTP when present).
func portsAllow(prs api.PortRules, f testFlow) bool {
	if len(prs) == 0 {
		return !f.proto.IsICMP()
	}
	for _, pr := range prs {
		for _, pp := range pr.Ports {
			if string(pp.Protocol) != f.proto.String() {
				continue
			}
			lo, _ := strconv.Atoi(pp.Port)
			hi := lo
			if pp.EndPort > 0 {
				hi = int(pp.EndPort)
			}
			if int(f.port) < lo || int(f.port) > hi {
				continue
			}
			if pr.Rules == nil || len(pr.Rules.HTTP) == 0 || f.method == "" {
				return true
			}
			for _, h := range pr.Rules.HTTP {
				if regexp.MustCompile("^(?:"+h.Method+")$").MatchString(f.method) &&
					regexp.MustCompile("^(?:"+h.Path+")$").MatchString(f.url) {
					return true
				}
			}
		}
	}
	return false
}

func icmpAllow(rs api.ICMPRules, f testFlow) bool {
	for _, r := range rs {
		for _, fl := range r.Fields {
			fam := "IPv4"
			if f.proto == flows.ProtoICMPv6 {
				fam = "IPv6"
			}
			if fl.Family == fam && fl.Type != nil && fl.Type.IntValue() == int(f.port) {
				return true
			}
		}
	}
	return false
}

func l4Allow(prs api.PortRules, icmps api.ICMPRules, f testFlow) bool {
	if f.proto.IsICMP() {
		return icmpAllow(icmps, f)
	}
	if len(icmps) > 0 && len(prs) == 0 {
		return false
	}
	return portsAllow(prs, f)
}

// allowed evaluates a flow against a policy set.
func allowed(ps []*v2.CiliumClusterwideNetworkPolicy, f testFlow) bool {
	return egressAllowed(ps, f) && ingressAllowed(ps, f)
}

func egressAllowed(ps []*v2.CiliumClusterwideNetworkPolicy, f testFlow) bool {
	enforced := false
	for _, p := range ps {
		r := p.Spec
		if !selectorMatches(&r.EndpointSelector, f.src) || len(r.Egress) == 0 {
			continue
		}
		enforced = true
		for _, eg := range r.Egress {
			peer := false
			for i := range eg.ToEndpoints {
				peer = peer || selectorMatches(&eg.ToEndpoints[i], f.dst)
			}
			peer = peer || entityMatches(eg.ToEntities, f.dst) || cidrMatches(eg.ToCIDRSet, f.dst) || fqdnMatches(eg.ToFQDNs, f.dst)
			if peer && l4Allow(eg.ToPorts, eg.ICMPs, f) {
				return true
			}
		}
	}
	return !enforced
}

func ingressAllowed(ps []*v2.CiliumClusterwideNetworkPolicy, f testFlow) bool {
	enforced := false
	for _, p := range ps {
		r := p.Spec
		if !selectorMatches(&r.EndpointSelector, f.dst) || len(r.Ingress) == 0 {
			continue
		}
		enforced = true
		for _, in := range r.Ingress {
			peer := false
			for i := range in.FromEndpoints {
				peer = peer || selectorMatches(&in.FromEndpoints[i], f.src)
			}
			peer = peer || entityMatches(in.FromEntities, f.src) || cidrMatches(in.FromCIDRSet, f.src)
			if peer && l4Allow(in.ToPorts, in.ICMPs, f) {
				return true
			}
		}
	}
	return !enforced
}
