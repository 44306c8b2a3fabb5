package audit

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// decisionAlreadyDropped groups the flows a policy would deny that the cluster dropped in
// the recording anyway: the policy agrees with what is enforced, so they do not fail check.
const decisionAlreadyDropped = "already-dropped"

// ReportGroup counts the flows that share one direction, workload, peer, port and verdict.
type ReportGroup struct {
	Direction string     `json:"direction"`
	Workload  ReportPeer `json:"workload"`
	Peer      ReportPeer `json:"peer"`
	Port      uint16     `json:"port"`
	Protocol  string     `json:"protocol"`
	Decision  string     `json:"decision"`
	Reason    string     `json:"reason"`
	Rule      string     `json:"rule,omitempty"`
	Detail    string     `json:"detail,omitempty"`
	Flows     uint64     `json:"flows"`
	FirstSeen time.Time  `json:"first_seen"`
	LastSeen  time.Time  `json:"last_seen"`
	key       reportKey
}

// ReportPeer is a workload or peer as the report names it.
type ReportPeer struct {
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace,omitempty"`
	Labels    []string `json:"labels,omitempty"`
	IP        string   `json:"ip,omitempty"`
	Names     []string `json:"names,omitempty"`
}

func toReportPeer(p *flows.Peer) ReportPeer {
	return ReportPeer{Name: p.String(), Kind: p.Kind.String(), Namespace: p.Namespace, Labels: p.Labels, IP: p.IP, Names: p.Names}
}

type reportKey struct {
	dir            flows.Direction
	workload, peer string
	proto          flows.Protocol
	port           uint16
	verdict        string
}

// Report groups the would-be-denied and unknown flows of a shadow evaluation (the report of
// `recommender check`) by direction, workload, peer, port and verdict, with counts.
type Report struct {
	Evaluated, Denied, Unknown uint64
	// Dropped counts flows the policies would deny that the recording shows dropped already.
	Dropped uint64
	groups  map[reportKey]*ReportGroup
	// Rejected names the policy documents that were not evaluated, and why.
	Rejected []string
}

// NewReport returns an empty report.
func NewReport() *Report { return &Report{groups: make(map[reportKey]*ReportGroup)} }

// Add counts one flow and its verdict.
func (r *Report) Add(ev *flows.Event, v Verdict) {
	r.Evaluated++
	anyDenied, anyUnknown := false, false
	// A flow the cluster dropped in the recording (a policy or the datapath) never reached
	// its server: denying it too changes nothing, so it is reported apart and passes.
	dropped := ev.Verdict == flows.VerdictDropped
	for _, d := range []struct {
		dir            flows.Direction
		v              DirectionVerdict
		workload, peer *flows.Peer
	}{{flows.DirectionEgress, v.Egress, &ev.Src, &ev.Dst}, {flows.DirectionIngress, v.Ingress, &ev.Dst, &ev.Src}} {
		if d.v.Decision != DecisionDenied && d.v.Decision != DecisionUnknown {
			continue
		}
		decision := d.v.Decision.String()
		if d.v.Decision == DecisionDenied && dropped {
			decision = decisionAlreadyDropped
		}
		anyDenied = anyDenied || d.v.Decision == DecisionDenied
		anyUnknown = anyUnknown || d.v.Decision == DecisionUnknown
		k := reportKey{dir: d.dir, workload: d.workload.Key(), peer: d.peer.Key(), proto: ev.Proto, port: ev.Port, verdict: decision + " " + d.v.String()}
		g, ok := r.groups[k]
		if !ok {
			g = &ReportGroup{
				Direction: d.dir.String(), Workload: toReportPeer(d.workload), Peer: toReportPeer(d.peer),
				Port: ev.Port, Protocol: ev.Proto.String(), Decision: decision, Reason: d.v.Reason.String(),
				Detail: d.v.Detail, FirstSeen: ev.Time, LastSeen: ev.Time, key: k,
			}
			if d.v.Rule != nil {
				g.Rule = d.v.Rule.String()
			}
			r.groups[k] = g
		}
		g.Flows++
		if ev.Time.Before(g.FirstSeen) {
			g.FirstSeen = ev.Time
		}
		if ev.Time.After(g.LastSeen) {
			g.LastSeen = ev.Time
		}
	}
	if anyDenied && dropped {
		r.Dropped++
	} else if anyDenied {
		r.Denied++
	} else if anyUnknown {
		r.Unknown++
	}
}

// DeniedGroups counts the groups of denied flows.
func (r *Report) DeniedGroups() int {
	n := 0
	for _, g := range r.groups {
		if g.Decision == DecisionDenied.String() {
			n++
		}
	}
	return n
}

// sorted returns denied groups before unknown ones, then the largest counts first, then a
// stable order by direction, workload, peer and port.
func (r *Report) sorted() []*ReportGroup {
	out := make([]*ReportGroup, 0, len(r.groups))
	for _, g := range r.groups {
		out = append(out, g)
	}
	rank := map[string]int{DecisionDenied.String(): 0, DecisionUnknown.String(): 1, decisionAlreadyDropped: 2}
	slices.SortFunc(out, func(a, b *ReportGroup) int {
		return cmp.Or(
			cmp.Compare(rank[a.Decision], rank[b.Decision]),
			cmp.Compare(b.Flows, a.Flows),
			cmp.Compare(a.Direction, b.Direction),
			cmp.Compare(a.key.workload, b.key.workload),
			cmp.Compare(a.key.peer, b.key.peer),
			cmp.Compare(a.Protocol, b.Protocol),
			cmp.Compare(a.Port, b.Port),
			cmp.Compare(a.key.verdict, b.key.verdict),
		)
	})
	return out
}

// ReportJSON is the -o json form of a Report; its field names are part of the CLI.
type ReportJSON struct {
	Evaluated uint64 `json:"evaluated"`
	Denied    uint64 `json:"denied"`
	// AlreadyDropped counts flows the policies would deny that the recording shows dropped.
	AlreadyDropped uint64 `json:"already_dropped"`
	Unknown        uint64 `json:"unknown"`
	// Rejected lists the policy documents that were not evaluated (file#doc, field, why).
	Rejected []string       `json:"rejected,omitempty"`
	Groups   []*ReportGroup `json:"groups"`
}

// Write renders the report as `recommender check` prints it: a table, or one JSON document
// (ReportJSON) when asJSON is set.
func (r *Report) Write(w io.Writer, asJSON bool) error {
	groups := r.sorted()
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(ReportJSON{Evaluated: r.Evaluated, Denied: r.Denied, AlreadyDropped: r.Dropped, Unknown: r.Unknown, Rejected: r.Rejected, Groups: groups})
	}
	if len(groups) == 0 {
		_, err := fmt.Fprintf(w, "no flow would be denied (%d evaluated)\n", r.Evaluated)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "VERDICT\tDIRECTION\tWORKLOAD\tPEER\tPORT\tFLOWS\tREASON")
	for _, g := range groups {
		reason := g.Reason
		if g.Rule != "" {
			reason += ": " + g.Rule
		}
		if g.Detail != "" {
			reason += ": " + g.Detail
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%s\t%d\t%s\n", g.Decision, g.Direction, g.Workload.Name, g.Peer.Name, g.Port, g.Protocol, g.Flows, reason)
	}
	return tw.Flush()
}
