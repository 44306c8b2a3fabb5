package audit

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/cilium/cilium/pkg/iana"
	"github.com/cilium/cilium/pkg/policy/api"
	"github.com/cilium/cilium/pkg/policy/types"

	"github.com/recommender/recommender/pkg/flows"
)

// entry is one compiled rule: one element of a spec's ingress, ingressDeny, egress or egressDeny.
type entry struct {
	ref         RuleRef
	subject     *types.LabelSelector
	ingress     bool
	deny        bool
	defaultDeny bool

	// l3 are Cilium's peer selectors (endpoints, entities, CIDRs), matched by Cilium's code.
	l3 types.Selectors
	// fqdns are toFQDNs, matched against the DNS names Hubble attached to a world peer.
	fqdns []*regexp.Regexp
	// l3None: the rule selects no peer; l3Any: any peer (ports only).
	l3None, l3Any bool
	// ports empty: an L3-only rule, all ports and protocols.
	ports []portMatch
	tls   bool
}

// portMatch is one port/protocol of a toPorts entry, with the L7 rules of its port rule.
type portMatch struct {
	protos    []flows.Protocol // empty: every protocol with ports (ANY)
	port, end uint16           // port 0: all ports; end 0: single port
	named     string
	l7        *l7Match
}

// anyProtos is what "ANY" expands to in Cilium (mergeL4Filter): protocols with ports.
var anyProtos = []flows.Protocol{flows.ProtoTCP, flows.ProtoUDP, flows.ProtoSCTP}

func compilePort(pp api.PortProtocol, l7 *l7Match) portMatch {
	pm := portMatch{l7: l7}
	switch {
	case pp.Protocol.IsAny():
		pm.protos = anyProtos
	case pp.Protocol == api.ProtoICMP:
		pm.protos = []flows.Protocol{flows.ProtoICMPv4}
	case pp.Protocol == api.ProtoICMPv6:
		pm.protos = []flows.Protocol{flows.ProtoICMPv6}
	default:
		// TCP, UDP, SCTP share names; other IP protocols never match a flow we can evaluate.
		pm.protos = []flows.Protocol{flows.ParseProtocol(string(pp.Protocol))}
	}
	if iana.IsSvcName(pp.Port) {
		pm.named = pp.Port
		return pm
	}
	if p, err := strconv.ParseUint(pp.Port, 0, 16); err == nil {
		pm.port = uint16(p)
	}
	if pp.EndPort > 0 && int(pp.EndPort) >= int(pm.port) {
		pm.end = uint16(pp.EndPort)
	}
	return pm
}

func (pm *portMatch) protoMatches(p flows.Protocol) bool {
	for _, x := range pm.protos {
		if x == p {
			return true
		}
	}
	return false
}

func (pm *portMatch) portMatches(port uint16) bool {
	switch {
	case pm.port == 0:
		return true
	case pm.end > 0:
		return port >= pm.port && port <= pm.end
	}
	return port == pm.port
}

// l7Match holds a port rule's HTTP and DNS rules.
type l7Match struct {
	hasHTTP, hasDNS bool
	http            []httpMatch
	dns             []*regexp.Regexp
}

type httpMatch struct {
	method, path, host *regexp.Regexp // nil: any
	headers            bool           // the rule also needs headers the flow does not show
	text               string
}

func (h *httpMatch) matches(r *flows.HTTP) bool {
	return (h.method == nil || h.method.MatchString(r.Method)) &&
		(h.path == nil || h.path.MatchString(r.Path)) &&
		(h.host == nil || h.host.MatchString(r.Host))
}

type matchResult uint8

const (
	matchNo matchResult = iota
	matchYes
	matchL7Denied
	matchUnresolved
)

type match struct {
	result matchResult
	// portSpecific: the match came from a toPorts entry, not an L3-only rule.
	portSpecific bool
	detail       string
}

// match checks peer, port and L7 request of q against the rule.
func (e *entry) match(q *query) match {
	if !e.peerMatches(q) {
		return match{}
	}
	if len(e.ports) == 0 {
		return match{result: matchYes}
	}
	best := match{}
	for i := range e.ports {
		pm := &e.ports[i]
		if !pm.protoMatches(q.proto) {
			continue
		}
		if pm.named != "" {
			if best.result == matchNo {
				best = match{result: matchUnresolved, detail: "named port " + strconv.Quote(pm.named)}
			}
			continue
		}
		if !pm.portMatches(q.port) {
			continue
		}
		m := pm.l7Check(q.l7)
		m.portSpecific = true
		if m.result == matchYes {
			return m
		}
		if best.result == matchNo || (best.result == matchUnresolved && m.result == matchL7Denied) {
			best = m
		}
	}
	return best
}

func (e *entry) peerMatches(q *query) bool {
	switch {
	case e.l3None:
		return false
	case e.l3Any:
		return true
	}
	if e.l3.Matches(q.peer.labels) {
		return true
	}
	if q.peer.world {
		for _, re := range e.fqdns {
			for _, n := range q.names {
				if re.MatchString(n + ".") {
					return true
				}
			}
		}
	}
	return false
}

// l7Check applies the port rule's L7 rules to the flow's request, if it carries one of the kind
// the rules restrict. An L4 flow to an L7-restricted port passes: the proxy decides per request,
// and Hubble reports those requests as their own L7 flows.
func (pm *portMatch) l7Check(l7 *flows.L7) match {
	if pm.l7 == nil || l7 == nil {
		return match{result: matchYes}
	}
	switch {
	case l7.HTTP != nil && pm.l7.hasHTTP:
		headersOnly := false
		for i := range pm.l7.http {
			h := &pm.l7.http[i]
			if h.matches(l7.HTTP) {
				if !h.headers {
					return match{result: matchYes}
				}
				headersOnly = true
			}
		}
		if headersOnly {
			return match{result: matchUnresolved, detail: "http rule needs request headers the flow does not carry"}
		}
		return match{result: matchL7Denied, detail: "http " + l7.HTTP.Method + " " + l7.HTTP.Path + " matches no http rule"}
	case l7.DNS != nil && pm.l7.hasDNS:
		q := strings.ToLower(l7.DNS.Query)
		if !strings.HasSuffix(q, ".") {
			q += "."
		}
		for _, re := range pm.l7.dns {
			if re.MatchString(q) {
				return match{result: matchYes}
			}
		}
		return match{result: matchL7Denied, detail: "dns query " + strings.TrimSuffix(q, ".") + " matches no dns rule"}
	}
	return match{result: matchYes}
}
