package aggregate

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// Merge returns one snapshot of what several stores hold, as one store would hold it had it
// aggregated all their flows: the snapshots of replicas that read disjoint sets of nodes
// (issue 19), merged before synthesis. Nothing is counted twice as long as no flow went into
// two of them; the replicas' split of the nodes and the handover cursor see to that.
//
//	what                          merged as
//	workload, edge                the same key in several snapshots is one
//	counts, flows, lost, overflow summed
//	first seen / last seen, From  the earliest / the latest
//	names, nodes, DNS names       union, sorted
//	HTTP samples                  per method and path shape: counts summed, smallest path
//	a port range (Collapsed)      absorbs the per-port edges of the same peer and protocol
//	                              from the other snapshots: one replica reaching the port
//	                              cap means the peer's ports are a range
//
// Nil snapshots are skipped; the inputs are not modified. The result carries no DNS ages,
// so it is for synthesis and reports, not for loading into an Aggregator.
func Merge(snaps ...*Snapshot) *Snapshot {
	out := &Snapshot{Edges: map[string][]Edge{}, DNS: map[string][]string{}}
	workloads := map[string]*Workload{}
	lost := map[string]*NodeLost{}
	churn := map[ChurningLabel]bool{}
	// ranged marks the (workload, direction, peer, protocol) groups some snapshot collapsed.
	ranged := map[rangedGroup]bool{}
	for _, s := range snaps {
		if s == nil {
			continue
		}
		for key, es := range s.Edges {
			for i := range es {
				if es[i].Collapsed {
					ranged[rangedGroup{key, groupOf(&es[i], es[i].Peer.Key())}] = true
				}
			}
		}
	}
	edges := map[string]*mergedEdges{} // by workload key
	for _, s := range snaps {
		if s == nil {
			continue
		}
		out.From = earliest(out.From, s.From)
		out.To = latest(out.To, s.To)
		out.Flows += s.Flows
		out.Overflow += s.Overflow
		out.Rejected += s.Rejected
		for i := range s.Workloads {
			mergeWorkload(workloads, &s.Workloads[i])
		}
		for key, es := range s.Edges {
			m := edges[key]
			if m == nil {
				m = &mergedEdges{at: map[edgeSlot]int{}}
				edges[key] = m
			}
			for i := range es {
				m.add(&es[i], key, ranged)
			}
		}
		for _, l := range s.Lost {
			if p, ok := lost[l.Node]; ok {
				p.Lost += l.Lost
				p.Last = latest(p.Last, l.Last)
			} else {
				c := l
				lost[l.Node] = &c
			}
		}
		for _, c := range s.Churning {
			churn[c] = true
		}
		for ip, names := range s.DNS {
			out.DNS[ip] = union(out.DNS[ip], names)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(workloads)) {
		out.Workloads = append(out.Workloads, *workloads[k])
	}
	for key, m := range edges {
		out.Edges[key] = m.sorted()
	}
	for _, n := range slices.Sorted(maps.Keys(lost)) {
		out.Lost = append(out.Lost, *lost[n])
	}
	for c := range churn {
		out.Churning = append(out.Churning, c)
	}
	slices.SortFunc(out.Churning, func(x, y ChurningLabel) int {
		return cmp.Or(strings.Compare(x.Namespace, y.Namespace), strings.Compare(x.Owner, y.Owner), strings.Compare(x.Key, y.Key))
	})
	return out
}

func mergeWorkload(ws map[string]*Workload, w *Workload) {
	k := w.Key.String()
	p, ok := ws[k]
	if !ok {
		c := w.clone()
		ws[k] = &c
		return
	}
	p.Names = union(p.Names, w.Names)
	p.Nodes = union(p.Nodes, w.Nodes)
	p.FirstSeen = earliest(p.FirstSeen, w.FirstSeen)
	p.LastSeen = latest(p.LastSeen, w.LastSeen)
	p.Flows += w.Flows
}

// edgeGroup names an edge's (direction, peer, protocol) within its workload: the edges one
// port range stands for. The peer is its Key, computed once per edge merged: building it for
// every map lookup and every comparison of the sort was most of a merge's CPU (issue 19.3).
type edgeGroup struct {
	dir   flows.Direction
	peer  string
	proto flows.Protocol
}

func groupOf(e *Edge, peer string) edgeGroup { return edgeGroup{e.Direction, peer, e.Proto} }

// rangedGroup is an edgeGroup of one workload (by key).
type rangedGroup struct {
	workload string
	edgeGroup
}

// edgeSlot is where an edge merges: its group's one range edge (ranged), else its port's.
type edgeSlot struct {
	edgeGroup
	ranged bool
	port   uint16
}

// mergedEdges are one workload's merged edges, with each one's peer key.
type mergedEdges struct {
	at    map[edgeSlot]int // index in es
	es    []Edge
	peers []string
}

func (m *mergedEdges) add(e *Edge, workload string, ranged map[rangedGroup]bool) {
	g := groupOf(e, e.Peer.Key())
	slot := edgeSlot{edgeGroup: g, ranged: ranged[rangedGroup{workload, g}]}
	if !slot.ranged {
		slot.port = e.Port
	}
	i, ok := m.at[slot]
	if !ok {
		c := e.clone()
		if slot.ranged {
			c.Collapsed = true
		}
		m.at[slot] = len(m.es)
		m.es = append(m.es, c)
		m.peers = append(m.peers, g.peer)
		return
	}
	p := &m.es[i]
	p.Port = min(p.Port, e.Port)
	p.EndPort = max(p.EndPort, e.EndPort)
	p.Counts.add(e.Counts)
	p.FirstSeen = earliest(p.FirstSeen, e.FirstSeen)
	p.LastSeen = latest(p.LastSeen, e.LastSeen)
	p.DNSNames = union(p.DNSNames, e.DNSNames)
	p.HTTP = mergeHTTP(p.HTTP, e.HTTP)
	p.Truncated = p.Truncated || e.Truncated
}

// sorted returns the edges in compareEdgeKeys' order, comparing the peer keys already built.
func (m *mergedEdges) sorted() []Edge {
	order := make([]int, len(m.es))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int {
		return compareEdgeKeysWith(&m.es[i].EdgeKey, &m.es[j].EdgeKey, m.peers[i], m.peers[j])
	})
	out := make([]Edge, len(order))
	for k, i := range order {
		out[k] = m.es[i]
	}
	return out
}

// mergeHTTP sums samples of the same method and path shape, keeping the smallest path, in the
// order the Aggregator keeps them (method, then shape).
func mergeHTTP(a, b []HTTPSample) []HTTPSample {
	if len(b) == 0 {
		return a
	}
	type key struct{ method, shape string }
	byKey := map[key]*HTTPSample{}
	var keys []key
	for _, s := range slices.Concat(a, b) {
		k := key{s.Method, flows.HTTPPathShape(s.Method, s.Path)}
		if p, ok := byKey[k]; ok {
			p.Count += s.Count
			if s.Path < p.Path {
				p.Path = s.Path
			}
			continue
		}
		c := s
		byKey[k] = &c
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y key) int {
		return cmp.Or(strings.Compare(x.method, y.method), strings.Compare(x.shape, y.shape))
	})
	out := make([]HTTPSample, len(keys))
	for i, k := range keys {
		out[i] = *byKey[k]
	}
	return out
}

// union returns the sorted union of two sorted or unsorted string sets.
func union(a, b []string) []string {
	if len(b) == 0 {
		return a
	}
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// HoldsEdgesOf reports whether s holds every edge of o: the same edge, or a range edge
// (Collapsed) of the same workload, direction, peer and protocol spanning its ports, holding
// each DNS name looked up and each HTTP method and path shape seen over it, as synthesis turns
// those into rules. Counts and times are not compared. Replicas use it to tell an older state
// of one store, whose edges a later state holds all (as long as none expired), from a copy of
// that store that lacks some of what it learned (a store restored from a backup).
func (s *Snapshot) HoldsEdgesOf(o *Snapshot) bool {
	for key, es := range o.Edges {
		if len(es) == 0 {
			continue
		}
		have := s.Edges[key]
		ranges := map[edgeGroup]*Edge{}
		ports := map[edgeSlot]*Edge{}
		for i := range have {
			e := &have[i]
			g := groupOf(e, e.Peer.Key())
			if e.Collapsed {
				ranges[g] = e
			} else {
				ports[edgeSlot{edgeGroup: g, port: e.Port}] = e
			}
		}
		for i := range es {
			e := &es[i]
			g := groupOf(e, e.Peer.Key())
			end := e.Port
			if e.Collapsed {
				end = e.EndPort
			}
			h := ranges[g]
			if h == nil || e.Port < h.Port || end > h.EndPort {
				h = nil
				if !e.Collapsed {
					h = ports[edgeSlot{edgeGroup: g, port: e.Port}]
				}
			}
			if h == nil || !holdsDetail(h, e) {
				return false
			}
		}
	}
	return true
}

// holdsDetail reports whether edge h holds every DNS name and HTTP method and path shape of e.
func holdsDetail(h, e *Edge) bool {
	for _, n := range e.DNSNames {
		if _, ok := slices.BinarySearch(h.DNSNames, n); !ok {
			return false
		}
	}
	for _, x := range e.HTTP {
		shape := flows.HTTPPathShape(x.Method, x.Path)
		if !slices.ContainsFunc(h.HTTP, func(y HTTPSample) bool {
			return y.Method == x.Method && flows.HTTPPathShape(y.Method, y.Path) == shape
		}) {
			return false
		}
	}
	return true
}
