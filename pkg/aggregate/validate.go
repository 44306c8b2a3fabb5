package aggregate

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/recommender/recommender/pkg/flows"
)

// Bounds of one record. They sit far above anything Kubernetes or Cilium produce (a namespace
// is at most 63 bytes, a label key 317, a value 63, a DNS name 253) and well below what breaks
// the store: bbolt refuses keys over 32 KiB, and an edge key holds two identities.
const (
	maxLabels        = 128     // labels of one identity
	maxLabelBytes    = 1024    // one "source:key=value"
	maxIdentityBytes = 8 << 10 // namespace plus joined labels: the workload key
	maxNameBytes     = 253     // namespace, node, entity, DNS name, FQDN peer
	maxOwnerBytes    = 512     // "Deployment/web", for reports
	maxHTTPBytes     = 4 << 10 // HTTP method plus path
	maxDNSIPs        = 256     // addresses in one DNS answer
	excerptBytes     = 64      // of an offending value, in the log
	maxClockSkew     = 5 * time.Minute
)

// Reasons a record is rejected: the values of the reason label of
// recommender_aggregate_rejected_total.
const (
	rejectTime     = "time"     // no timestamp, or a flow's not after the Unix epoch
	rejectFuture   = "future"   // dated more than maxClockSkew ahead of the clock
	rejectEndpoint = "endpoint" // neither end is known: no edge to key
	rejectPort     = "port"     // TCP/UDP/SCTP port outside 1-65535, ICMP type above 255
	rejectIdentity = "identity" // too many or too long labels, or an oversized workload key
	rejectName     = "name"     // empty or oversized namespace, node, entity, FQDN or owner
	rejectDNS      = "dns"      // DNS query name oversized, or answer addresses that do not parse
	rejectHTTP     = "http"     // HTTP method or path oversized
)

// rejection says why a record was refused, with a short excerpt of the offending value.
type rejection struct {
	reason  string
	excerpt string
}

// validate checks one event before it reaches the Aggregator's state, so that one malformed
// record is dropped and counted instead of failing the commit of a whole batch (issue 15.2):
// every string that becomes part of a store key is bounded and non-empty where bbolt needs it,
// ports are ports, times are plausible. now is the clock future timestamps are measured
// against; a flow from 2099 would otherwise move the flow clock and the resume cursor past
// every real flow of its node (issue 15.4).
func validate(ev *flows.Event, now time.Time) *rejection {
	// A missing protobuf timestamp reads as the epoch, and the Aggregator and the store keep
	// times as Unix nanoseconds, which cannot hold one before 1678 and hold 0 as "none".
	// A lost-events notice keeps its count whatever its time: it says observation was
	// incomplete, and its time is kept as a time, not in nanoseconds.
	if ev.Time.IsZero() || (ev.Kind != flows.KindLost && !ev.Time.After(time.Unix(0, 0))) {
		return &rejection{rejectTime, ev.Time.UTC().Format(time.RFC3339)}
	}
	if ev.Time.After(now.Add(maxClockSkew)) {
		return &rejection{rejectFuture, ev.Time.UTC().Format(time.RFC3339)}
	}
	if len(ev.Node) > maxNameBytes || badKey(ev.Node) {
		return &rejection{rejectName, excerpt(ev.Node)}
	}
	if ev.Kind != flows.KindFlow {
		return nil
	}
	if ev.Src.Kind == flows.PeerUnknown && ev.Dst.Kind == flows.PeerUnknown {
		return &rejection{rejectEndpoint, ""}
	}
	switch {
	case ev.Proto == flows.ProtoTCP || ev.Proto == flows.ProtoUDP || ev.Proto == flows.ProtoSCTP:
		// The normalizer narrows ports above 65535 to 0 rather than wrapping them.
		if ev.Port == 0 {
			return &rejection{rejectPort, ev.Proto.String() + "/0"}
		}
	case ev.Proto.IsICMP():
		if ev.Port > 255 {
			return &rejection{rejectPort, ev.Proto.String() + " type " + strconv.Itoa(int(ev.Port))}
		}
	}
	for _, p := range []*flows.Peer{&ev.Src, &ev.Dst} {
		if r := validatePeer(p); r != nil {
			return r
		}
	}
	if l7 := ev.L7; l7 != nil {
		if d := l7.DNS; d != nil {
			if len(d.Query) > maxNameBytes+1 || badKey(d.Query) {
				return &rejection{rejectDNS, excerpt(d.Query)}
			}
			if len(d.IPs) > maxDNSIPs {
				return &rejection{rejectDNS, fmt.Sprintf("%d addresses", len(d.IPs))}
			}
			for _, ip := range d.IPs {
				if _, err := netip.ParseAddr(ip); err != nil {
					return &rejection{rejectDNS, "address " + strconv.Quote(excerpt(ip))}
				}
			}
		}
		if h := l7.HTTP; h != nil && (len(h.Method)+len(h.Path) > maxHTTPBytes || badKey(h.Method) || badKey(h.Path)) {
			return &rejection{rejectHTTP, excerpt(h.Method + " " + h.Path)}
		}
	}
	return nil
}

func validatePeer(p *flows.Peer) *rejection {
	switch p.Kind {
	case flows.PeerWorkload:
		if p.Namespace == "" || len(p.Namespace) > maxNameBytes || badKey(p.Namespace) {
			return &rejection{rejectName, "namespace " + strconv.Quote(excerpt(p.Namespace))}
		}
		if len(p.Labels) > maxLabels {
			return &rejection{rejectIdentity, fmt.Sprintf("%d labels in %s", len(p.Labels), excerpt(p.Namespace))}
		}
		n := len(p.Namespace) + 1
		for _, l := range p.Labels {
			if len(l) > maxLabelBytes || l == "" || badKey(l) {
				return &rejection{rejectIdentity, "label " + strconv.Quote(excerpt(l))}
			}
			n += len(l) + 1
		}
		if n > maxIdentityBytes {
			return &rejection{rejectIdentity, fmt.Sprintf("%d-byte identity in %s", n, excerpt(p.Namespace))}
		}
		if len(p.Workload) > maxOwnerBytes || badKey(p.Workload) {
			return &rejection{rejectName, "owner " + strconv.Quote(excerpt(p.Workload))}
		}
	case flows.PeerEntity:
		if p.Entity == "" || len(p.Entity) > maxNameBytes || badKey(p.Entity) {
			return &rejection{rejectName, "entity " + strconv.Quote(excerpt(p.Entity))}
		}
	case flows.PeerWorld:
		if len(p.IP) > maxNameBytes {
			return &rejection{rejectName, "address " + strconv.Quote(excerpt(p.IP))}
		}
		if len(p.Names) > 0 && (p.Names[0] == "" || len(p.Names[0]) > maxNameBytes+1 || badKey(p.Names[0])) {
			return &rejection{rejectName, "name " + strconv.Quote(excerpt(p.Names[0]))}
		}
	}
	return nil
}

// badKey reports a string that cannot be part of a store key: a NUL byte (the edge keys use it
// as separator, doc.go, so two edges could share a key) or invalid UTF-8 (the JSON value would
// hold U+FFFD where the key holds the raw byte, and the two would no longer match).
func badKey(s string) bool { return strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) }

// excerpt shortens s for a log line: a 1 MB label must not become a 1 MB error line.
func excerpt(s string) string {
	if len(s) <= excerptBytes {
		return s
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:excerptBytes], len(s))
}
