package aggregate

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/flows"
)

// Aggregator folds flows.Events into workload edges in memory. It holds the whole state (all
// edges, bounded by Config), remembers what changed since the last TakeBatch so a Store can
// persist only that, and produces a Snapshot directly (recommend --flows needs no store).
//
// Both observations of one connection (client egress and server ingress) must already be
// folded into one event by flows.Folder; the Aggregator counts every event it is given.
// Every event is validated first (validate): a malformed record is dropped and counted by
// reason, never stored. Workload identities lose their churning labels (churn) before they
// are keyed.
//
// It is safe for concurrent use.
type Aggregator struct {
	cfg     Config
	log     *slog.Logger
	metrics *aggMetrics
	now     func() time.Time // future timestamps are measured against it

	// mu guards every field below.
	mu        sync.Mutex
	workloads map[string]*workloadState
	// nsWorkloads counts workloads per namespace, for MaxWorkloadsPerNamespace.
	nsWorkloads map[string]int
	// The edges, in pointer-free tables (edges.go): groups maps each group to the first of
	// its edges; nEdges counts the live ones. There is no map by edge: a flow finds its edge
	// with one lookup of its group and a walk of a few ports.
	groups groupTable
	edges  edgeTable
	nEdges int
	// edgeFree are reusable slots of edges; edgeFreeing those removed since the last
	// TakeBatch, reusable after it.
	edgeFree, edgeFreeing []edgeIdx
	extras                []edgeExtra // slot 0 unused
	extraFree             []uint32
	// wlByID indexes every workload with edges or in workloads; peers every peer of an edge.
	wlByID   []*workloadState
	wlFree   []uint32
	peers    []peerEntry
	peerIdx  map[string]uint32
	peerFree []uint32
	// peerEdges counts live edges per (workload, direction, CIDR peer) and cidrPeers the
	// distinct CIDR peers per (workload, direction), for the MaxWorldPeers bound.
	peerEdges map[peerID]int
	cidrPeers map[wdID]int
	dns       map[string]*dnsEntry
	lost      map[string]*NodeLost
	tot       totals

	// Changes since the last TakeBatch.
	dirtyEdges     []edgeIdx
	deletedEdges   map[edgeID]EdgeKey
	dirtyWorkloads []*workloadState
	deletedWls     map[string]struct{}
	dirtyDNS       map[string]struct{}
	dirtyLost      map[string]struct{}
	totDirty       bool
	// spare are the buffers of a committed batch, for the next TakeBatch (Recycle).
	spare encodedEdges

	// warned remembers which caps and rejection reasons were already reported in the log, so
	// each warns once per process instead of once per flow; the counters keep counting.
	warned map[string]bool

	keys  keyCache
	churn churn
}

// totals are the store-wide counters.
type totals struct {
	Flows    uint64
	Overflow uint64
	Rejected uint64
	From, To time.Time
}

type edgeID struct {
	w         string
	dir       flows.Direction
	peer      string
	proto     flows.Protocol
	port      uint16 // 0 when collapsed: widening the range must not move the edge
	collapsed bool
}

type peerID struct {
	wl   uint32
	dir  flows.Direction
	peer uint32
}

type wdID struct {
	wl  uint32
	dir flows.Direction
}

type workloadState struct {
	Workload
	key   string
	id    uint32 // index in Aggregator.wlByID
	edges int
	dirty bool
	gone  bool // no longer in Aggregator.workloads; its id is freed with its last edge
}

type dnsEntry struct {
	names []string
	last  time.Time
}

// NewAggregator returns an empty Aggregator. reg may be nil (metrics are then not registered).
func NewAggregator(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Aggregator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Aggregator{
		cfg:          cfg.withDefaults(),
		log:          log,
		metrics:      newAggMetrics(reg, cfg.withDefaults()),
		now:          time.Now,
		workloads:    make(map[string]*workloadState),
		nsWorkloads:  make(map[string]int),
		groups:       newGroupTable(),
		edges:        newEdgeTable(),
		extras:       make([]edgeExtra, 1),
		peerIdx:      make(map[string]uint32),
		peerEdges:    make(map[peerID]int),
		cidrPeers:    make(map[wdID]int),
		dns:          make(map[string]*dnsEntry),
		lost:         make(map[string]*NodeLost),
		deletedEdges: make(map[edgeID]EdgeKey),
		deletedWls:   make(map[string]struct{}),
		dirtyDNS:     make(map[string]struct{}),
		dirtyLost:    make(map[string]struct{}),
		warned:       make(map[string]bool),
		keys:         newKeyCache(),
		churn:        newChurn(cfg.withDefaults().MaxLabelValues),
	}, nil
}

// SetClock replaces time.Now, against which future timestamps are rejected (tests).
func (a *Aggregator) SetClock(now func() time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.now = now
}

// Len returns the number of workloads and edges held.
func (a *Aggregator) Len() (workloads, edges int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.workloads), a.nEdges
}

// AddAll folds every event of src until it ends (io.EOF, which is not an error). It is the
// in-memory path of `recommend --flows`: no store, no cursor.
func (a *Aggregator) AddAll(ctx context.Context, src flows.Source) error {
	for {
		ev, err := src.Recv(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		a.Add(ev)
	}
}

// Add folds one event and reports whether it was accepted. A malformed event (validate) is
// counted by reason and dropped. Lost-events notices are summed per node; flows update the
// client's egress edge and the server's ingress edge, for each end that is a workload.
//
// Add may replace ev's peer labels with the workload identity they were stored under (without
// churning labels), so that later consumers of the event key it as the store does, and
// converts its time to UTC.
func (a *Aggregator) Add(ev *flows.Event) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r := validate(ev, a.now()); r != nil {
		a.reject(r)
		return false
	}
	// Edges keep Unix nanoseconds and come back in UTC, as the store returns every time:
	// workloads and totals are kept the same way.
	ev.Time = ev.Time.UTC()
	switch ev.Kind {
	case flows.KindLost:
		a.addLost(ev)
	case flows.KindFlow:
		a.addFlow(ev)
	}
	return true
}

// reject counts a malformed record; the first of each reason is logged with an excerpt.
func (a *Aggregator) reject(r *rejection) {
	a.tot.Rejected++
	a.totDirty = true
	a.metrics.rejected.WithLabelValues(r.reason).Inc()
	if w := "reject:" + r.reason; !a.warned[w] {
		a.warned[w] = true
		a.log.Warn("malformed record dropped: further ones are counted, not logged",
			"reason", r.reason, "excerpt", r.excerpt)
	}
}

// lostNoNode keys the lost-events notices that name no node; bbolt refuses empty keys, and
// parentheses never appear in a node name.
const lostNoNode = "(no node)"

func (a *Aggregator) addLost(ev *flows.Event) {
	if ev.Lost == nil {
		return
	}
	node := ev.Node
	if node == "" {
		node = lostNoNode
	}
	nl := a.lost[node]
	if nl == nil {
		nl = &NodeLost{Node: node}
		a.lost[node] = nl
	}
	nl.Lost += ev.Lost.Count
	if ev.Time.After(nl.Last) {
		nl.Last = ev.Time
	}
	a.dirtyLost[node] = struct{}{}
}

// canonical strips p's churning labels, and shows an identity not stored yet to the churn
// detector, which may find a churning label in it and strip that too. It returns p's keys, for
// the rest of the flow (the zero value for a peer that is not a workload): looking them up
// once per end instead of three times was a fifth of the per-flow work.
func (a *Aggregator) canonical(p *flows.Peer) workloadKeys {
	if p.Kind != flows.PeerWorkload {
		return workloadKeys{}
	}
	a.churn.strip(p)
	k := a.keys.workload(p)
	if _, ok := a.workloads[k.wkey]; ok {
		return k
	}
	for _, l := range a.churn.observe(p) {
		a.metrics.churningLabels.Inc()
		n := a.foldVariants(l)
		a.log.Warn("label values churn within one workload: the label is dropped from its identity",
			"namespace", l.Namespace, "owner", l.Owner, "label", l.Key, "values", a.cfg.MaxLabelValues+1,
			"workloads_merged", n)
	}
	if a.churn.strip(p) {
		k = a.keys.workload(p)
	}
	return k
}

func (a *Aggregator) addFlow(ev *flows.Event) {
	src := a.canonical(&ev.Src)
	flagged := len(a.churn.order)
	dst := a.canonical(&ev.Dst)
	// A label found churning at the destination may be in the source's identity too (pods of
	// one owner talking to each other): its variants were just folded, so it must not be
	// created again.
	if len(a.churn.order) > flagged && a.churn.strip(&ev.Src) {
		src = a.keys.workload(&ev.Src)
	}
	a.tot.Flows++
	if a.tot.From.IsZero() || ev.Time.Before(a.tot.From) {
		a.tot.From = ev.Time
	}
	if ev.Time.After(a.tot.To) {
		a.tot.To = ev.Time
	}
	a.totDirty = true

	var dnsName string
	var sample *HTTPSample
	if l7 := ev.L7; l7 != nil {
		switch {
		case l7.DNS != nil && l7.DNS.Response:
			// Answers teach which names an IP stands for; the request record already counted
			// the exchange.
			a.learnDNS(ev.Time, l7.DNS)
			return
		case l7.DNS != nil:
			dnsName = cleanName(l7.DNS.Query)
		case l7.HTTP != nil && l7.HTTP.Code != 0:
			return // a response: its request carried the same method and path
		case l7.HTTP != nil:
			sample = &HTTPSample{Method: l7.HTTP.Method, Path: l7.HTTP.Path, Count: 1}
		}
	}
	proto, port := ev.Proto, ev.Port
	if proto == flows.ProtoUnknown {
		if dnsName == "" {
			return // an L7 record without L4: nothing to key an edge on
		}
		proto, port = flows.ProtoUDP, 53
	}
	delta := countsOf(ev)

	var egress edgeIdx
	if ev.Src.Kind == flows.PeerWorkload {
		if w := a.touchWorkload(&ev.Src, src, ev); w != nil {
			if peer, key, ok := a.peerOf(&ev.Dst, dst, flows.DirectionEgress); ok {
				egress = a.observe(w, flows.DirectionEgress, peer, key, proto, port, ev.Time, delta, dnsName, sample, 0)
			}
		}
	}
	if ev.Dst.Kind == flows.PeerWorkload {
		if w := a.touchWorkload(&ev.Dst, dst, ev); w != nil {
			if peer, key, ok := a.peerOf(&ev.Src, src, flows.DirectionIngress); ok {
				// Names looked up are the client's facts; they stay on its egress edge.
				var mate edgeIdx
				if egress != 0 {
					mate = a.edges.at(egress).mate
				}
				if in := a.observe(w, flows.DirectionIngress, peer, key, proto, port, ev.Time, delta, "", sample, mate); egress != 0 {
					a.edges.at(egress).mate = in
				}
			}
		}
	}
}

// countsOf classifies one event's verdict.
func countsOf(ev *flows.Event) Counts {
	var c Counts
	switch ev.Verdict {
	case flows.VerdictForwarded, flows.VerdictRedirected:
		if ev.Type == flows.EventL7 {
			c.L7 = 1
		}
		if ev.Type != flows.EventL7 || ev.Connection {
			// An L7 request that is the only record of its connection counts as its trace.
			c.Forwarded = 1
		}
	case flows.VerdictDropped:
		c.Dropped = 1
		if flows.IsPolicyDrop(ev.DropReason) || len(ev.DeniedBy) > 0 {
			c.PolicyDrops = 1
		}
	case flows.VerdictAudit:
		c.Audit = 1
	default:
		c.Other = 1
	}
	return c
}

// touchWorkload counts ev in the workload p, whose keys are k (canonical), creating it if
// the caps allow.
func (a *Aggregator) touchWorkload(p *flows.Peer, k workloadKeys, ev *flows.Event) *workloadState {
	key := k.wkey
	w := a.workloads[key]
	if w == nil {
		if len(a.workloads) >= a.cfg.MaxWorkloads {
			a.overflow("workloads", a.cfg.MaxWorkloads)
			return nil
		}
		// One namespace flooding new identities must not take the budget of the others.
		if a.nsWorkloads[p.Namespace] >= a.cfg.MaxWorkloadsPerNamespace {
			a.overflow("workloads-per-namespace", a.cfg.MaxWorkloadsPerNamespace)
			return nil
		}
		a.nsWorkloads[p.Namespace]++
		w = &workloadState{key: key, Workload: Workload{
			Key:       WorkloadKey{Namespace: p.Namespace, Labels: slices.Clone(p.Labels)},
			FirstSeen: ev.Time,
		}}
		a.workloads[key] = w
		a.addWorkloadID(w)
	}
	w.Flows++
	if ev.Time.Before(w.FirstSeen) {
		w.FirstSeen = ev.Time
	}
	if ev.Time.After(w.LastSeen) {
		w.LastSeen = ev.Time
	}
	if ev.Node != "" {
		w.Nodes = insertBounded(w.Nodes, ev.Node, maxNodesPerWorkload)
	}
	if p.Workload != "" {
		w.Names = insertBounded(w.Names, p.Workload, maxNamesPerWorkload)
	}
	a.markWorkload(w)
	return w
}

// Bounds of the per-workload lists: they are for reports, a handful is enough.
const (
	maxNodesPerWorkload = 64
	maxNamesPerWorkload = 8
)

func (a *Aggregator) markWorkload(w *workloadState) {
	if !w.dirty {
		w.dirty = true
		a.dirtyWorkloads = append(a.dirtyWorkloads, w)
	}
	delete(a.deletedWls, w.key)
}

// peerOf maps the far end of a flow to the peer of an edge in direction dir, and its key. World
// peers become an FQDN when Hubble attached names or a DNS answer linked the IP (egress only:
// Cilium has no fromFQDNs), else a /32 or /128 CIDR. Of several names the first in sort order
// is used, so one connection is one edge, the same on every run. k are p's keys when it is a
// workload (canonical).
func (a *Aggregator) peerOf(p *flows.Peer, k workloadKeys, dir flows.Direction) (Peer, string, bool) {
	switch p.Kind {
	case flows.PeerWorkload:
		// The key cache's copy of the labels (k, from canonical), never changed, is shared by
		// every edge to the peer: the event's slice may be reused by its source.
		return Peer{Kind: PeerWorkload, Namespace: p.Namespace, Labels: k.labels}, k.peerKey, true
	case flows.PeerEntity:
		return a.keys.peer(Peer{Kind: PeerEntity, Entity: p.Entity})
	case flows.PeerWorld:
		if dir == flows.DirectionEgress {
			if len(p.Names) > 0 {
				return a.keys.peer(Peer{Kind: PeerFQDN, FQDN: p.Names[0]})
			}
			if e := a.dns[p.IP]; e != nil && len(e.names) > 0 {
				return a.keys.peer(Peer{Kind: PeerFQDN, FQDN: e.names[0]})
			}
		}
		return a.keys.cidr(p.IP)
	}
	return Peer{}, "", false
}

// observe adds one observation to the edge (w, dir, peer, proto, port), creating, collapsing or
// re-routing it as the bounds require, and returns the edge (0 when a cap refused it). mate is
// the edge this one was last observed with (edgeRec.mate), 0 if none: when it is still this
// edge, the group lookup is skipped.
func (a *Aggregator) observe(w *workloadState, dir flows.Direction, peer Peer, peerKey string, proto flows.Protocol, port uint16,
	t time.Time, delta Counts, dnsName string, sample *HTTPSample, mate edgeIdx) edgeIdx {
	pid, known := a.peerIdx[peerKey]
	if peer.Kind == PeerCIDR && (!known || a.peerEdges[peerID{w.id, dir, pid}] == 0) &&
		a.cidrPeers[wdID{w.id, dir}] >= a.cfg.MaxWorldPeers {
		peer, peerKey = worldPeer, worldPeerKey
		pid, known = a.peerIdx[peerKey]
	}
	gk := groupID{wl: w.id, peer: pid, dir: dir, proto: proto}
	tn := nanos(t)
	var head, i edgeIdx
	if m := a.edges.at(mate); mate != 0 && known && !m.deleted && m.wl == w.id && m.peer == pid &&
		m.dir == dir && m.proto == proto && (m.collapsed || m.port == port) {
		head = mate // a collapsed edge is its group's only edge
		if !m.collapsed {
			i = mate
		}
	} else if known {
		head = a.groups.get(gk)
	}
	switch {
	case i != 0: // the mate, a per-port edge
	case head != 0 && a.edges.at(head).collapsed:
		i = head
		r := a.edges.at(i)
		r.port = min(r.port, port)
		r.endPort = max(r.endPort, port)
	default:
		var last edgeIdx
		var n int
		i, last, n = a.portEdge(head, port)
		if i == 0 {
			switch {
			case n >= a.cfg.MaxPorts:
				i = a.collapse(gk, head, port)
			case a.nEdges >= a.cfg.MaxEdges:
				a.overflow("edges", a.cfg.MaxEdges)
				return 0
			case w.edges >= a.cfg.MaxEdgesPerWorkload:
				a.overflow("edges-per-workload", a.cfg.MaxEdgesPerWorkload)
				return 0
			default:
				if !known {
					gk.peer = a.peerFor(peer, peerKey)
				}
				i = a.newEdge(w, gk.peer, dir, proto, port, false, tn)
				a.appendToGroup(gk, last, i)
			}
		}
	}
	r := a.edges.at(i)
	r.counts.add(delta)
	r.first = min(r.first, tn)
	r.last = max(r.last, tn)
	if dnsName != "" {
		x := a.extraOf(i)
		x.dns, r.truncated = insertCapped(x.dns, dnsName, a.cfg.MaxDNSNames, r.truncated)
	}
	if sample != nil {
		x := a.extraOf(i)
		x.http, r.truncated = addSample(x.http, *sample, a.cfg.MaxHTTPSamples, r.truncated)
	}
	a.markEdge(i)
	return i
}

func (a *Aggregator) markEdge(i edgeIdx) {
	if r := a.edges.at(i); !r.dirty {
		r.dirty = true
		a.dirtyEdges = append(a.dirtyEdges, i)
	}
}

// collapse folds the per-port edges of the group gk, the first of them head, into one range
// edge that also covers port.
func (a *Aggregator) collapse(gk groupID, head edgeIdx, port uint16) edgeIdx {
	// The range edge first: removing the last per-port edge must not forget the peer.
	c := a.newEdge(a.wlByID[gk.wl], gk.peer, gk.dir, gk.proto, port, true, a.edges.at(head).first)
	a.edges.at(c).last = a.edges.at(head).last
	for j := head; j != 0; {
		next := a.edges.at(j).next
		old := a.edgeOf(a.edges.at(j))
		a.mergeEdge(c, &old)
		a.removeEdge(j)
		j = next
	}
	a.groups.set(gk, c)
	r := a.edges.at(c)
	a.log.Debug("edge ports collapsed", "workload", a.wlByID[gk.wl].key, "direction", gk.dir.String(),
		"peer", a.peers[gk.peer].key, "proto", gk.proto.String(), "from", r.port, "to", r.endPort)
	return c
}

// addSample counts s in the sample of its method and path shape (flows.HTTPPathShape) of
// samples, so an API with IDs in its paths takes one sample per route, not one per ID (issue
// 14). Only a new shape counts against limit; truncated is sticky. The sample keeps the
// smallest path seen with its shape, so what is stored does not depend on the order flows
// arrived in; synth writes the same rule for any path of the shape.
func addSample(samples []HTTPSample, s HTTPSample, limit int, truncated bool) ([]HTTPSample, bool) {
	shape := flows.HTTPPathShape(s.Method, s.Path)
	i, ok := slices.BinarySearchFunc(samples, s.Method, func(h HTTPSample, method string) int {
		if c := strings.Compare(h.Method, method); c != 0 {
			return c
		}
		return strings.Compare(flows.HTTPPathShape(h.Method, h.Path), shape)
	})
	if ok {
		samples[i].Count += s.Count
		samples[i].Path = min(samples[i].Path, s.Path)
		return samples, truncated
	}
	if len(samples) >= limit {
		return samples, true
	}
	return slices.Insert(samples, i, s), truncated
}

// reshapeSamples folds samples stored before they were kept by shape (one per raw path,
// sorted by path) into one per shape, in the order addSample keeps.
func (e *Edge) reshapeSamples() {
	stored := e.HTTP
	e.HTTP = nil
	for _, s := range stored {
		e.HTTP, e.Truncated = addSample(e.HTTP, s, len(stored), e.Truncated)
	}
}

// insertBounded inserts v into the sorted set s unless it is there or s is full.
func insertBounded(s []string, v string, limit int) []string {
	s, _ = insertCapped(s, v, limit, false)
	return s
}

// insertCapped is insertBounded that also reports, sticky, whether a value was refused.
func insertCapped(s []string, v string, limit int, truncated bool) ([]string, bool) {
	i, ok := slices.BinarySearch(s, v)
	if ok {
		return s, truncated
	}
	if len(s) >= limit {
		return s, true
	}
	return slices.Insert(s, i, v), truncated
}

// cleanName lower-cases a DNS name and drops its trailing dot, as flows does for Hubble's names.
func cleanName(n string) string {
	return strings.TrimSuffix(strings.ToLower(n), ".")
}

// learnDNS links the IPs of a DNS answer to the queried name.
func (a *Aggregator) learnDNS(t time.Time, d *flows.DNS) {
	name := cleanName(d.Query)
	if name == "" {
		return
	}
	for _, ip := range d.IPs {
		e := a.dns[ip]
		if e == nil {
			if len(a.dns) >= a.cfg.MaxDNSAnswers {
				a.evictDNS()
			}
			e = &dnsEntry{}
			a.dns[ip] = e
		}
		e.names = insertBounded(e.names, name, a.cfg.MaxNamesPerIP)
		if t.After(e.last) {
			e.last = t
		}
		a.dirtyDNS[ip] = struct{}{}
	}
}

// evictDNS drops the least recently seen tenth of the DNS answer map: evicting in bulk keeps
// the cost of the sort off the per-answer path.
func (a *Aggregator) evictDNS() {
	type aged struct {
		ip   string
		last time.Time
	}
	all := make([]aged, 0, len(a.dns))
	for ip, e := range a.dns {
		all = append(all, aged{ip, e.last})
	}
	slices.SortFunc(all, func(x, y aged) int {
		return cmp.Or(x.last.Compare(y.last), strings.Compare(x.ip, y.ip))
	})
	for _, x := range all[:max(1, len(all)/10)] {
		delete(a.dns, x.ip)
		a.dirtyDNS[x.ip] = struct{}{} // dirty and absent: deleted on commit
	}
}

func (a *Aggregator) overflow(what string, limit int) {
	a.tot.Overflow++
	a.totDirty = true
	a.metrics.overflow.WithLabelValues(what).Inc()
	if !a.warned[what] {
		a.warned[what] = true
		a.log.Warn("aggregation cap reached: further observations are counted as overflow and dropped",
			"cap", what, "limit", limit)
	}
}

// Expire removes edges last seen before cutoff, then workloads left without edges and not seen
// since, and DNS answers not seen since. The removals reach the store with the next batch.
// It returns the number of edges removed.
func (a *Aggregator) Expire(cutoff time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	c := nanos(cutoff)
	for _, i := range a.liveEdges() {
		if a.edges.at(i).last >= c {
			continue
		}
		a.dropEdge(i)
		n++
	}
	for k, w := range a.workloads {
		if w.edges <= 0 && w.LastSeen.Before(cutoff) {
			delete(a.workloads, k)
			a.releaseWorkload(w)
			if a.nsWorkloads[w.Key.Namespace]--; a.nsWorkloads[w.Key.Namespace] <= 0 {
				delete(a.nsWorkloads, w.Key.Namespace)
			}
			a.deletedWls[k] = struct{}{}
			w.dirty = false
		}
	}
	for ip, e := range a.dns {
		if e.last.Before(cutoff) {
			delete(a.dns, ip)
			a.dirtyDNS[ip] = struct{}{}
		}
	}
	return n
}

// live reports whether the edge id is held.
func (a *Aggregator) live(id edgeID) bool {
	w := a.workloads[id.w]
	pid, ok := a.peerIdx[id.peer]
	if w == nil || !ok {
		return false
	}
	for j := a.groups.get(groupID{w.id, pid, id.dir, id.proto}); j != 0; j = a.edges.at(j).next {
		r := a.edges.at(j)
		if r.collapsed == id.collapsed && (id.collapsed || r.port == id.port) {
			return true
		}
	}
	return false
}

// Snapshot copies the aggregated state, sorted as Store.Snapshot returns it.
func (a *Aggregator) Snapshot() *Snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := &Snapshot{
		Workloads: make([]Workload, 0, len(a.workloads)),
		Edges:     make(map[string][]Edge, len(a.workloads)),
		From:      a.tot.From,
		To:        a.tot.To,
		Flows:     a.tot.Flows,
		Overflow:  a.tot.Overflow,
		Rejected:  a.tot.Rejected,
		Churning:  a.churning(),
		DNS:       make(map[string][]string, len(a.dns)),
		dnsLast:   make(map[string]time.Time, len(a.dns)),
	}
	for _, w := range a.workloads {
		s.Workloads = append(s.Workloads, w.Workload.clone())
	}
	slices.SortFunc(s.Workloads, func(x, y Workload) int { return strings.Compare(x.Key.String(), y.Key.String()) })
	for i := edgeIdx(1); int(i) < a.edges.len(); i++ {
		if r := a.edges.at(i); !r.deleted {
			key := a.wlByID[r.wl].key
			s.Edges[key] = append(s.Edges[key], a.edgeOf(r).clone())
		}
	}
	for _, es := range s.Edges {
		slices.SortFunc(es, func(x, y Edge) int { return compareEdgeKeys(&x.EdgeKey, &y.EdgeKey) })
	}
	for ip, e := range a.dns {
		s.DNS[ip] = slices.Clone(e.names)
		s.dnsLast[ip] = e.last
	}
	for _, l := range a.lost {
		s.Lost = append(s.Lost, *l)
	}
	slices.SortFunc(s.Lost, func(x, y NodeLost) int { return strings.Compare(x.Node, y.Node) })
	return s
}

func (w Workload) clone() Workload {
	w.Key.Labels = slices.Clone(w.Key.Labels)
	w.Names = slices.Clone(w.Names)
	w.Nodes = slices.Clone(w.Nodes)
	return w
}

func (e Edge) clone() Edge {
	e.Workload.Labels = slices.Clone(e.Workload.Labels)
	e.Peer.Labels = slices.Clone(e.Peer.Labels)
	e.DNSNames = slices.Clone(e.DNSNames)
	e.HTTP = slices.Clone(e.HTTP)
	return e
}

// churning returns the flagged churning labels, sorted.
func (a *Aggregator) churning() []ChurningLabel {
	out := slices.Clone(a.churn.order)
	slices.SortFunc(out, func(x, y ChurningLabel) int {
		return cmp.Or(strings.Compare(x.Namespace, y.Namespace), strings.Compare(x.Owner, y.Owner), strings.Compare(x.Key, y.Key))
	})
	return out
}
