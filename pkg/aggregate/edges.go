package aggregate

import (
	"github.com/recommender/recommender/pkg/flows"
)

// The Aggregator's edges live in tables without pointers (issue 19.2). Over 1M edges, edges
// held as objects (a group with its edges, their key strings, label slices and times, about a
// dozen pointer words each) made every garbage collection mark a million objects: a quarter of
// the ingest's CPU, and a map keyed by two strings missed the cache two or three times per
// lookup. Here an edge is an edgeRec in one slice, its workload and peer are indexes into
// small tables, its times are Unix nanoseconds (as the store keeps them), its DNS names and
// HTTP samples (few edges have any) sit in a side table, and the group map is keyed and valued
// by integers: the collector does not scan the slice or the map at all.

// edgeIdx is the index of an edge in Aggregator.edges. 0 is no edge: slot 0 is never used.
type edgeIdx uint32

// edgeTable holds the edge records in chunks: growing it never copies the records held (over
// 1M edges, doubling one slice copied and cleared hundreds of MB on the ingest goroutine), and
// a record stays where it is.
type edgeTable struct {
	chunks []*[edgeChunk]edgeRec
	n      int
}

const edgeChunkBits = 10
const edgeChunk = 1 << edgeChunkBits

func newEdgeTable() edgeTable {
	var t edgeTable
	t.grow() // slot 0: no edge
	return t
}

func (t *edgeTable) at(i edgeIdx) *edgeRec { return &t.chunks[i>>edgeChunkBits][i&(edgeChunk-1)] }

func (t *edgeTable) len() int { return t.n }

// grow adds a zero record and returns its index.
func (t *edgeTable) grow() edgeIdx {
	if t.n == len(t.chunks)*edgeChunk {
		t.chunks = append(t.chunks, new([edgeChunk]edgeRec))
	}
	t.n++
	return edgeIdx(t.n - 1)
}

// edgeRec is one edge held by the Aggregator.
type edgeRec struct {
	counts Counts
	// first and last are the FirstSeen and LastSeen times in Unix ns (nanos).
	first, last int64
	wl          uint32 // index into Aggregator.wlByID
	peer        uint32 // index into Aggregator.peers
	// next is the next edge of the same group (workload, direction, peer, protocol), in the
	// order they were created; a collapsed edge is its group's only edge.
	next edgeIdx
	// mate is, for a client's egress edge, the server's ingress edge its last flow was also
	// counted in: a hint that spares the second group lookup of a flow between two
	// workloads, checked against the edge it names before use (that edge may have been
	// removed, collapsed or its slot reused since).
	mate edgeIdx
	// extra indexes the edge's DNS names and HTTP samples in Aggregator.extras, 0 for none.
	extra         uint32
	port, endPort uint16
	dir           flows.Direction
	proto         flows.Protocol
	collapsed     bool
	truncated     bool
	dirty         bool // in Aggregator.dirtyEdges
	// deleted marks a removed edge, and a free slot: a removed edge's slot is reused only
	// after the next TakeBatch, since the batch being built may still name it.
	deleted bool
}

// groupID names a group of edges: the per-port edges of one workload, direction, peer and
// protocol, or the collapsed edge that replaced them.
type groupID struct {
	wl, peer uint32
	dir      flows.Direction
	proto    flows.Protocol
}

// peerEntry is one distinct peer of the held edges, with the number of edges to it: it is
// forgotten with its last edge, so that a stream of short-lived external addresses does not
// grow the table.
type peerEntry struct {
	Peer
	key   string // Peer.Key()
	edges int
}

// edgeExtra holds what few edges have: DNS names looked up and HTTP samples.
type edgeExtra struct {
	dns  []string
	http []HTTPSample
}

// worldPeer is the peer CIDR peers beyond Config.MaxWorldPeers are folded into.
var worldPeer = Peer{Kind: PeerEntity, Entity: "world"}

const worldPeerKey = "entity:world"

// peerFor returns the index of the peer with key key, adding it (with no edges) if new.
func (a *Aggregator) peerFor(p Peer, key string) uint32 {
	if id, ok := a.peerIdx[key]; ok {
		return id
	}
	var id uint32
	if n := len(a.peerFree); n > 0 {
		id = a.peerFree[n-1]
		a.peerFree = a.peerFree[:n-1]
		a.peers[id] = peerEntry{Peer: p, key: key}
	} else {
		id = uint32(len(a.peers))
		a.peers = append(a.peers, peerEntry{Peer: p, key: key})
	}
	a.peerIdx[key] = id
	return id
}

// addWorkloadID gives w an index in wlByID.
func (a *Aggregator) addWorkloadID(w *workloadState) {
	if n := len(a.wlFree); n > 0 {
		w.id = a.wlFree[n-1]
		a.wlFree = a.wlFree[:n-1]
		a.wlByID[w.id] = w
		return
	}
	w.id = uint32(len(a.wlByID))
	a.wlByID = append(a.wlByID, w)
}

// releaseWorkload is called once w left a.workloads: its index is freed with its last edge.
func (a *Aggregator) releaseWorkload(w *workloadState) {
	w.gone = true
	if w.edges <= 0 {
		a.wlByID[w.id] = nil
		a.wlFree = append(a.wlFree, w.id)
	}
}

// newEdge makes an edge of w to the peer pid, counted in every index but linked into no group
// (callers know where it belongs).
func (a *Aggregator) newEdge(w *workloadState, pid uint32, dir flows.Direction, proto flows.Protocol, port uint16, collapsed bool, t int64) edgeIdx {
	var i edgeIdx
	if n := len(a.edgeFree); n > 0 {
		i = a.edgeFree[n-1]
		a.edgeFree = a.edgeFree[:n-1]
	} else {
		i = a.edges.grow()
	}
	*a.edges.at(i) = edgeRec{wl: w.id, peer: pid, dir: dir, proto: proto, port: port, endPort: port,
		collapsed: collapsed, first: t, last: t}
	a.nEdges++
	w.edges++
	p := &a.peers[pid]
	p.edges++
	if p.Kind == PeerCIDR {
		id := peerID{w.id, dir, pid}
		if a.peerEdges[id]++; a.peerEdges[id] == 1 {
			a.cidrPeers[wdID{w.id, dir}]++
		}
	}
	return i
}

// removeEdge drops edge i from the indexes (not from its group: dropEdge) and records the
// deletion for the next batch.
func (a *Aggregator) removeEdge(i edgeIdx) {
	r := a.edges.at(i)
	id, k := a.keyOf(r)
	a.deletedEdges[id] = k
	r.deleted = true
	a.nEdges--
	a.edgeFreeing = append(a.edgeFreeing, i)
	p := &a.peers[r.peer]
	if p.Kind == PeerCIDR {
		pid := peerID{r.wl, r.dir, r.peer}
		if a.peerEdges[pid]--; a.peerEdges[pid] <= 0 {
			delete(a.peerEdges, pid)
			wd := wdID{r.wl, r.dir}
			if a.cidrPeers[wd]--; a.cidrPeers[wd] <= 0 {
				delete(a.cidrPeers, wd)
			}
		}
	}
	if p.edges--; p.edges <= 0 {
		delete(a.peerIdx, p.key)
		*p = peerEntry{}
		a.peerFree = append(a.peerFree, r.peer)
	}
	w := a.wlByID[r.wl]
	if w.edges--; w.edges <= 0 && w.gone {
		a.wlByID[r.wl] = nil
		a.wlFree = append(a.wlFree, r.wl)
	}
}

// portEdge walks the per-port edges of a group from its first, head: it returns the edge for
// port (0 if none) and, when there is none, the group's last edge and its number of edges.
func (a *Aggregator) portEdge(head edgeIdx, port uint16) (i, last edgeIdx, n int) {
	for j := head; j != 0; j = a.edges.at(j).next {
		if a.edges.at(j).port == port {
			return j, 0, 0
		}
		last = j
		n++
	}
	return 0, last, n
}

// appendToGroup adds edge i to the group gk after its last edge, last (0: i starts the group).
func (a *Aggregator) appendToGroup(gk groupID, last, i edgeIdx) {
	if last == 0 {
		a.groups.set(gk, i)
	} else {
		a.edges.at(last).next = i
	}
}

// dropEdge removes edge i from its group and the indexes.
func (a *Aggregator) dropEdge(i edgeIdx) {
	r := a.edges.at(i)
	gk := groupID{r.wl, r.peer, r.dir, r.proto}
	head := a.groups.get(gk)
	switch {
	case head == i && r.next == 0:
		a.groups.delete(gk)
	case head == i:
		a.groups.set(gk, r.next)
	default:
		for j := head; j != 0; j = a.edges.at(j).next {
			if a.edges.at(j).next == i {
				a.edges.at(j).next = r.next
				break
			}
		}
	}
	a.removeEdge(i)
}

// reuseFreed makes the slots of the edges removed before the batch just taken reusable.
func (a *Aggregator) reuseFreed() {
	for _, i := range a.edgeFreeing {
		r := a.edges.at(i)
		if r.extra != 0 {
			a.extras[r.extra] = edgeExtra{}
			a.extraFree = append(a.extraFree, r.extra)
		}
		*r = edgeRec{deleted: true}
		a.edgeFree = append(a.edgeFree, i)
	}
	a.edgeFreeing = a.edgeFreeing[:0]
}

// extraOf returns the DNS names and HTTP samples of edge i, making room for them if it has none.
func (a *Aggregator) extraOf(i edgeIdx) *edgeExtra {
	r := a.edges.at(i)
	if r.extra == 0 {
		if n := len(a.extraFree); n > 0 {
			r.extra = a.extraFree[n-1]
			a.extraFree = a.extraFree[:n-1]
		} else {
			r.extra = uint32(len(a.extras))
			a.extras = append(a.extras, edgeExtra{})
		}
	}
	return &a.extras[r.extra]
}

// edgeOf returns the Edge r stands for. Its slices are the Aggregator's: clone before handing
// them out.
func (a *Aggregator) edgeOf(r *edgeRec) Edge {
	var x *edgeExtra
	if r.extra != 0 {
		x = &a.extras[r.extra]
	}
	return edgeFrom(r, a.wlByID[r.wl].Key, a.peers[r.peer].Peer, x)
}

// edgeFrom returns the Edge of r, its workload w, its peer p and its DNS names and HTTP
// samples x (nil for none).
func edgeFrom(r *edgeRec, w WorkloadKey, p Peer, x *edgeExtra) Edge {
	e := Edge{
		EdgeKey: EdgeKey{
			Workload: w, Direction: r.dir, Peer: p, Proto: r.proto, Port: r.port, Collapsed: r.collapsed,
		},
		EndPort: r.endPort, Counts: r.counts, FirstSeen: fromNanos(r.first), LastSeen: fromNanos(r.last),
		Truncated: r.truncated,
	}
	if x != nil {
		e.DNSNames, e.HTTP = x.dns, x.http
	}
	return e
}

// keyOf returns r's identity and key, as deletions record them.
func (a *Aggregator) keyOf(r *edgeRec) (edgeID, EdgeKey) {
	w, p := a.wlByID[r.wl], &a.peers[r.peer]
	id := edgeID{w: w.key, dir: r.dir, peer: p.key, proto: r.proto, port: r.port, collapsed: r.collapsed}
	if r.collapsed {
		id.port = 0
	}
	return id, EdgeKey{Workload: w.Key, Direction: r.dir, Peer: p.Peer, Proto: r.proto, Port: r.port, Collapsed: r.collapsed}
}

// mergeEdge adds o's observations to edge i, widening its port range.
func (a *Aggregator) mergeEdge(i edgeIdx, o *Edge) {
	r := a.edges.at(i)
	r.counts.add(o.Counts)
	r.port = min(r.port, o.Port)
	r.endPort = max(r.endPort, o.EndPort, o.Port)
	r.first = min(r.first, nanos(o.FirstSeen))
	r.last = max(r.last, nanos(o.LastSeen))
	r.truncated = r.truncated || o.Truncated
	if len(o.DNSNames) == 0 && len(o.HTTP) == 0 {
		return
	}
	x := a.extraOf(i)
	for _, n := range o.DNSNames {
		x.dns, r.truncated = insertCapped(x.dns, n, a.cfg.MaxDNSNames, r.truncated)
	}
	for _, s := range o.HTTP {
		x.http, r.truncated = addSample(x.http, s, a.cfg.MaxHTTPSamples, r.truncated)
	}
}

// liveEdges returns the index of every held edge, in no order: a copy, so that the caller may
// remove edges while it walks them.
func (a *Aggregator) liveEdges() []edgeIdx {
	all := make([]edgeIdx, 0, a.nEdges)
	for i := edgeIdx(1); int(i) < a.edges.len(); i++ {
		if !a.edges.at(i).deleted {
			all = append(all, i)
		}
	}
	return all
}
