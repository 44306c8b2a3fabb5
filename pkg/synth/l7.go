package synth

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/cilium/cilium/pkg/policy/api"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// dnsPatternMin is how many sibling names (one label under the same parent) it takes before
// they are written as "*.parent" instead of one matchName each. Cilium's "*" matches within
// one label only, so the pattern never reaches deeper names.
const dnsPatternMin = 3

// maxHTTPRules is the number of method/path rules on one port above which the port is
// flagged for review: past it the paths probably carry identifiers the generalization missed.
const maxHTTPRules = 20

// writableName is a DNS name as a Cilium matchName can hold and match it: letters, digits, '-'
// and '_' between single dots (the CRD's pattern, pkg/policy/api fqdn.go; names are kept
// without their trailing dot). Another character makes Cilium refuse the whole policy; an
// empty label passes its check but matches nothing a resolver sends.
var writableName = regexp.MustCompile(`^[-a-zA-Z0-9_]+(\.[-a-zA-Z0-9_]+)*$`)

// dnsRules writes the names a workload resolved as DNS L7 rules, sorted: matchPattern for a
// clear family of sibling names under a parent of at least two labels (never "*.com"),
// matchName otherwise. The names are writableName ones (builder.dns leaves the others out).
// With truncated set (the name list is incomplete) it allows every lookup instead: the DNS
// rule only lets names resolve, toFQDNs rules still decide what can be reached.
//
// With subdomains (Config.DNSSubdomainWildcard: the target Cilium is 1.19 or newer, where
// "**." matches one or more labels), the names still exact after that which share an ancestor
// of at least two labels two levels up, under different parents, become "**.ancestor" when
// there are at least dnsPatternMin of them. Older agents read "**" as "*", which would not
// match the deeper names, so this is never done by default.
func dnsRules(names []string, truncated, subdomains bool) api.PortRulesDNS {
	if truncated {
		return api.PortRulesDNS{{MatchPattern: "*"}}
	}
	byParent := map[string][]string{}
	for _, n := range names {
		_, parent, ok := strings.Cut(n, ".")
		if !ok || !strings.Contains(parent, ".") {
			parent = ""
		}
		byParent[parent] = append(byParent[parent], n)
	}
	var out api.PortRulesDNS
	var exact []string
	for parent, ns := range byParent {
		if parent != "" && len(ns) >= dnsPatternMin {
			out = append(out, api.PortRuleDNS{MatchPattern: "*." + parent})
			continue
		}
		exact = append(exact, ns...)
	}
	if subdomains {
		byAncestor := map[string][]string{}
		for _, n := range exact {
			parts := strings.SplitN(n, ".", 3)
			if len(parts) == 3 && strings.Contains(parts[2], ".") {
				byAncestor[parts[2]] = append(byAncestor[parts[2]], n)
			}
		}
		for anc, ns := range byAncestor {
			if len(ns) < dnsPatternMin {
				continue
			}
			out = append(out, api.PortRuleDNS{MatchPattern: "**." + anc})
			exact = slices.DeleteFunc(exact, func(n string) bool { return slices.Contains(ns, n) })
		}
	}
	for _, n := range exact {
		out = append(out, api.PortRuleDNS{MatchName: n})
	}
	slices.SortFunc(out, func(a, b api.PortRuleDNS) int {
		return cmp.Or(cmp.Compare(a.MatchName+a.MatchPattern, b.MatchName+b.MatchPattern), cmp.Compare(a.MatchPattern, b.MatchPattern))
	})
	return slices.Compact(out)
}

// methodToken is an HTTP method: a token of RFC 9110's characters. Cilium's method rule is a
// regular expression, so a rule holds the method quoted and matches it exactly as observed
// (methods are case-sensitive).
var methodToken = regexp.MustCompile("^[-!#$%&'*+.^_`|~0-9A-Za-z]+$")

// writableHTTP reports whether a rule can match the request s exactly: its method is a token
// and its path an origin-form path.
func writableHTTP(s aggregate.HTTPSample) bool {
	return methodToken.MatchString(s.Method) && strings.HasPrefix(s.Path, "/")
}

const (
	numericPattern = `[0-9]+`
	uuidPattern    = `[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`
	// querySuffix lets a request carry a query string. Cilium hands the path regex to Envoy,
	// which matches it against the whole :path header, query included: without the suffix a
	// rule for /api/orders denies /api/orders?id=42. The observations hold no query strings
	// (pkg/flows drops them: they carry identifiers and secrets), so any query is allowed on an
	// allowed path, and the port is flagged (FindingHTTPQuery).
	querySuffix = `(\?.*)?`
)

// pathRegex generalizes a path conservatively, segment by segment as flows.PathSegmentKind
// classifies them (the aggregator keeps one sample per flows.HTTPPathShape, so paths of one
// shape get one rule): digits only, a UUID or a hex digest becomes a pattern for exactly that
// shape (digests keep their length); everything else is matched literally. gRPC method paths
// are matched exactly, without a query.
func pathRegex(method, path string) string {
	if flows.IsGRPCPath(method, path) {
		return quoteLiteral(path)
	}
	segs := strings.Split(path, "/")
	for i, s := range segs {
		switch flows.PathSegmentKind(s) {
		case flows.SegmentNumber:
			segs[i] = numericPattern
		case flows.SegmentUUID:
			segs[i] = uuidPattern
		case flows.SegmentHex:
			segs[i] = fmt.Sprintf("[0-9a-fA-F]{%d}", len(s))
		default:
			segs[i] = quoteLiteral(s)
		}
	}
	return strings.Join(segs, "/") + querySuffix
}

// quoteLiteral is regexp.QuoteMeta that also writes each rune that is not printable as
// \x{...} (RE2 syntax, which Envoy and Go read alike): a path may hold any character, and YAML
// refuses control characters, so the policy could not be written at all.
func quoteLiteral(s string) string {
	q := regexp.QuoteMeta(s)
	if !strings.ContainsFunc(q, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return q
	}
	var b strings.Builder
	for _, r := range q {
		if unicode.IsPrint(r) {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, `\x{%x}`, r)
		}
	}
	return b.String()
}

// httpRulesFor writes the observed HTTP samples as rules: one per method and generalized
// path, never a method that was not observed (methods are matched exactly).
func httpRulesFor(samples []aggregate.HTTPSample) api.PortRulesHTTP {
	var out api.PortRulesHTTP
	for _, s := range samples {
		if !writableHTTP(s) {
			continue // the port is allowed at L4 instead (portEvidence.httpIncomplete)
		}
		out = append(out, api.PortRuleHTTP{Method: regexp.QuoteMeta(s.Method), Path: pathRegex(s.Method, s.Path)})
	}
	slices.SortFunc(out, func(a, b api.PortRuleHTTP) int {
		return cmp.Or(cmp.Compare(a.Path, b.Path), cmp.Compare(a.Method, b.Method))
	})
	return slices.CompactFunc(out, func(a, b api.PortRuleHTTP) bool { return a.Path == b.Path && a.Method == b.Method })
}

// reconcileL7 keeps HTTP rules from being undone within and across policies. Cilium unites the
// rules of every policy that selects an endpoint, and a port allowed from a peer without L7
// rules lets every request through, whatever other HTTP rules on that port say. So where drafts
// select a common observed workload (versions seen one after the other share a selector), or
// one draft has grants whose peers render to one selector, and they allow the same peer
// selector on the same port, some with HTTP rules and some without, all get
// the union of their HTTP samples. When one has no rules because its samples were truncated,
// all stay at L4 and are flagged: rules that cannot hold would read as protection.
func (s *synthesizer) reconcileL7(drafts []*draft) {
	byNS := map[string][]*draft{}
	for _, d := range drafts {
		byNS[d.p.Workload.Namespace] = append(byNS[d.p.Workload.Namespace], d)
	}
	for _, k := range slices.Sorted(maps.Keys(s.infos)) {
		wi := s.infos[k]
		var sel []*draft
		for _, d := range byNS[wi.key.Namespace] {
			if d.choice.selects(wi.key.Labels) {
				sel = append(sel, d)
			}
		}
		// A single draft too: two observed peers can render to one selector (canary versions
		// calling one server), and one of them may have been seen with HTTP and one without.
		if len(sel) > 0 {
			reconcileGroup(sel)
		}
	}
}

// reconcileGroup reconciles the HTTP rules of drafts that select the same pods.
func reconcileGroup(drafts []*draft) {
	type slot struct {
		b  *builder
		g  *grant
		pk portKey
	}
	slots := map[string][]slot{}
	for _, d := range drafts {
		for _, g := range d.b.sortedGrants() {
			if g.dir != flows.DirectionIngress || g.selector == nil {
				continue
			}
			sel, err := json.Marshal(g.selector)
			if err != nil {
				continue // an EndpointSelector always marshals
			}
			for _, pk := range sortedPorts(g) {
				if pk.proto == flows.ProtoTCP && pk.end == 0 {
					key := string(sel) + "\x00" + pk.String()
					slots[key] = append(slots[key], slot{d.b, g, pk})
				}
			}
		}
	}
	for _, key := range slices.Sorted(maps.Keys(slots)) {
		group := slots[key]
		var l7, l4, truncated bool
		var samples []aggregate.HTTPSample
		for _, sl := range group {
			ev := sl.g.ports[sl.pk]
			if sl.b.httpPort(sl.g, sl.pk) {
				l7 = true
			} else {
				l4 = true
			}
			truncated = truncated || ev.httpIncomplete
			samples = append(samples, ev.http...)
		}
		if !l7 || !l4 {
			continue
		}
		slices.SortFunc(samples, func(a, b aggregate.HTTPSample) int {
			return cmp.Or(cmp.Compare(a.Method, b.Method), cmp.Compare(a.Path, b.Path))
		})
		samples = slices.CompactFunc(samples, func(a, b aggregate.HTTPSample) bool { return a.Method == b.Method && a.Path == b.Path })
		for _, sl := range group {
			ev := sl.g.ports[sl.pk]
			if truncated {
				had := sl.b.httpPort(sl.g, sl.pk)
				ev.l4Only = true
				if !had {
					continue // flagged as truncated already
				}
				sl.b.flag(Finding{Kind: FindingHTTPUndone, Direction: flows.DirectionIngress, Peer: sl.g.display, Ports: sl.pk.String(), Detail: "another proposed policy selecting the same pods allows this peer and port at L4 (more distinct HTTP method and path shapes than samples kept), which would undo HTTP rules here; the port is allowed at L4"})
				continue
			}
			ev.http = slices.Clone(samples)
		}
	}
}
