package synth

import (
	"cmp"
	"regexp"
	"slices"
	"strings"

	"github.com/cilium/cilium/pkg/policy/api"

	"github.com/recommender/recommender/pkg/aggregate"
)

// dnsPatternMin is how many sibling names (one label under the same parent) it takes before
// they are written as "*.parent" instead of one matchName each. Cilium's "*" matches within
// one label only, so the pattern never reaches deeper names.
const dnsPatternMin = 3

// maxHTTPRules is the number of method/path rules on one port above which the port is
// flagged for review: past it the paths probably carry identifiers the generalization missed.
const maxHTTPRules = 20

// matchNameChars is what Cilium accepts in a matchName (pkg/policy/api fqdn.go).
var matchNameChars = regexp.MustCompile(`^[-a-zA-Z0-9_.]+$`)

// dnsRules writes the names a workload resolved as DNS L7 rules, sorted: matchPattern for a
// clear family of sibling names under a parent of at least two labels (never "*.com"),
// matchName otherwise.
// With truncated set (the name list is incomplete) it allows every lookup instead: the DNS
// rule only lets names resolve, toFQDNs rules still decide what can be reached.
func dnsRules(names []string, truncated bool) api.PortRulesDNS {
	if truncated {
		return api.PortRulesDNS{{MatchPattern: "*"}}
	}
	byParent := map[string][]string{}
	for _, n := range names {
		if !matchNameChars.MatchString(n) {
			continue
		}
		_, parent, ok := strings.Cut(n, ".")
		if !ok || !strings.Contains(parent, ".") {
			parent = ""
		}
		byParent[parent] = append(byParent[parent], n)
	}
	var out api.PortRulesDNS
	for parent, ns := range byParent {
		if parent != "" && len(ns) >= dnsPatternMin {
			out = append(out, api.PortRuleDNS{MatchPattern: "*." + parent})
			continue
		}
		for _, n := range ns {
			out = append(out, api.PortRuleDNS{MatchName: n})
		}
	}
	slices.SortFunc(out, func(a, b api.PortRuleDNS) int {
		return cmp.Or(cmp.Compare(a.MatchName+a.MatchPattern, b.MatchName+b.MatchPattern), cmp.Compare(a.MatchPattern, b.MatchPattern))
	})
	return slices.Compact(out)
}

var (
	numericSegment = regexp.MustCompile(`^[0-9]+$`)
	uuidSegment    = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	methodToken    = regexp.MustCompile(`^[A-Z]+$`)
)

const (
	numericPattern = `[0-9]+`
	uuidPattern    = `[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`
	// querySuffix lets a request carry a query string. Envoy matches the regex against the
	// whole :path, query included, and Hubble records were stored without their query (it
	// holds identifiers and secrets), so the observed paths say nothing about it.
	querySuffix = `(\?.*)?`
)

// pathRegex generalizes a path conservatively: a segment made only of digits, or a UUID,
// becomes a pattern for exactly that shape; everything else is matched literally.
func pathRegex(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		switch {
		case numericSegment.MatchString(s):
			segs[i] = numericPattern
		case uuidSegment.MatchString(s):
			segs[i] = uuidPattern
		default:
			segs[i] = regexp.QuoteMeta(s)
		}
	}
	return strings.Join(segs, "/") + querySuffix
}

// httpRulesFor writes the observed HTTP samples as rules: one per method and generalized
// path, never a method that was not observed.
func httpRulesFor(samples []aggregate.HTTPSample) api.PortRulesHTTP {
	var out api.PortRulesHTTP
	for _, s := range samples {
		m := strings.ToUpper(s.Method)
		if !methodToken.MatchString(m) || !strings.HasPrefix(s.Path, "/") {
			continue
		}
		out = append(out, api.PortRuleHTTP{Method: m, Path: pathRegex(s.Path)})
	}
	slices.SortFunc(out, func(a, b api.PortRuleHTTP) int {
		return cmp.Or(cmp.Compare(a.Path, b.Path), cmp.Compare(a.Method, b.Method))
	})
	return slices.CompactFunc(out, func(a, b api.PortRuleHTTP) bool { return a.Path == b.Path && a.Method == b.Method })
}
