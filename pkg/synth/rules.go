package synth

import (
	"cmp"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"github.com/cilium/cilium/pkg/policy/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// Cilium limits: at most maxPorts ports per PortRule and maxICMPFields fields per ICMPRule
// (pkg/policy/api rule_validation.go).
const (
	maxPorts      = 40
	maxICMPFields = 40
)

// allowedEntities maps the entities a flow can report to the entity a rule may name.
// world-ipv4/world-ipv6 are rejected by the API server and become world; "all" and "none"
// are never written.
var allowedEntities = map[string]api.Entity{
	"host":           api.EntityHost,
	"remote-node":    api.EntityRemoteNode,
	"kube-apiserver": api.EntityKubeAPIServer,
	"health":         api.EntityHealth,
	"ingress":        api.EntityIngress,
	"init":           api.EntityInit,
	"unmanaged":      api.EntityUnmanaged,
	"world":          api.EntityWorld,
	"world-ipv4":     api.EntityWorld,
	"world-ipv6":     api.EntityWorld,
}

// broadEntities are entities that cover endpoints nobody identified; allowing them is flagged.
var broadEntities = map[api.Entity]bool{api.EntityWorld: true, api.EntityUnmanaged: true, api.EntityInit: true}

type portKey struct {
	proto     flows.Protocol
	port, end uint16 // end > port only for a collapsed range
}

func (k portKey) String() string {
	p := strconv.Itoa(int(k.port))
	if k.end > k.port {
		p += "-" + strconv.Itoa(int(k.end))
	}
	return p + "/" + k.proto.String()
}

type portEvidence struct {
	flows uint64
	http  []aggregate.HTTPSample
	// httpIncomplete: rules written from the samples could deny requests that were seen: the
	// aggregator stopped keeping new HTTP samples for an edge of this port, or a sample's
	// method or path cannot be written as a rule that matches it (writableHTTP).
	httpIncomplete bool
	// l4Only: another policy selecting the same pods allows this peer and port without HTTP
	// rules that could be written (reconcileL7), so none are written here either.
	l4Only bool
}

// grant is everything allowed between the workload and one peer in one direction.
type grant struct {
	dir      flows.Direction
	peer     aggregate.Peer
	selector *api.EndpointSelector // workload peers
	entity   api.Entity            // entity peers
	display  string
	ports    map[portKey]*portEvidence
	flows    uint64
	// firstSeen and lastSeen span the edges behind the grant: a rule's own evidence window.
	firstSeen, lastSeen time.Time
	dns                 bool // the peer is a DNS server of the workload: port 53 with rules.dns
	// fqdnAlso are other names the workload looked up that DNS answers gave the same
	// addresses as peer.FQDN (CNAMEs, aliases): the rule must match whichever one it asks for.
	fqdnAlso []string
}

func (g *grant) sortKey() string {
	return fmt.Sprintf("%d\x00%d\x00%s", g.dir, g.peer.Kind, g.peer.Key())
}

// builder turns one workload's edges into grants, then into rules.
type builder struct {
	s        *synthesizer
	wi       *workloadInfo
	grants   map[string]*grant
	review   []Finding
	dnsNames []string // names the workload looked up (DNS edges) or reached (FQDN peers)
	// dnsTruncated: a DNS edge hit the aggregator's name bound, so the names are incomplete.
	dnsTruncated bool
	dnsPeers     map[string]bool
	dropped      struct{ policy, other uint64 }
}

func newBuilder(s *synthesizer, wi *workloadInfo) *builder {
	return &builder{s: s, wi: wi, grants: map[string]*grant{}, dnsPeers: map[string]bool{}}
}

func (b *builder) flag(f Finding) { b.review = append(b.review, f) }

// edge folds one edge into the grants, or flags why it allows nothing.
func (b *builder) edge(e aggregate.Edge) {
	c := e.Counts
	pk := portKey{proto: e.Proto, port: e.Port}
	if e.Collapsed && e.EndPort > e.Port {
		pk.end = e.EndPort
	}
	peerDisp := b.peerDisplay(e.Peer)
	allow := c.Forwarded + c.Audit
	if allow == 0 {
		// Only the proxy reported the traffic (its L3/L4 records were not captured, or named
		// the peer by address): a forwarded request is traffic that ran. Without this, the
		// edge of a client seen only through its sidecar or Cilium's proxy would be denied,
		// and with quiet directions closed its whole egress with it.
		allow = c.L7
	}
	if c.PolicyDrops > 0 {
		// An enforced policy denies this edge (at least since some point in the window: the
		// counts carry no order). Allowing it would widen what the cluster enforces now, so
		// it is left to a reviewer even when earlier flows were forwarded.
		detail := fmt.Sprintf("%d flows dropped by an enforced policy; not allowed", c.PolicyDrops)
		if allow > 0 {
			detail = fmt.Sprintf("%d flows dropped by an enforced policy; not allowed, although %d were forwarded or audited (before the policy?): add it by hand if it is wanted", c.PolicyDrops, allow)
		}
		b.flag(Finding{Kind: FindingPolicyDrop, Direction: e.Direction, Peer: peerDisp, Ports: pk.String(), Detail: detail})
		b.dropped.policy += c.PolicyDrops
		b.dropped.other += c.Total() - c.PolicyDrops
		return
	}
	if allow == 0 {
		b.dropped.other += c.Total()
		b.flag(Finding{Kind: FindingNotAllowed, Direction: e.Direction, Peer: peerDisp, Ports: pk.String(), Detail: fmt.Sprintf(
			"never forwarded: %d dropped (not by policy), %d other verdicts", c.Dropped, c.Other)})
		return
	}
	if c.Forwarded == 0 {
		b.flag(Finding{Kind: FindingAuditOnly, Direction: e.Direction, Peer: peerDisp, Ports: pk.String(), Detail: fmt.Sprintf(
			"allowed from %d AUDIT verdicts only: a policy in audit mode would deny this traffic", c.Audit)})
	}
	switch e.Proto {
	case flows.ProtoTCP, flows.ProtoUDP, flows.ProtoSCTP, flows.ProtoICMPv4, flows.ProtoICMPv6:
	default:
		b.flag(Finding{Kind: FindingUnexpressible, Direction: e.Direction, Peer: peerDisp, Ports: pk.String(), Detail: "protocol cannot be written as a port rule; not allowed"})
		return
	}
	if pk.end > 0 {
		b.flag(Finding{Kind: FindingPortRange, Direction: e.Direction, Peer: peerDisp, Ports: pk.String(), Detail: fmt.Sprintf(
			"too many distinct ports were seen; the rule allows the whole observed range (%d ports)", int(pk.end)-int(pk.port)+1)})
	}
	if e.Direction == flows.DirectionEgress && len(e.DNSNames) > 0 {
		b.dnsNames = append(b.dnsNames, e.DNSNames...)
		if e.Truncated {
			b.dnsTruncated = true
			b.flag(Finding{Kind: FindingTruncated, Direction: e.Direction, Peer: peerDisp, Ports: pk.String(), Detail: fmt.Sprintf(
				"more distinct names were looked up than the %d kept; the DNS rule allows every name (matchPattern \"*\") rather than break lookups", len(e.DNSNames))})
		}
	}
	httpTruncated := e.Truncated && len(e.HTTP) > 0
	unwritable := slices.IndexFunc(e.HTTP, func(s aggregate.HTTPSample) bool { return !writableHTTP(s) })
	if b.s.cfg.L7HTTP && e.Direction == flows.DirectionIngress {
		if httpTruncated {
			b.flag(Finding{Kind: FindingTruncated, Direction: e.Direction, Peer: peerDisp, Ports: pk.String(), Detail: fmt.Sprintf(
				"more distinct HTTP requests were seen than the %d samples kept; the port is allowed at L4 without HTTP rules", len(e.HTTP))})
		}
		if unwritable >= 0 {
			s := e.HTTP[unwritable]
			b.flag(Finding{Kind: FindingUnexpressible, Direction: e.Direction, Peer: peerDisp, Ports: pk.String(), Detail: fmt.Sprintf(
				"HTTP request %q %q cannot be written as a rule that matches it (the method is not an HTTP token or the path does not start with /); the port is allowed at L4 without HTTP rules", s.Method, s.Path)})
		}
	}
	for _, peer := range b.resolve(e, peerDisp, pk) {
		g := b.grant(e.Direction, peer)
		if g == nil {
			continue
		}
		if e.Direction == flows.DirectionEgress && len(e.DNSNames) > 0 {
			b.dnsPeers[g.sortKey()] = true
		}
		if pk == (portKey{proto: flows.ProtoUDP, port: 53}) {
			// A resolver that answers a peer over UDP must take its TCP lookups too: DNS falls
			// back to TCP for answers too large for UDP (RFC 7766). Both ends allow both, the
			// server's ingress and the client's egress (also when no lookup was visible and so
			// no DNS rule is written); without it large answers fail only once enforced.
			if tcp := (portKey{proto: flows.ProtoTCP, port: 53}); g.ports[tcp] == nil {
				g.ports[tcp] = &portEvidence{}
			}
		}
		ev := g.ports[pk]
		if ev == nil {
			ev = &portEvidence{}
			g.ports[pk] = ev
		}
		ev.flows += allow
		ev.http = append(ev.http, e.HTTP...)
		ev.httpIncomplete = ev.httpIncomplete || httpTruncated || unwritable >= 0
		g.flows += allow
		if g.firstSeen.IsZero() || e.FirstSeen.Before(g.firstSeen) {
			g.firstSeen = e.FirstSeen
		}
		if e.LastSeen.After(g.lastSeen) {
			g.lastSeen = e.LastSeen
		}
	}
}

// resolve maps an edge's peer to the peers a rule can name: an external address some DNS
// answer named becomes that name (egress), an ingress from a name becomes the addresses DNS
// gave for it, and external addresses are summarized to the configured prefix.
func (b *builder) resolve(e aggregate.Edge, disp string, pk portKey) []aggregate.Peer {
	p := e.Peer
	switch p.Kind {
	case aggregate.PeerCIDR:
		if e.Direction == flows.DirectionEgress {
			if names := b.s.namesOf[addrOf(p.CIDR)]; len(names) > 0 { // else the address below allows it
				out := make([]aggregate.Peer, 0, len(names))
				for _, n := range names {
					out = append(out, aggregate.Peer{Kind: aggregate.PeerFQDN, FQDN: n})
				}
				return out
			}
		}
		c, ok := summarizeCIDR(p.CIDR, b.s.cfg.CIDRPrefixV4, b.s.cfg.CIDRPrefixV6)
		if !ok {
			b.flag(Finding{Kind: FindingUnexpressible, Direction: e.Direction, Peer: disp, Ports: pk.String(), Detail: "peer address does not parse; not allowed"})
			return nil
		}
		return []aggregate.Peer{{Kind: aggregate.PeerCIDR, CIDR: c}}
	case aggregate.PeerFQDN:
		if e.Direction == flows.DirectionEgress && writableName.MatchString(p.FQDN) {
			return []aggregate.Peer{p}
		}
		// Cilium has no fromFQDNs, and a name matchName cannot hold would make it refuse the
		// whole policy: such a peer can only be allowed by address.
		ips := b.s.reverseDNS[p.FQDN]
		if len(ips) == 0 {
			detail := "ingress from an external name cannot be written (no fromFQDNs) and no DNS answer gave its address; not allowed"
			if e.Direction == flows.DirectionEgress {
				detail = "the name cannot be written as a Cilium matchName (letters, digits, '-' and '_' between dots) and no DNS answer gave its address; not allowed"
			}
			b.flag(Finding{Kind: FindingUnexpressible, Direction: e.Direction, Peer: disp, Ports: pk.String(), Detail: detail})
			return nil
		}
		var out []aggregate.Peer
		for _, ip := range ips {
			if c, ok := summarizeCIDR(ip, b.s.cfg.CIDRPrefixV4, b.s.cfg.CIDRPrefixV6); ok {
				out = append(out, aggregate.Peer{Kind: aggregate.PeerCIDR, CIDR: c})
			}
		}
		return out
	case aggregate.PeerWorkload, aggregate.PeerEntity:
		return []aggregate.Peer{p}
	}
	b.flag(Finding{Kind: FindingUnexpressible, Direction: e.Direction, Peer: disp, Ports: pk.String(), Detail: "unknown peer kind; not allowed"})
	return nil
}

// grant returns the grant for (direction, peer), creating it; nil when the peer cannot be named.
func (b *builder) grant(dir flows.Direction, peer aggregate.Peer) *grant {
	g := &grant{dir: dir, peer: peer, ports: map[portKey]*portEvidence{}}
	if have, ok := b.grants[g.sortKey()]; ok {
		return have
	}
	g.display = b.peerDisplay(peer)
	switch peer.Kind {
	case aggregate.PeerWorkload:
		pk := aggregate.WorkloadKey{Namespace: peer.Namespace, Labels: peer.Labels}
		choice, err := b.s.u.choose(b.s.local, pk)
		if err != nil {
			// The peer has no identifying label: its namespace is the narrowest selector left.
			// Denying it would break traffic that was seen working, so allow and flag.
			choice = selectorChoice{}
			b.flag(Finding{Kind: FindingSelectorOverlap, Direction: dir, Peer: g.display, Detail: fmt.Sprintf(
				"the peer has no stable labels (%v); it is selected by its namespace alone", err)})
		}
		sel := choice.endpointSelector(peer.Namespace, cmp.Or(pk.Labels.Cluster(), b.s.local))
		g.selector = &sel
	case aggregate.PeerEntity:
		ent, ok := allowedEntities[peer.Entity]
		if !ok {
			b.flag(Finding{Kind: FindingUnexpressible, Direction: dir, Peer: g.display, Detail: fmt.Sprintf("entity %q cannot be allowed by a generated rule", peer.Entity)})
			return nil
		}
		g.entity = ent
		g.peer.Entity = string(ent)
		if have, ok := b.grants[g.sortKey()]; ok {
			return have
		}
		g.display = "entity:" + string(ent)
	}
	b.grants[g.sortKey()] = g
	return g
}

func (b *builder) peerDisplay(p aggregate.Peer) string {
	if p.Kind == aggregate.PeerWorkload {
		return b.s.display(aggregate.WorkloadKey{Namespace: p.Namespace, Labels: p.Labels})
	}
	return p.Key()
}

// dns turns the names the workload resolved into DNS rules towards the servers it used.
func (b *builder) dns() {
	var fqdns int
	looked := slices.Sorted(slices.Values(b.dnsNames))
	for _, g := range b.sortedGrants() {
		if g.dir == flows.DirectionEgress && g.peer.Kind == aggregate.PeerFQDN {
			for _, ip := range b.s.reverseDNS[g.peer.FQDN] {
				for _, n := range b.s.namesOf[ip] {
					if _, ok := slices.BinarySearch(looked, n); ok && n != g.peer.FQDN {
						g.fqdnAlso = append(g.fqdnAlso, n)
					}
				}
			}
			slices.Sort(g.fqdnAlso)
			g.fqdnAlso = slices.Compact(g.fqdnAlso)
			// A name reached must also be allowed at the DNS proxy, or its lookup is refused.
			b.dnsNames = append(b.dnsNames, g.peer.FQDN)
			fqdns++
		}
	}
	slices.Sort(b.dnsNames)
	b.dnsNames = slices.Compact(b.dnsNames)
	var unwritable []string
	b.dnsNames = slices.DeleteFunc(b.dnsNames, func(n string) bool {
		if writableName.MatchString(n) {
			return false
		}
		unwritable = append(unwritable, strconv.Quote(n))
		return true
	})
	if len(unwritable) > 0 {
		// With no other name there is no DNS rule at all: port 53 stays open to every lookup.
		effect := "their lookups are not allowed"
		if len(b.dnsNames) == 0 {
			effect = "no DNS rule is written, so lookups are not restricted by name"
		}
		b.flag(Finding{Kind: FindingUnexpressible, Direction: flows.DirectionEgress, Detail: fmt.Sprintf(
			"%d names looked up cannot be written in a DNS rule (Cilium's matchName holds letters, digits, '-' and '_' between dots), so %s: %s",
			len(unwritable), effect, strings.Join(unwritable, ", "))})
	}
	if len(b.dnsNames) == 0 {
		return
	}
	servers := b.dnsPeers
	if len(servers) == 0 {
		// No edge carried lookups (no DNS visibility on them), but names were reached: the
		// peers spoken to on port 53 are the resolvers.
		servers = map[string]bool{}
		for k, g := range b.grants {
			if g.dir != flows.DirectionEgress {
				continue
			}
			if g.ports[portKey{proto: flows.ProtoUDP, port: 53}] != nil || g.ports[portKey{proto: flows.ProtoTCP, port: 53}] != nil {
				servers[k] = true
			}
		}
	}
	if len(servers) == 0 {
		if fqdns > 0 {
			b.flag(Finding{Kind: FindingNoDNS, Direction: flows.DirectionEgress, Detail: fmt.Sprintf(
				"%d external names are allowed by toFQDNs, but no DNS server was seen; Cilium learns their addresses only through a DNS rule", fqdns)})
		}
		return
	}
	for k := range servers {
		g := b.grants[k]
		g.dns = true
		for _, pk := range []portKey{{proto: flows.ProtoUDP, port: 53}, {proto: flows.ProtoTCP, port: 53}} {
			if ev := g.ports[pk]; ev != nil {
				delete(g.ports, pk)
				g.ports[dnsPortKey] = mergeEvidence(g.ports[dnsPortKey], ev)
			}
		}
	}
}

// dnsPortKey marks the merged 53/UDP+TCP evidence of a DNS server grant.
var dnsPortKey = portKey{proto: flows.ProtoUnknown, port: 53}

func mergeEvidence(a, b *portEvidence) *portEvidence {
	if a == nil {
		return b
	}
	a.flows += b.flows
	a.http = append(a.http, b.http...)
	return a
}

func (b *builder) noAllowDetail() string {
	if b.dropped.policy == 0 && b.dropped.other == 0 {
		// A skipped workload has no policy to carry its findings: say them here.
		if len(b.review) == 0 {
			return "no edge could be written as a rule"
		}
		const shown = 3
		var why []string
		for i, f := range b.review {
			if i == shown {
				why = append(why, fmt.Sprintf("and %d more", len(b.review)-shown))
				break
			}
			why = append(why, string(f.Kind)+findingText(f))
		}
		return "no edge could be written as a rule: " + strings.Join(why, "; ")
	}
	return fmt.Sprintf("nothing was forwarded: %d flows dropped by an enforced policy, %d dropped otherwise or with other verdicts; policy drops are never allowed automatically",
		b.dropped.policy, b.dropped.other)
}

func (b *builder) sortedGrants() []*grant {
	gs := make([]*grant, 0, len(b.grants))
	for _, g := range b.grants {
		gs = append(gs, g)
	}
	slices.SortFunc(gs, func(a, b *grant) int { return cmp.Compare(a.sortKey(), b.sortKey()) })
	return gs
}

func sortedPorts(g *grant) []portKey {
	ks := make([]portKey, 0, len(g.ports))
	for k := range g.ports {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b portKey) int {
		return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.port, b.port), cmp.Compare(a.end, b.end))
	})
	return ks
}

// ciliumProto maps our protocol to the policy API's.
func ciliumProto(p flows.Protocol) api.L4Proto {
	switch p {
	case flows.ProtoTCP:
		return api.ProtoTCP
	case flows.ProtoUDP:
		return api.ProtoUDP
	case flows.ProtoSCTP:
		return api.ProtoSCTP
	}
	return api.ProtoAny
}

// l4 renders a grant's ports: the DNS rule first, then plain ports (in chunks Cilium
// accepts), then one port rule per HTTP port; ICMP types separately (Cilium does not allow
// ICMPs and toPorts in one rule).
func (b *builder) l4(g *grant) (api.PortRules, api.ICMPRules) {
	var prs api.PortRules
	var plain []api.PortProtocol
	var httpRules api.PortRules
	var icmp []api.ICMPField
	for _, pk := range sortedPorts(g) {
		ev := g.ports[pk]
		switch {
		case pk == dnsPortKey:
			prs = append(prs, api.PortRule{
				Ports: []api.PortProtocol{{Port: "53", Protocol: api.ProtoTCP}, {Port: "53", Protocol: api.ProtoUDP}},
				Rules: &api.L7Rules{DNS: dnsRules(b.dnsNames, b.dnsTruncated, b.s.cfg.DNSSubdomainWildcard)},
			})
		case pk.proto.IsICMP():
			fam := api.IPv4Family
			if pk.proto == flows.ProtoICMPv6 {
				fam = api.IPv6Family
			}
			t := intstr.FromInt32(int32(pk.port))
			icmp = append(icmp, api.ICMPField{Family: fam, Type: &t})
		case b.httpPort(g, pk):
			hr := httpRulesFor(ev.http)
			if len(hr) > maxHTTPRules {
				b.flag(Finding{Kind: FindingHTTPWide, Direction: g.dir, Peer: g.display, Ports: pk.String(), Detail: fmt.Sprintf(
					"%d distinct method/path rules after generalizing numeric, UUID and digest segments", len(hr))})
			}
			if slices.ContainsFunc(hr, func(r api.PortRuleHTTP) bool { return strings.HasSuffix(r.Path, querySuffix) }) {
				b.flag(Finding{Kind: FindingHTTPQuery, Direction: g.dir, Peer: g.display, Ports: pk.String(), Detail: "query strings are not recorded, so the path rules allow any query string (Envoy matches path and query together)"})
			}
			httpRules = append(httpRules, api.PortRule{
				Ports: []api.PortProtocol{{Port: strconv.Itoa(int(pk.port)), Protocol: api.ProtoTCP}},
				Rules: &api.L7Rules{HTTP: hr},
			})
		default:
			pp := api.PortProtocol{Port: strconv.Itoa(int(pk.port)), Protocol: ciliumProto(pk.proto)}
			if pk.end > pk.port {
				pp.EndPort = int32(pk.end)
			}
			plain = append(plain, pp)
		}
	}
	for chunk := range slices.Chunk(plain, maxPorts) {
		prs = append(prs, api.PortRule{Ports: chunk})
	}
	prs = append(prs, httpRules...)
	var icmps api.ICMPRules
	for chunk := range slices.Chunk(icmp, maxICMPFields) {
		icmps = append(icmps, api.ICMPRule{Fields: chunk})
	}
	return prs, icmps
}

// httpPort reports whether a port of a grant gets HTTP rules: --l7 http, ingress, a single
// TCP port, and at least one usable HTTP sample.
func (b *builder) httpPort(g *grant, pk portKey) bool {
	ev := g.ports[pk]
	return b.s.cfg.L7HTTP && g.dir == flows.DirectionIngress && pk.proto == flows.ProtoTCP && pk.end == 0 &&
		!ev.httpIncomplete && !ev.l4Only && len(httpRulesFor(ev.http)) > 0
}

// policy renders the grants as one CCNP (without name and provenance, added by finish).
func (b *builder) policy(choice selectorChoice, disp string) *v2.CiliumClusterwideNetworkPolicy {
	rule := &api.Rule{
		EndpointSelector: choice.endpointSelector(b.wi.key.Namespace, ""),
		Description:      "Least-privilege policy for " + disp + " generated by recommender from observed Hubble flows.",
	}
	for _, g := range b.sortedGrants() {
		prs, icmps := b.l4(g)
		if g.dir == flows.DirectionIngress {
			var common api.IngressCommonRule
			switch g.peer.Kind {
			case aggregate.PeerWorkload:
				common.FromEndpoints = []api.EndpointSelector{*g.selector}
			case aggregate.PeerEntity:
				common.FromEntities = api.EntitySlice{g.entity}
			case aggregate.PeerCIDR:
				common.FromCIDRSet = api.CIDRRuleSlice{{Cidr: api.CIDR(g.peer.CIDR)}}
			}
			if len(prs) > 0 {
				rule.Ingress = append(rule.Ingress, api.IngressRule{IngressCommonRule: common, ToPorts: prs})
			}
			if len(icmps) > 0 {
				rule.Ingress = append(rule.Ingress, api.IngressRule{IngressCommonRule: common, ICMPs: icmps})
			}
			continue
		}
		var er api.EgressRule
		switch g.peer.Kind {
		case aggregate.PeerWorkload:
			er.ToEndpoints = []api.EndpointSelector{*g.selector}
		case aggregate.PeerEntity:
			er.ToEntities = api.EntitySlice{g.entity}
		case aggregate.PeerCIDR:
			er.ToCIDRSet = api.CIDRRuleSlice{{Cidr: api.CIDR(g.peer.CIDR)}}
		case aggregate.PeerFQDN:
			er.ToFQDNs = api.FQDNSelectorSlice{{MatchName: g.peer.FQDN}}
			for _, n := range g.fqdnAlso {
				er.ToFQDNs = append(er.ToFQDNs, api.FQDNSelector{MatchName: n})
			}
		}
		if len(prs) > 0 {
			r := er
			r.ToPorts = prs
			rule.Egress = append(rule.Egress, r)
		}
		if len(icmps) > 0 {
			r := er
			r.ICMPs = icmps
			rule.Egress = append(rule.Egress, r)
		}
	}
	rule.Ingress = mergeRules(rule.Ingress, func(r *api.IngressRule) any {
		peer := *r
		peer.ToPorts, peer.ICMPs = nil, nil
		return peer
	}, func(r *api.IngressRule) (*api.PortRules, *api.ICMPRules) { return &r.ToPorts, &r.ICMPs })
	rule.Egress = mergeRules(rule.Egress, func(r *api.EgressRule) any {
		peer := *r
		peer.ToPorts, peer.ICMPs = nil, nil
		return peer
	}, func(r *api.EgressRule) (*api.PortRules, *api.ICMPRules) { return &r.ToPorts, &r.ICMPs })
	return &v2.CiliumClusterwideNetworkPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: v2.SchemeGroupVersion.String(), Kind: v2.CCNPKindDefinition},
		Spec:     rule,
	}
}

// mergeRules folds rules naming the same peers into the first of them, with the union of
// their port and ICMP rules (identical ones once). Distinct observed peers can render to one
// selector: the three versions of a canary are one peer (app=reviews) to their clients, and
// three copies of one rule say nothing more than one. Port rules and ICMP rules stay in
// separate rules, as Cilium requires. Rules are matched by the JSON of their peer part, so a
// server with thousands of clients costs one encoding per rule, not a comparison per pair.
func mergeRules[R any](rules []R, peerOf func(*R) any, lists func(*R) (*api.PortRules, *api.ICMPRules)) []R {
	var out []R
	index := map[string]int{} // peer JSON and rule kind -> position in out
	for _, r := range rules {
		ports, icmps := lists(&r)
		peer, err := json.Marshal(peerOf(&r))
		if err != nil {
			out = append(out, r) // a policy API rule always encodes; never merge what cannot be compared
			continue
		}
		key := fmt.Sprintf("%t\x00%s", len(*icmps) > 0, peer)
		i, ok := index[key]
		if !ok {
			index[key] = len(out)
			out = append(out, r)
			continue
		}
		oports, oicmps := lists(&out[i])
		for _, pr := range *ports {
			if !slices.ContainsFunc(*oports, func(x api.PortRule) bool { return reflect.DeepEqual(x, pr) }) {
				*oports = append(*oports, pr)
			}
		}
		for _, ir := range *icmps {
			if !slices.ContainsFunc(*oicmps, func(x api.ICMPRule) bool { return reflect.DeepEqual(x, ir) }) {
				*oicmps = append(*oicmps, ir)
			}
		}
	}
	return out
}

// summaries describes the grants for the report, in rule order.
func (b *builder) summaries() []PeerSummary {
	var out []PeerSummary
	for _, g := range b.sortedGrants() {
		ps := PeerSummary{Direction: g.dir, Peer: g.display, Flows: g.flows, FirstSeen: g.firstSeen, LastSeen: g.lastSeen}
		for _, pk := range sortedPorts(g) {
			s := pk.String()
			switch {
			case pk == dnsPortKey:
				s = "53/TCP+UDP (dns)"
			case pk.proto.IsICMP():
				s = strconv.Itoa(int(pk.port)) + "/" + pk.proto.String()
			case b.httpPort(g, pk):
				s += " (http)"
			}
			ps.Ports = append(ps.Ports, s)
		}
		out = append(out, ps)
	}
	return out
}

// findings returns the review list: CIDR fallbacks and broad entities per grant plus what
// the edges flagged, sorted and without duplicates.
func (b *builder) findings() []Finding {
	for _, g := range b.sortedGrants() {
		ports := make([]string, 0, len(g.ports))
		for _, pk := range sortedPorts(g) {
			ports = append(ports, pk.String())
		}
		switch {
		case g.peer.Kind == aggregate.PeerCIDR:
			b.flag(Finding{Kind: FindingCIDR, Direction: g.dir, Peer: g.display, Ports: strings.Join(ports, ","),
				Detail: "no DNS answer named this address; addresses of cloud services change, prefer a name"})
		case g.peer.Kind == aggregate.PeerEntity && broadEntities[g.entity]:
			b.flag(Finding{Kind: FindingEntity, Direction: g.dir, Peer: g.display, Ports: strings.Join(ports, ","),
				Detail: fmt.Sprintf("entity %s covers endpoints that were not identified", g.entity)})
		}
	}
	slices.SortFunc(b.review, func(a, c Finding) int {
		return cmp.Or(cmp.Compare(a.Kind, c.Kind), cmp.Compare(a.Direction, c.Direction), cmp.Compare(a.Peer, c.Peer),
			cmp.Compare(a.Ports, c.Ports), cmp.Compare(a.Detail, c.Detail))
	})
	return slices.Compact(b.review)
}
