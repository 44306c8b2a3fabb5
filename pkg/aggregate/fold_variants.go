package aggregate

import (
	"maps"
	"slices"
	"strings"
)

// foldVariants merges the workloads stored with a label that was just found churning into the
// identity without it: the up to Config.MaxLabelValues variants seen before detection would
// otherwise stay as workloads of their own, each with a policy selecting a label value that
// no pod carries any more. Their counts, times, names and nodes go to the merged workload;
// their edges, and the edges of other workloads to them, move to the merged identity and are
// merged with the edges it has (collapsing ports as observe would). Only workloads with the
// label's owner as their single owner are folded: an identity shared by two owners keeps
// its label for the other one. It returns the number of workloads folded.
//
// It costs one pass over all edges; it runs once per churning label.
func (a *Aggregator) foldVariants(l ChurningLabel) int {
	rekey := make(map[string]WorkloadKey)
	for k, w := range a.workloads {
		if w.Key.Namespace != l.Namespace || len(w.Names) != 1 || w.Names[0] != l.Owner {
			continue
		}
		labels := slices.DeleteFunc(slices.Clone(w.Key.Labels), func(s string) bool {
			key, _ := labelKey(s)
			return key == l.Key
		})
		if len(labels) < len(w.Key.Labels) {
			rekey[k] = WorkloadKey{Namespace: w.Key.Namespace, Labels: labels}
		}
	}
	if len(rekey) == 0 {
		return 0
	}
	// Workloads first: the moved edges need their new owners.
	for _, old := range slices.Sorted(maps.Keys(rekey)) {
		w, nk := a.workloads[old], rekey[old]
		key := nk.String()
		t := a.workloads[key]
		if t == nil {
			t = &workloadState{key: key, Workload: Workload{Key: nk, FirstSeen: w.FirstSeen, LastSeen: w.LastSeen}}
			a.workloads[key] = t
			a.nsWorkloads[nk.Namespace]++
		}
		t.Flows += w.Flows
		if w.FirstSeen.Before(t.FirstSeen) {
			t.FirstSeen = w.FirstSeen
		}
		if w.LastSeen.After(t.LastSeen) {
			t.LastSeen = w.LastSeen
		}
		for _, n := range w.Names {
			t.Names = insertBounded(t.Names, n, maxNamesPerWorkload)
		}
		for _, n := range w.Nodes {
			t.Nodes = insertBounded(t.Nodes, n, maxNodesPerWorkload)
		}
		a.markWorkload(t)
		delete(a.workloads, old)
		a.deletedWls[old] = struct{}{}
		if a.nsWorkloads[nk.Namespace]--; a.nsWorkloads[nk.Namespace] <= 0 {
			delete(a.nsWorkloads, nk.Namespace)
		}
	}
	var moved []*edgeState
	for _, e := range a.allEdges() {
		_, subject := rekey[e.id.w]
		_, peer := rekey[workloadPeerKey(&e.Peer)]
		if subject || peer {
			moved = append(moved, e)
		}
	}
	// In key order, so that merging and collapsing come out the same on every run.
	slices.SortFunc(moved, func(x, y *edgeState) int {
		if c := strings.Compare(x.id.w, y.id.w); c != 0 {
			return c
		}
		return compareEdgeKeys(&x.EdgeKey, &y.EdgeKey)
	})
	for _, e := range moved {
		a.dropEdge(e)
	}
	for _, e := range moved {
		k := e.EdgeKey
		if nk, ok := rekey[k.Workload.String()]; ok {
			k.Workload = nk
		}
		if nk, ok := rekey[workloadPeerKey(&k.Peer)]; ok {
			k.Peer.Namespace, k.Peer.Labels = nk.Namespace, nk.Labels
		}
		a.absorb(k, &e.Edge)
	}
	return len(rekey)
}

// workloadPeerKey is the workload key of a workload peer, or "" for other peers.
func workloadPeerKey(p *Peer) string {
	if p.Kind != PeerWorkload {
		return ""
	}
	return WorkloadKey{Namespace: p.Namespace, Labels: p.Labels}.String()
}

// absorb adds the observations of src under the key k, into the edge k names or, when its
// ports are collapsed or must collapse now, into the group's range edge. The workload of k
// exists. No cap applies: absorbing never adds more edges than it removed.
func (a *Aggregator) absorb(k EdgeKey, src *Edge) {
	w := a.workloads[k.Workload.String()]
	peerKey := k.Peer.Key()
	gid := groupID{w.key, k.Direction, peerKey, k.Proto}
	g := a.groups[gid]
	if g == nil {
		g = newGroup()
		a.groups[gid] = g
	}
	var e *edgeState
	switch {
	case g.collapsed != nil:
		e = g.collapsed
	case src.Collapsed && len(g.edges) > 0:
		e = a.collapse(gid, g, src.Port)
	case src.Collapsed:
		id := edgeID{w: w.key, dir: k.Direction, peer: peerKey, proto: k.Proto, collapsed: true}
		e = a.newEdge(g, w, id, k, src.FirstSeen)
		e.EndPort = src.EndPort
		g.collapsed = e
	default:
		if e = g.edge(k.Port); e != nil {
			break
		}
		if len(g.edges) >= a.cfg.MaxPorts {
			e = a.collapse(gid, g, k.Port)
			break
		}
		id := edgeID{w: w.key, dir: k.Direction, peer: peerKey, proto: k.Proto, port: k.Port}
		e = a.newEdge(g, w, id, k, src.FirstSeen)
		e.EndPort = k.Port
		g.edges = append(g.edges, e)
	}
	e.merge(src, a.cfg)
	a.markEdge(e)
}

// dropEdge removes e from the indexes and its group, recording the deletion for the next batch.
func (a *Aggregator) dropEdge(e *edgeState) {
	a.removeEdge(e)
	gid := groupID{e.id.w, e.id.dir, e.id.peer, e.id.proto}
	if g := a.groups[gid]; g != nil {
		if e.id.collapsed {
			g.collapsed = nil
		} else {
			g.edges = slices.DeleteFunc(g.edges, func(o *edgeState) bool { return o == e })
		}
		if g.collapsed == nil && len(g.edges) == 0 {
			delete(a.groups, gid)
		}
	}
}
