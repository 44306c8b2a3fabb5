package replay

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Cilium's own filter package (pkg/hubble/filters) pulls in about a thousand packages
// (kvstore, etcd, client-go, cel-go), which would make this relay, the tests and the
// benchmarks that use it as much heavier to build as the rest of pkg/flows. The filters
// here follow its semantics for the fields users filter on; a request using any other
// field is refused with InvalidArgument rather than answered unfiltered.

// match reports whether one flow passes one FlowFilter: every field set must match (AND),
// and within a field any value may match (OR).
type match func(f *flowpb.Flow) bool

// filterList is an OR of FlowFilters.
type filterList []match

// any reports whether some filter matches; an empty list matches nothing.
func (l filterList) any(f *flowpb.Flow) bool {
	for _, m := range l {
		if m(f) {
			return true
		}
	}
	return false
}

// apply is Hubble's rule: the flow passes when the whitelist is empty or matches, and the
// blacklist is empty or does not match.
func apply(white, black filterList, f *flowpb.Flow) bool {
	return (len(white) == 0 || white.any(f)) && (len(black) == 0 || !black.any(f))
}

// supported names the FlowFilter fields compileFilter understands.
var supported = map[protoreflect.Name]bool{
	"uuid": true, "source_ip": true, "destination_ip": true, "source_pod": true, "destination_pod": true,
	"source_fqdn": true, "destination_fqdn": true, "source_label": true, "destination_label": true,
	"source_identity": true, "destination_identity": true, "traffic_direction": true, "verdict": true,
	"drop_reason_desc": true, "event_type": true, "protocol": true, "source_port": true,
	"destination_port": true, "reply": true, "dns_query": true, "node_name": true, "http_method": true,
	"http_path": true, "http_status_code": true, "ip_version": true,
}

func compileFilters(ffs []*flowpb.FlowFilter) (filterList, error) {
	out := make(filterList, 0, len(ffs))
	for _, ff := range ffs {
		m, err := compileFilter(ff)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func compileFilter(ff *flowpb.FlowFilter) (match, error) {
	var unsupported []string
	ff.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !supported[fd.Name()] {
			unsupported = append(unsupported, string(fd.Name()))
		}
		return true
	})
	if len(unsupported) > 0 {
		return nil, fmt.Errorf("flow filter fields not supported by the replay relay: %s", strings.Join(unsupported, ", "))
	}
	var ms []match
	add := func(m match, err error) error {
		if err != nil {
			return err
		}
		if m != nil {
			ms = append(ms, m)
		}
		return nil
	}
	for _, err := range []error{
		add(strIn(ff.GetUuid(), (*flowpb.Flow).GetUuid), nil),
		add(ipFilter(ff.GetSourceIp(), func(f *flowpb.Flow) string { return f.GetIP().GetSource() })),
		add(ipFilter(ff.GetDestinationIp(), func(f *flowpb.Flow) string { return f.GetIP().GetDestination() })),
		add(podFilter(ff.GetSourcePod(), (*flowpb.Flow).GetSource)),
		add(podFilter(ff.GetDestinationPod(), (*flowpb.Flow).GetDestination)),
		add(fqdnFilter(ff.GetSourceFqdn(), (*flowpb.Flow).GetSourceNames)),
		add(fqdnFilter(ff.GetDestinationFqdn(), (*flowpb.Flow).GetDestinationNames)),
		add(labelFilter(ff.GetSourceLabel(), (*flowpb.Flow).GetSource)),
		add(labelFilter(ff.GetDestinationLabel(), (*flowpb.Flow).GetDestination)),
		add(valueIn(ff.GetSourceIdentity(), func(f *flowpb.Flow) uint32 { return f.GetSource().GetIdentity() }), nil),
		add(valueIn(ff.GetDestinationIdentity(), func(f *flowpb.Flow) uint32 { return f.GetDestination().GetIdentity() }), nil),
		add(valueIn(ff.GetTrafficDirection(), (*flowpb.Flow).GetTrafficDirection), nil),
		add(valueIn(ff.GetVerdict(), (*flowpb.Flow).GetVerdict), nil),
		add(valueIn(ff.GetDropReasonDesc(), (*flowpb.Flow).GetDropReasonDesc), nil),
		add(valueIn(ff.GetReply(), func(f *flowpb.Flow) bool { return f.GetIsReply().GetValue() }), nil),
		add(valueIn(ff.GetIpVersion(), func(f *flowpb.Flow) flowpb.IPVersion { return f.GetIP().GetIpVersion() }), nil),
		add(eventTypeFilter(ff.GetEventType()), nil),
		add(protocolFilter(ff.GetProtocol())),
		add(portFilter(ff.GetSourcePort(), true)),
		add(portFilter(ff.GetDestinationPort(), false)),
		add(regexpFilter(ff.GetDnsQuery(), func(f *flowpb.Flow) (string, bool) {
			d := f.GetL7().GetDns()
			return d.GetQuery(), d != nil
		})),
		add(nodeFilter(ff.GetNodeName())),
		add(strIn(ff.GetHttpMethod(), func(f *flowpb.Flow) string { return f.GetL7().GetHttp().GetMethod() }), nil),
		add(regexpFilter(ff.GetHttpPath(), func(f *flowpb.Flow) (string, bool) {
			h := f.GetL7().GetHttp()
			return urlPath(h.GetUrl()), h != nil
		})),
		add(statusFilter(ff.GetHttpStatusCode())),
	} {
		if err != nil {
			return nil, fmt.Errorf("invalid flow filter: %w", err)
		}
	}
	return func(f *flowpb.Flow) bool {
		for _, m := range ms {
			if !m(f) {
				return false
			}
		}
		return true
	}, nil
}

func strIn(want []string, get func(*flowpb.Flow) string) match {
	if len(want) == 0 {
		return nil
	}
	return func(f *flowpb.Flow) bool { return slices.Contains(want, get(f)) }
}

func valueIn[T comparable](want []T, get func(*flowpb.Flow) T) match {
	if len(want) == 0 {
		return nil
	}
	return func(f *flowpb.Flow) bool { return slices.Contains(want, get(f)) }
}

// ipFilter matches exact addresses or CIDR prefixes, as Hubble's --ip filters do.
func ipFilter(want []string, get func(*flowpb.Flow) string) (match, error) {
	if len(want) == 0 {
		return nil, nil
	}
	var prefixes []netip.Prefix
	for _, w := range want {
		if strings.Contains(w, "/") {
			p, err := netip.ParsePrefix(w)
			if err != nil {
				return nil, fmt.Errorf("ip %q: %w", w, err)
			}
			prefixes = append(prefixes, p)
			continue
		}
		a, err := netip.ParseAddr(w)
		if err != nil {
			return nil, fmt.Errorf("ip %q: %w", w, err)
		}
		prefixes = append(prefixes, netip.PrefixFrom(a, a.BitLen()))
	}
	return func(f *flowpb.Flow) bool {
		a, err := netip.ParseAddr(get(f))
		if err != nil {
			return false
		}
		return slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(a) })
	}, nil
}

// podFilter matches "namespace/pod-name-prefix"; a value without "/" means namespace
// "default", and "namespace/" any pod of the namespace (Hubble's ParseNamespaceName).
func podFilter(want []string, ep func(*flowpb.Flow) *flowpb.Endpoint) (match, error) {
	if len(want) == 0 {
		return nil, nil
	}
	type nsPrefix struct{ ns, prefix string }
	var ps []nsPrefix
	for _, w := range want {
		if w == "" {
			return nil, fmt.Errorf("pod name must not be empty")
		}
		ns, name, ok := strings.Cut(w, "/")
		if !ok {
			ns, name = "default", w
		}
		ps = append(ps, nsPrefix{ns, name})
	}
	return func(f *flowpb.Flow) bool {
		e := ep(f)
		if e.GetNamespace() == "" && e.GetPodName() == "" {
			return false
		}
		return slices.ContainsFunc(ps, func(p nsPrefix) bool {
			return (p.ns == "" || p.ns == e.GetNamespace()) && strings.HasPrefix(e.GetPodName(), p.prefix)
		})
	}, nil
}

// fqdnFilter matches names with "*" wildcards standing for any run of characters within a
// label, as Hubble's FQDN patterns do; a trailing dot is ignored.
func fqdnFilter(want []string, get func(*flowpb.Flow) []string) (match, error) {
	if len(want) == 0 {
		return nil, nil
	}
	var alts []string
	for _, w := range want {
		w = strings.TrimSuffix(strings.ToLower(w), ".")
		if w == "" {
			return nil, fmt.Errorf("empty fqdn pattern")
		}
		alts = append(alts, strings.ReplaceAll(regexp.QuoteMeta(w), `\*`, `[-a-z0-9_]*`))
	}
	re := regexp.MustCompile(`^(?:` + strings.Join(alts, "|") + `)$`)
	return func(f *flowpb.Flow) bool {
		return slices.ContainsFunc(get(f), func(n string) bool {
			return re.MatchString(strings.TrimSuffix(strings.ToLower(n), "."))
		})
	}, nil
}

// labelTerm is one requirement of a label selector: key (optionally "source:key") with
// "=value", "!=value", presence ("key") or absence ("!key").
type labelTerm struct {
	source, key, value string
	hasValue, negate   bool
}

// labelFilter matches selectors written as Hubble's --label flag takes them: comma
// separated terms, all of which must hold ("k8s:app=web,tier!=db,!canary"). A key without
// source matches any source, like Cilium's "any" source.
func labelFilter(want []string, ep func(*flowpb.Flow) *flowpb.Endpoint) (match, error) {
	if len(want) == 0 {
		return nil, nil
	}
	var selectors [][]labelTerm
	for _, w := range want {
		var terms []labelTerm
		for raw := range strings.SplitSeq(w, ",") {
			raw = strings.TrimSpace(raw)
			if raw == "" {
				return nil, fmt.Errorf("label selector %q: empty term", w)
			}
			var t labelTerm
			switch {
			case strings.Contains(raw, "!="):
				k, v, _ := strings.Cut(raw, "!=")
				t = labelTerm{key: k, value: v, hasValue: true, negate: true}
			case strings.Contains(raw, "=="):
				k, v, _ := strings.Cut(raw, "==")
				t = labelTerm{key: k, value: v, hasValue: true}
			case strings.Contains(raw, "="):
				k, v, _ := strings.Cut(raw, "=")
				t = labelTerm{key: k, value: v, hasValue: true}
			case strings.HasPrefix(raw, "!"):
				t = labelTerm{key: raw[1:], negate: true}
			default:
				t = labelTerm{key: raw}
			}
			if src, k, ok := strings.Cut(t.key, ":"); ok {
				t.source, t.key = src, k
			}
			if t.source == "any" {
				t.source = ""
			}
			if t.key == "" {
				return nil, fmt.Errorf("label selector %q: empty key", w)
			}
			terms = append(terms, t)
		}
		selectors = append(selectors, terms)
	}
	return func(f *flowpb.Flow) bool {
		labels := ep(f).GetLabels()
		return slices.ContainsFunc(selectors, func(terms []labelTerm) bool {
			for _, t := range terms {
				if !t.holds(labels) {
					return false
				}
			}
			return true
		})
	}, nil
}

func (t labelTerm) holds(labels []string) bool {
	found := false
	for _, l := range labels {
		src, kv, ok := strings.Cut(l, ":")
		if !ok {
			src, kv = "", l
		}
		k, v, _ := strings.Cut(kv, "=")
		if k != t.key || (t.source != "" && src != t.source) {
			continue
		}
		if !t.hasValue || v == t.value {
			found = true
			break
		}
	}
	return found != t.negate
}

func eventTypeFilter(want []*flowpb.EventTypeFilter) match {
	if len(want) == 0 {
		return nil
	}
	return func(f *flowpb.Flow) bool {
		et := f.GetEventType()
		return slices.ContainsFunc(want, func(w *flowpb.EventTypeFilter) bool {
			return w.GetType() == et.GetType() && (!w.GetMatchSubType() || w.GetSubType() == et.GetSubType())
		})
	}
}

func protocolFilter(want []string) (match, error) {
	if len(want) == 0 {
		return nil, nil
	}
	var protos []string
	for _, p := range want {
		p = strings.ToLower(p)
		switch p {
		case "icmp", "icmpv4", "icmpv6", "tcp", "udp", "sctp", "dns", "http":
			protos = append(protos, p)
		default:
			return nil, fmt.Errorf("unknown protocol: %q", p)
		}
	}
	return func(f *flowpb.Flow) bool {
		l4, l7 := f.GetL4(), f.GetL7()
		for _, p := range protos {
			var ok bool
			switch p {
			case "icmp":
				ok = l4.GetICMPv4() != nil || l4.GetICMPv6() != nil
			case "icmpv4":
				ok = l4.GetICMPv4() != nil
			case "icmpv6":
				ok = l4.GetICMPv6() != nil
			case "tcp":
				ok = l4.GetTCP() != nil
			case "udp":
				ok = l4.GetUDP() != nil
			case "sctp":
				ok = l4.GetSCTP() != nil
			case "dns":
				ok = l7.GetDns() != nil
			case "http":
				ok = l7.GetHttp() != nil
			}
			if ok {
				return true
			}
		}
		return false
	}, nil
}

func portFilter(want []string, source bool) (match, error) {
	if len(want) == 0 {
		return nil, nil
	}
	var ports []uint32
	for _, w := range want {
		p, err := strconv.ParseUint(w, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("invalid port %q: %w", w, err)
		}
		ports = append(ports, uint32(p))
	}
	return func(f *flowpb.Flow) bool {
		l4 := f.GetL4()
		var sp, dp uint32
		switch {
		case l4.GetTCP() != nil:
			sp, dp = l4.GetTCP().GetSourcePort(), l4.GetTCP().GetDestinationPort()
		case l4.GetUDP() != nil:
			sp, dp = l4.GetUDP().GetSourcePort(), l4.GetUDP().GetDestinationPort()
		case l4.GetSCTP() != nil:
			sp, dp = l4.GetSCTP().GetSourcePort(), l4.GetSCTP().GetDestinationPort()
		default:
			return false
		}
		if source {
			return slices.Contains(ports, sp)
		}
		return slices.Contains(ports, dp)
	}, nil
}

func regexpFilter(want []string, get func(*flowpb.Flow) (string, bool)) (match, error) {
	if len(want) == 0 {
		return nil, nil
	}
	var res []*regexp.Regexp
	for _, w := range want {
		re, err := regexp.Compile(w)
		if err != nil {
			return nil, fmt.Errorf("regexp %q: %w", w, err)
		}
		res = append(res, re)
	}
	return func(f *flowpb.Flow) bool {
		s, ok := get(f)
		return ok && slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(s) })
	}, nil
}

// nodeFilter matches node names with "*" wildcards. Like Hubble, a pattern without "/"
// matches the node name in any cluster; flows carry "cluster/node" or just "node".
func nodeFilter(want []string) (match, error) {
	if len(want) == 0 {
		return nil, nil
	}
	var alts []string
	for _, w := range want {
		if w == "" {
			return nil, fmt.Errorf("empty node name pattern")
		}
		if !strings.Contains(w, "/") {
			w = "*/" + w
		}
		alts = append(alts, strings.ReplaceAll(regexp.QuoteMeta(w), `\*`, `[^/]*`))
	}
	re := regexp.MustCompile(`^(?:` + strings.Join(alts, "|") + `)$`)
	return func(f *flowpb.Flow) bool {
		n := f.GetNodeName()
		if n == "" {
			return false
		}
		if !strings.Contains(n, "/") {
			n = "default/" + n
		}
		return re.MatchString(n)
	}, nil
}

// statusFilter matches HTTP status codes exactly ("404") or by leading digits ("5+").
func statusFilter(want []string) (match, error) {
	if len(want) == 0 {
		return nil, nil
	}
	for _, w := range want {
		digits := strings.TrimSuffix(w, "+")
		if _, err := strconv.ParseUint(digits, 10, 16); err != nil || len(digits) == 0 || len(digits) > 3 || (len(digits) < 3 && !strings.HasSuffix(w, "+")) {
			return nil, fmt.Errorf("invalid http status code %q", w)
		}
	}
	return func(f *flowpb.Flow) bool {
		h := f.GetL7().GetHttp()
		if h == nil || f.GetL7().GetType() != flowpb.L7FlowType_RESPONSE {
			return false
		}
		code := strconv.FormatUint(uint64(h.GetCode()), 10)
		return slices.ContainsFunc(want, func(w string) bool {
			if p, ok := strings.CutSuffix(w, "+"); ok {
				return strings.HasPrefix(code, p)
			}
			return code == w
		})
	}, nil
}

func urlPath(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		u = u[i+3:]
		if j := strings.IndexByte(u, '/'); j >= 0 {
			u = u[j:]
		} else {
			u = "/"
		}
	}
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	return u
}
