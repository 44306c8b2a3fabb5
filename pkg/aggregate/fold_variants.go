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
			a.addWorkloadID(t)
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
		a.releaseWorkload(w)
		a.deletedWls[old] = struct{}{}
		if a.nsWorkloads[nk.Namespace]--; a.nsWorkloads[nk.Namespace] <= 0 {
			delete(a.nsWorkloads, nk.Namespace)
		}
	}
	type movedEdge struct {
		i    edgeIdx
		wkey string
		e    Edge
	}
	var moved []movedEdge
	for _, i := range a.liveEdges() {
		r := a.edges.at(i)
		wkey := a.wlByID[r.wl].key
		_, subject := rekey[wkey]
		_, peer := rekey[workloadPeerKey(&a.peers[r.peer].Peer)]
		if subject || peer {
			moved = append(moved, movedEdge{i, wkey, a.edgeOf(r)})
		}
	}
	// In key order, so that merging and collapsing come out the same on every run.
	slices.SortFunc(moved, func(x, y movedEdge) int {
		if c := strings.Compare(x.wkey, y.wkey); c != 0 {
			return c
		}
		return compareEdgeKeys(&x.e.EdgeKey, &y.e.EdgeKey)
	})
	for _, m := range moved {
		a.dropEdge(m.i)
	}
	for _, m := range moved {
		k := m.e.EdgeKey
		if nk, ok := rekey[m.wkey]; ok {
			k.Workload = nk
		}
		if nk, ok := rekey[workloadPeerKey(&k.Peer)]; ok {
			k.Peer.Namespace, k.Peer.Labels = nk.Namespace, nk.Labels
		}
		a.absorb(k, &m.e)
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
	pid := a.peerFor(k.Peer, k.Peer.Key())
	gk := groupID{w.id, pid, k.Direction, k.Proto}
	head := a.groups.get(gk)
	var i edgeIdx
	switch {
	case head != 0 && a.edges.at(head).collapsed:
		i = head
	case src.Collapsed && head != 0:
		i = a.collapse(gk, head, src.Port)
	case src.Collapsed:
		i = a.newEdge(w, pid, k.Direction, k.Proto, src.Port, true, nanos(src.FirstSeen))
		a.edges.at(i).endPort = src.EndPort
		a.groups.set(gk, i) // the group had no edge
	default:
		var last edgeIdx
		var n int
		switch i, last, n = a.portEdge(head, k.Port); {
		case i != 0:
		case n >= a.cfg.MaxPorts:
			i = a.collapse(gk, head, k.Port)
		default:
			i = a.newEdge(w, pid, k.Direction, k.Proto, k.Port, false, nanos(src.FirstSeen))
			a.appendToGroup(gk, last, i)
		}
	}
	a.mergeEdge(i, src)
	a.markEdge(i)
}
