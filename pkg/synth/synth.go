package synth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cilium/cilium/pkg/policy/api"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// workloadInfo is what synthesis knows about one workload: its record in the snapshot (or
// what its edges say, for a workload only seen as a peer) and its edges.
type workloadInfo struct {
	key         aggregate.WorkloadKey
	owners      []string
	first, last time.Time
	flows       uint64
	nodes       []string
	edges       []aggregate.Edge
}

// Synthesize turns a snapshot into one policy proposal per workload. It never fails on
// content: a workload that cannot get a valid policy is listed in Result.Skipped with the
// reason, and a run without any proposal says why in Result.Empty. It returns an error only
// for an invalid Config.
func Synthesize(snap *aggregate.Snapshot, cfg Config) (*Result, error) {
	return SynthesizeContext(context.Background(), snap, cfg)
}

// SynthesizeContext is Synthesize that stops when ctx ends (SIGTERM during a long synthesis
// of a big store) and returns ctx's error. It checks ctx between workloads, the unit of work.
func SynthesizeContext(ctx context.Context, snap *aggregate.Snapshot, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("synthesis config: %w", err)
	}
	if snap == nil {
		snap = &aggregate.Snapshot{}
	}
	res := &Result{From: snap.From, To: snap.To, Flows: snap.Flows, Lost: snap.Lost, Overflow: snap.Overflow, Kind: cmp.Or(cfg.PolicyKind, KindCCNP)}
	infos := collect(snap)
	local, err := localCluster(cfg.ClusterName, infos)
	if err != nil {
		return nil, err
	}
	res.Cluster = local
	u := universe{}
	for _, wi := range infos {
		u.add(local, wi.key)
	}
	s := &synthesizer{cfg: cfg, local: local, snap: snap, u: u, infos: infos, lost: map[string]uint64{}}
	for _, l := range snap.Lost {
		s.lost[l.Node] += l.Lost
	}
	s.reverseDNS, s.namesOf = map[string][]string{}, map[string][]string{}
	for ip, names := range snap.DNS {
		for _, n := range names {
			s.reverseDNS[n] = append(s.reverseDNS[n], ip)
			if writableName.MatchString(n) {
				s.namesOf[ip] = append(s.namesOf[ip], n)
			}
		}
	}
	for _, ips := range s.reverseDNS {
		slices.Sort(ips)
	}
	for _, names := range s.namesOf {
		slices.Sort(names)
	}

	keys := slices.Sorted(maps.Keys(infos))
	owners := map[string][]string{}
	for _, k := range keys {
		owners[k] = infos[k].owners
	}
	var drafts []*draft
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("synthesis: %w", err)
		}
		if c := infos[k].key.Labels.Cluster(); c != "" && c != local {
			// Another cluster's daemon proposes its policies (issue 16): here it is a peer only.
			res.Skipped = append(res.Skipped, Skip{Workload: infos[k].key, Display: s.display(infos[k].key),
				Reason: SkipRemoteCluster, Detail: fmt.Sprintf("the workload runs in cluster %s, this daemon proposes policies for cluster %s", c, local)})
			continue
		}
		d, skip := s.workload(infos[k])
		if skip != nil {
			res.Skipped = append(res.Skipped, *skip)
			continue
		}
		drafts = append(drafts, d)
	}
	if cfg.L7HTTP {
		s.reconcileL7(drafts)
	}
	built := make([]*Proposal, 0, len(drafts))
	for _, d := range drafts {
		built = append(built, d.render(s))
	}
	assignNames(built, owners)
	for _, p := range built {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("synthesis: %w", err)
		}
		if cfg.PolicyLog {
			// Set before finish: the value is part of the rules, so of the revision.
			p.Policy.Spec.Log = api.LogConfig{Value: LogValue(p.Name)}
		}
		if err := finish(p, local, res.Kind); err != nil {
			res.Skipped = append(res.Skipped, Skip{Workload: p.Workload, Display: p.Display, Reason: SkipRefused, Detail: err.Error()})
			continue
		}
		res.Proposals = append(res.Proposals, p)
	}
	slices.SortFunc(res.Proposals, func(a, b *Proposal) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(res.Skipped, func(a, b Skip) int { return cmp.Compare(a.Workload.String(), b.Workload.String()) })
	if len(res.Proposals) == 0 {
		res.Empty = emptyReason(snap, len(infos), res.Skipped)
	}
	return res, nil
}

// edgeID identifies an edge independently of its evidence.
func edgeID(k aggregate.EdgeKey) string {
	return fmt.Sprintf("%s\x00%d\x00%s\x00%d\x00%t\x00%d", k.Workload.String(), k.Direction, k.Peer.Key(), k.Proto, k.Collapsed, k.Port)
}

// collect indexes the snapshot by workload. An edge between two workloads is evidence for
// both: when the snapshot holds only one side (the other end was not a workload record, or
// was observed only from one node), the mirror edge is derived so that the client gets its
// egress rule and the server its ingress rule.
func collect(snap *aggregate.Snapshot) map[string]*workloadInfo {
	infos := map[string]*workloadInfo{}
	get := func(k aggregate.WorkloadKey) *workloadInfo {
		wi, ok := infos[k.String()]
		if !ok {
			wi = &workloadInfo{key: k}
			infos[k.String()] = wi
		}
		return wi
	}
	for _, w := range snap.Workloads {
		wi := get(w.Key)
		wi.owners, wi.first, wi.last, wi.flows, wi.nodes = w.Names, w.FirstSeen, w.LastSeen, w.Flows, w.Nodes
	}
	seen := map[string]bool{}
	var all []aggregate.Edge
	for _, k := range slices.Sorted(maps.Keys(snap.Edges)) {
		for _, e := range snap.Edges[k] {
			seen[edgeID(e.EdgeKey)] = true
			all = append(all, e)
		}
	}
	for _, e := range slices.Clone(all) {
		if e.Peer.Kind != aggregate.PeerWorkload {
			continue
		}
		m := e
		m.Workload = aggregate.WorkloadKey{Namespace: e.Peer.Namespace, Labels: e.Peer.Labels}
		m.Peer = aggregate.Peer{Kind: aggregate.PeerWorkload, Namespace: e.Workload.Namespace, Labels: e.Workload.Labels}
		if e.Direction == flows.DirectionIngress {
			m.Direction = flows.DirectionEgress
			m.HTTP = nil
		} else {
			m.Direction = flows.DirectionIngress
			m.DNSNames = nil
		}
		if id := edgeID(m.EdgeKey); !seen[id] {
			seen[id] = true
			all = append(all, m)
		}
	}
	for _, e := range all {
		wi := get(e.Workload)
		wi.edges = append(wi.edges, e)
	}
	known := map[string]bool{}
	for _, w := range snap.Workloads {
		known[w.Key.String()] = true
	}
	for k, wi := range infos {
		slices.SortFunc(wi.edges, func(a, b aggregate.Edge) int { return cmp.Compare(edgeID(a.EdgeKey), edgeID(b.EdgeKey)) })
		if known[k] {
			continue
		}
		// Seen only as a peer: its evidence is its edges.
		for _, e := range wi.edges {
			wi.flows += e.Counts.Total()
			if wi.first.IsZero() || e.FirstSeen.Before(wi.first) {
				wi.first = e.FirstSeen
			}
			if e.LastSeen.After(wi.last) {
				wi.last = e.LastSeen
			}
		}
	}
	return infos
}

// synthesizer holds the indexes one run shares between workloads.
type synthesizer struct {
	cfg Config
	// local is the cluster the proposals are for ("" when neither the configuration nor the
	// flows name one: selectors then name no cluster, as before ClusterMesh support).
	local      string
	snap       *aggregate.Snapshot
	u          universe
	infos      map[string]*workloadInfo
	lost       map[string]uint64   // node -> events lost
	reverseDNS map[string][]string // name -> external IPs DNS answers gave for it
	// namesOf is snap.DNS with only the names a rule can hold (writableName), sorted: an
	// address whose names are all unwritable is allowed by address instead (reverseDNS keeps
	// every name, for that).
	namesOf map[string][]string
}

// display is the workload as humans know it; a workload of another cluster is prefixed with
// its cluster ("west/shop/web").
func (s *synthesizer) display(k aggregate.WorkloadKey) string {
	if c := k.Labels.Cluster(); c != "" && c != s.local {
		return c + "/" + s.localDisplay(k)
	}
	return s.localDisplay(k)
}

func (s *synthesizer) localDisplay(k aggregate.WorkloadKey) string {
	if wi, ok := s.infos[k.String()]; ok && len(wi.owners) > 0 {
		return k.Namespace + "/" + slices.Sorted(slices.Values(wi.owners))[0]
	}
	// No owner (a bare Pod): its best application label says what it is.
	best := parsedLabel{rank: len(preferredKeys) + 1}
	for _, l := range k.Labels {
		if p := parseLabel(l); eligible(p) && (p.rank < best.rank || (p.rank == best.rank && p.raw < best.raw)) {
			best = p
		}
	}
	if best.raw != "" {
		return k.Namespace + "/" + best.bare + "=" + best.value
	}
	return k.Namespace + "/" + k.Labels.WithoutCluster().Short()
}

// draft is a proposal whose grants are known and whose policy is not rendered yet: rules of
// one policy may still change because of another (reconcileL7).
type draft struct {
	p      *Proposal
	b      *builder
	choice selectorChoice
}

// render writes the draft's policy, peers and findings.
func (d *draft) render(s *synthesizer) *Proposal {
	d.p.Policy = d.b.policy(d.choice, d.p.Display)
	d.p.Peers = d.b.summaries()
	d.p.Review = d.b.findings()
	s.quiet(d.p)
	return d.p
}

// workload builds the draft proposal of one workload, or says why it gets none.
func (s *synthesizer) workload(wi *workloadInfo) (*draft, *Skip) {
	disp := s.display(wi.key)
	skip := func(r SkipReason, format string, args ...any) (*draft, *Skip) {
		return nil, &Skip{Workload: wi.key, Display: disp, Reason: r, Detail: fmt.Sprintf(format, args...)}
	}
	if wi.flows < s.cfg.MinFlows {
		return skip(SkipFewFlows, "%d flows observed, --min-flows is %d", wi.flows, s.cfg.MinFlows)
	}
	if d := wi.last.Sub(wi.first); d < s.cfg.MinObserve {
		return skip(SkipShortObservation, "observed for %s (%s to %s), --min-observe is %s",
			d.Round(time.Second), fmtTime(wi.first), fmtTime(wi.last), s.cfg.MinObserve)
	}
	choice, err := s.u.choose(s.local, wi.key)
	if err != nil {
		return skip(SkipNoStableLabels, "%v; a namespace-wide selector would also select every future pod in %s", err, wi.key.Namespace)
	}
	choice = choice.separate(wi.key, func(o flows.Labels) bool {
		other := s.infos[aggregate.WorkloadKey{Namespace: wi.key.Namespace, Labels: o}.String()]
		return other != nil && !other.first.After(wi.last) && !wi.first.After(other.last)
	})
	b := newBuilder(s, wi)
	for _, e := range wi.edges {
		b.edge(e)
	}
	b.dns()
	if len(b.grants) == 0 {
		return skip(SkipNoAllowedTraffic, "%s", b.noAllowDetail())
	}
	p := &Proposal{
		Workload:  wi.key,
		Display:   disp,
		Flows:     wi.flows,
		FirstSeen: wi.first,
		LastSeen:  wi.last,
	}
	if len(choice.overlap) > 0 {
		detail := "the labels of this workload are a subset of those of " + strings.Join(choice.overlap, ", ")
		if len(choice.absent) > 0 {
			detail += "; excluded with DoesNotExist on " + strings.Join(choice.absent, ", ")
		}
		if choice.shared {
			detail += "; workloads that differ only in version or chart labels and were not seen at the same time (a rollout) share this selector"
		}
		b.flag(Finding{Kind: FindingSelectorOverlap, Detail: detail})
	}
	if len(choice.kept) > 0 {
		b.flag(Finding{Kind: FindingVersionSelector, Detail: fmt.Sprintf(
			"the selector keeps %s to tell this workload from others that differ only in it and ran at the same time; "+
				"pods of a rollout that changes it are selected by no policy until the next proposal (fail open: their peers still allow them)",
			strings.Join(choice.kept, ", "))})
	}
	for _, n := range wi.nodes {
		if l := s.lost[n]; l > 0 {
			b.flag(Finding{Kind: FindingLostEvents, Detail: fmt.Sprintf(
				"node %s lost %d Hubble events in the window: traffic of this workload may be missing", n, l)})
		}
	}
	return &draft{p: p, b: b, choice: choice}, nil
}

// quiet closes or leaves open each direction in which the policy allows nothing. The workload
// was observed long enough to be proposed, so silence in a direction is evidence too: a
// CronJob nobody calls, a server that never dials out. Closing it is what least privilege
// asks, and the audit window catches the traffic the observation missed, like any other rule.
func (s *synthesizer) quiet(p *Proposal) {
	spec := p.Policy.Spec
	if len(spec.Ingress) == 0 {
		if s.cfg.QuietDirections == QuietDeny {
			spec.Ingress = []api.IngressRule{{}}
			p.Closed = append(p.Closed, flows.DirectionIngress)
		} else {
			p.Unrestricted = append(p.Unrestricted, flows.DirectionIngress)
		}
	}
	if len(spec.Egress) == 0 {
		if s.cfg.QuietDirections == QuietDeny {
			spec.Egress = []api.EgressRule{{}}
			p.Closed = append(p.Closed, flows.DirectionEgress)
		} else {
			p.Unrestricted = append(p.Unrestricted, flows.DirectionEgress)
		}
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.UTC().Format(time.RFC3339)
}

// emptyReason says why a run produced no policy.
func emptyReason(snap *aggregate.Snapshot, workloads int, skipped []Skip) string {
	if workloads == 0 {
		if snap.Flows == 0 {
			return "no flows in the input: nothing was observed"
		}
		return fmt.Sprintf("%d flows were read but none involved a workload (all were filtered out or between non-workload endpoints)", snap.Flows)
	}
	counts := map[SkipReason]int{}
	for _, sk := range skipped {
		counts[sk.Reason]++
	}
	var parts []string
	for _, r := range []SkipReason{SkipFewFlows, SkipShortObservation, SkipNoAllowedTraffic, SkipNoStableLabels, SkipRefused} {
		if counts[r] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[r], r))
		}
	}
	return fmt.Sprintf("all %d workloads were skipped: %s (see the skipped workloads for each reason)", workloads, strings.Join(parts, ", "))
}

// summarizeCIDR masks an address prefix to the configured length for its family.
func summarizeCIDR(cidr string, v4, v6 int) (string, bool) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		a, aerr := netip.ParseAddr(cidr)
		if aerr != nil {
			return "", false
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	bits := v6
	if p.Addr().Is4() {
		bits = v4
	}
	if p.Bits() < bits {
		bits = p.Bits()
	}
	return netip.PrefixFrom(p.Addr(), bits).Masked().String(), true
}

// addrOf returns the address of a single-address CIDR ("203.0.113.7/32" -> "203.0.113.7").
func addrOf(cidr string) string {
	if p, err := netip.ParsePrefix(cidr); err == nil && p.IsSingleIP() {
		return p.Addr().String()
	}
	return cidr
}

// discardLogger is handed to Cilium's parser, whose logging is of no use here.
var discardLogger = slog.New(slog.DiscardHandler)

// ErrClusterMesh is returned by Synthesize when the flows hold workloads of several clusters
// (a ClusterMesh) and Config.ClusterName does not say which one the policies are for.
var ErrClusterMesh = errors.New("flows of several clusters")

// localCluster decides the cluster the proposals are for: the configured one, else the one
// every workload of the flows names. Workloads whose labels name no cluster (recordings made
// without identity labels, pods resolved from the local API server) count as local.
func localCluster(configured string, infos map[string]*workloadInfo) (string, error) {
	if configured != "" {
		return configured, nil
	}
	seen := map[string]bool{}
	for _, wi := range infos {
		if c := wi.key.Labels.Cluster(); c != "" {
			seen[c] = true
		}
	}
	switch len(seen) {
	case 0:
		return "", nil
	case 1:
		for c := range seen {
			return c, nil
		}
	}
	return "", fmt.Errorf("%w (%s), a ClusterMesh: set --cluster-name to the cluster this daemon proposes policies for",
		ErrClusterMesh, strings.Join(slices.Sorted(maps.Keys(seen)), ", "))
}
