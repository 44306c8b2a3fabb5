package synth

import (
	"cmp"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/policy/api"
)

// DiffStatus says how a policy changed between two sets.
type DiffStatus string

const (
	DiffAdded   DiffStatus = "added"
	DiffRemoved DiffStatus = "removed"
	DiffChanged DiffStatus = "changed"
)

// Change is one atom of a policy: what it selects, or one peer on one port (with one L7
// rule, when the port has L7 rules) in one direction. Two policies are equal when their
// atoms are, whatever the order or grouping of their rules.
type Change struct {
	Direction string // "selects", "ingress", "egress", "ingress-deny", "egress-deny", "ingress-closed", "egress-closed"
	Peer      string // the workload selector for "selects"; the peer otherwise
	Port      string // "443/TCP", "1024-2048/TCP", "icmp IPv4 8", "any"
	L7        string // "http GET /api/[0-9]+", "dns name api.example.com"; empty for L4
}

func (c Change) String() string {
	switch c.Direction {
	case "selects":
		return "selects " + c.Peer
	case closedIngress, closedEgress:
		// An empty rule allows nothing: it only puts the direction in default deny.
		return strings.TrimSuffix(c.Direction, "-closed") + " closed (default deny, nothing allowed)"
	case "ingress", "ingress-deny":
		s := c.Direction + " from " + c.Peer + " " + c.Port
		if c.L7 != "" {
			s += " " + c.L7
		}
		return s
	}
	s := c.Direction + " to " + c.Peer + " " + c.Port
	if c.L7 != "" {
		s += " " + c.L7
	}
	return s
}

// ParseChange reads back what Change.String wrote. Pull requests carry rule changes as those
// strings (gitops.Proposal.Added, Removed); the graph of a pull request needs them as atoms to
// draw removed rules, which the new policy no longer holds. Peers may hold spaces and so may
// ports ("icmp IPv4 8", "any port"), but a port never starts a peer and always has one of
// the shapes portString and icmpAtoms write, followed by nothing or by an L7 rule ("http ...",
// "dns ..."): the first place after the peer's first word where such a port starts splits
// peer from port.
func ParseChange(s string) (Change, error) {
	if peer, ok := strings.CutPrefix(s, "selects "); ok {
		return Change{Direction: "selects", Peer: peer}, nil
	}
	for _, dir := range []string{closedIngress, closedEgress} {
		if s == (Change{Direction: dir}).String() {
			return Change{Direction: dir}, nil
		}
	}
	for _, d := range []struct{ dir, word string }{{"ingress-deny", " from "}, {"ingress", " from "}, {"egress-deny", " to "}, {"egress", " to "}} {
		rest, ok := strings.CutPrefix(s, d.dir+d.word)
		if !ok {
			continue
		}
		words := strings.Split(rest, " ")
		for i := 1; i < len(words); i++ {
			if port, l7, ok := splitPort(words[i:]); ok {
				return Change{Direction: d.dir, Peer: strings.Join(words[:i], " "), Port: port, L7: l7}, nil
			}
		}
		return Change{}, fmt.Errorf("rule %q: no port after the peer", s)
	}
	return Change{}, fmt.Errorf("rule %q: not a rule as Change.String writes it", s)
}

// portWord is a port as portString writes it: number, range or name, then the protocol.
var portWord = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(-[0-9]+)?/[A-Z]+$`)

// splitPort reads a port and an optional L7 rule from words; ok is false when words do not
// start with a port or go on with something that is not an L7 rule.
func splitPort(words []string) (port, l7 string, ok bool) {
	n := 0
	switch {
	case portWord.MatchString(words[0]):
		n = 1
	case words[0] == "icmp" && len(words) >= 3:
		n = 3
	case words[0] == "any" && len(words) >= 2 && words[1] == "port":
		n = 2
	default:
		return "", "", false
	}
	if rest := words[n:]; len(rest) > 0 && rest[0] != "http" && rest[0] != "dns" {
		return "", "", false
	}
	return strings.Join(words[:n], " "), strings.Join(words[n:], " "), true
}

func compareChange(a, b Change) int {
	return cmp.Or(cmp.Compare(a.Direction, b.Direction), cmp.Compare(a.Peer, b.Peer), cmp.Compare(a.Port, b.Port), cmp.Compare(a.L7, b.L7))
}

// Directions of the atom of an empty rule (ingress: [{}] / egress: [{}]): the direction is
// closed, default deny with nothing allowed, not open to "any peer on any port".
const (
	closedIngress = "ingress-closed"
	closedEgress  = "egress-closed"
)

// PolicyDiff is the semantic difference of one policy between two sets.
type PolicyDiff struct {
	Name    string
	Status  DiffStatus
	Added   []Change // sorted
	Removed []Change // sorted
}

// Diff compares two policy sets by name and returns the policies that differ, sorted by
// name. Metadata (revision, flow counts, window) is ignored: only what the rules allow counts.
func Diff(old, new []*v2.CiliumClusterwideNetworkPolicy) []PolicyDiff {
	byName := func(ps []*v2.CiliumClusterwideNetworkPolicy) map[string][]Change {
		m := map[string][]Change{}
		for _, p := range ps {
			m[p.Name] = Atoms(p)
		}
		return m
	}
	o, n := byName(old), byName(new)
	names := map[string]bool{}
	for k := range o {
		names[k] = true
	}
	for k := range n {
		names[k] = true
	}
	var out []PolicyDiff
	for _, name := range slices.Sorted(maps.Keys(names)) {
		oa, inOld := o[name]
		na, inNew := n[name]
		d := PolicyDiff{Name: name}
		switch {
		case !inOld:
			d.Status, d.Added = DiffAdded, na
		case !inNew:
			d.Status, d.Removed = DiffRemoved, oa
		default:
			d.Status = DiffChanged
			d.Added = minus(na, oa)
			d.Removed = minus(oa, na)
			if len(d.Added)+len(d.Removed) == 0 {
				continue
			}
		}
		out = append(out, d)
	}
	return out
}

// minus returns the atoms of a that are not in b (both sorted).
func minus(a, b []Change) []Change {
	var out []Change
	for _, c := range a {
		if _, found := slices.BinarySearchFunc(b, c, compareChange); !found {
			out = append(out, c)
		}
	}
	return out
}

// Atoms flattens a policy into its sorted, unique atoms.
func Atoms(p *v2.CiliumClusterwideNetworkPolicy) []Change {
	var out []Change
	rules := slices.Clone(p.Specs)
	if p.Spec != nil {
		rules = append(api.Rules{p.Spec}, rules...)
	}
	for _, r := range rules {
		out = append(out, Change{Direction: "selects", Peer: selectorString(&r.EndpointSelector)})
		for _, in := range r.Ingress {
			if reflect.DeepEqual(in, api.IngressRule{}) {
				out = append(out, Change{Direction: closedIngress})
				continue
			}
			c := in.IngressCommonRule
			out = appendAtoms(out, "ingress", ingressPeers(&c), portAtoms(in.ToPorts, in.ICMPs))
		}
		for _, in := range r.IngressDeny {
			c := in.IngressCommonRule
			out = appendAtoms(out, "ingress-deny", ingressPeers(&c), denyPortAtoms(in.ToPorts, in.ICMPs))
		}
		for _, eg := range r.Egress {
			if reflect.DeepEqual(eg, api.EgressRule{}) {
				out = append(out, Change{Direction: closedEgress})
				continue
			}
			c := eg.EgressCommonRule
			out = appendAtoms(out, "egress", egressPeers(&c, eg.ToFQDNs), portAtoms(eg.ToPorts, eg.ICMPs))
		}
		for _, eg := range r.EgressDeny {
			c := eg.EgressCommonRule
			out = appendAtoms(out, "egress-deny", egressPeers(&c, nil), denyPortAtoms(eg.ToPorts, eg.ICMPs))
		}
	}
	slices.SortFunc(out, compareChange)
	return slices.Compact(out)
}

type portAtom struct{ port, l7 string }

func appendAtoms(out []Change, dir string, peers []string, ports []portAtom) []Change {
	if len(peers) == 0 {
		peers = []string{"any peer"}
	}
	if len(ports) == 0 {
		ports = []portAtom{{port: "any port"}}
	}
	for _, peer := range peers {
		for _, pa := range ports {
			out = append(out, Change{Direction: dir, Peer: peer, Port: pa.port, L7: pa.l7})
		}
	}
	return out
}

func portString(pp api.PortProtocol) string {
	p := pp.Port
	if p == "" {
		p = "0"
	}
	if pp.EndPort > 0 {
		p = fmt.Sprintf("%s-%d", p, pp.EndPort)
	}
	proto := string(pp.Protocol)
	if proto == "" {
		proto = string(api.ProtoAny)
	}
	return p + "/" + strings.ToUpper(proto)
}

func portAtoms(prs api.PortRules, icmps api.ICMPRules) []portAtom {
	var out []portAtom
	for _, pr := range prs {
		var l7 []string
		if pr.Rules != nil {
			for _, h := range pr.Rules.HTTP {
				s := "http " + cmp.Or(h.Method, "*") + " " + cmp.Or(h.Path, "*")
				if h.Host != "" {
					s += " host " + h.Host
				}
				l7 = append(l7, s)
			}
			for _, d := range pr.Rules.DNS {
				if d.MatchName != "" {
					l7 = append(l7, "dns name "+d.MatchName)
				} else {
					l7 = append(l7, "dns pattern "+d.MatchPattern)
				}
			}
		}
		ports := pr.Ports
		if len(ports) == 0 {
			ports = []api.PortProtocol{{}}
		}
		for _, pp := range ports {
			if len(l7) == 0 {
				out = append(out, portAtom{port: portString(pp)})
			}
			for _, l := range l7 {
				out = append(out, portAtom{port: portString(pp), l7: l})
			}
		}
	}
	return append(out, icmpAtoms(icmps)...)
}

func denyPortAtoms(prs api.PortDenyRules, icmps api.ICMPRules) []portAtom {
	var out []portAtom
	for _, pr := range prs {
		for _, pp := range pr.Ports {
			out = append(out, portAtom{port: portString(pp)})
		}
	}
	return append(out, icmpAtoms(icmps)...)
}

func icmpAtoms(icmps api.ICMPRules) []portAtom {
	var out []portAtom
	for _, r := range icmps {
		for _, f := range r.Fields {
			fam := cmp.Or(f.Family, api.IPv4Family)
			t := "any"
			if f.Type != nil {
				t = f.Type.String()
			}
			out = append(out, portAtom{port: "icmp " + fam + " " + t})
		}
	}
	return out
}

func ingressPeers(c *api.IngressCommonRule) []string {
	var out []string
	for i := range c.FromEndpoints {
		out = append(out, selectorString(&c.FromEndpoints[i]))
	}
	out = append(out, entityPeers(c.FromEntities)...)
	out = append(out, cidrPeers(c.FromCIDR, c.FromCIDRSet)...)
	for i := range c.FromNodes {
		out = append(out, "node "+selectorString(&c.FromNodes[i]))
	}
	return out
}

func egressPeers(c *api.EgressCommonRule, fqdns api.FQDNSelectorSlice) []string {
	var out []string
	for i := range c.ToEndpoints {
		out = append(out, selectorString(&c.ToEndpoints[i]))
	}
	out = append(out, entityPeers(c.ToEntities)...)
	out = append(out, cidrPeers(c.ToCIDR, c.ToCIDRSet)...)
	for i := range c.ToNodes {
		out = append(out, "node "+selectorString(&c.ToNodes[i]))
	}
	for _, s := range c.ToServices {
		if s.K8sService != nil {
			out = append(out, "service "+s.K8sService.Namespace+"/"+s.K8sService.ServiceName)
		}
	}
	for _, f := range fqdns {
		if f.MatchName != "" {
			out = append(out, "fqdn:"+f.MatchName)
		} else {
			out = append(out, "fqdn-pattern:"+f.MatchPattern)
		}
	}
	return out
}

func entityPeers(es api.EntitySlice) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, "entity:"+string(e))
	}
	return out
}

func cidrPeers(cs api.CIDRSlice, set api.CIDRRuleSlice) []string {
	var out []string
	for _, c := range cs {
		out = append(out, "cidr:"+string(c))
	}
	for _, c := range set {
		s := "cidr:" + string(c.Cidr)
		if c.CIDRGroupRef != "" {
			s = "cidr-group:" + string(c.CIDRGroupRef)
		}
		if len(c.ExceptCIDRs) > 0 {
			ex := make([]string, 0, len(c.ExceptCIDRs))
			for _, e := range c.ExceptCIDRs {
				ex = append(ex, string(e))
			}
			slices.Sort(ex)
			s += " except " + strings.Join(ex, ",")
		}
		out = append(out, s)
	}
	return out
}

// selectorString renders a selector readably and canonically: "ns/app=web,!version" for a
// selector with a namespace, "{app=web}" otherwise, followed by " (cluster east)" when it
// names a cluster; the usual "k8s:" source is dropped.
func selectorString(s *api.EndpointSelector) string {
	if s.LabelSelector == nil {
		return "{all}"
	}
	trim := func(k string) string { return strings.TrimPrefix(k, "k8s:") }
	ns, cluster := "", ""
	var parts []string
	for k, v := range s.MatchLabels {
		if k == namespaceKey {
			ns = v
			continue
		}
		if k == clusterKey {
			cluster = " (cluster " + v + ")"
			continue
		}
		parts = append(parts, trim(k)+"="+v)
	}
	for _, e := range s.MatchExpressions {
		switch e.Operator {
		case "DoesNotExist":
			parts = append(parts, "!"+trim(e.Key))
		case "Exists":
			parts = append(parts, trim(e.Key))
		default:
			vs := slices.Sorted(slices.Values(e.Values))
			parts = append(parts, trim(e.Key)+" "+string(e.Operator)+" ("+strings.Join(vs, ",")+")")
		}
	}
	slices.Sort(parts)
	body := strings.Join(parts, ",")
	if ns != "" {
		return ns + "/" + cmp.Or(body, "*") + cluster
	}
	return "{" + body + "}" + cluster
}
