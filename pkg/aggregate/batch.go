package aggregate

import (
	"cmp"
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// Batch is what changed in an Aggregator since the previous batch, ready for one Store.Commit:
// full values of new and changed records, keys of removed ones, the store-wide totals and the
// ingest cursor that the counts cover. A Batch owns its data (nothing is shared with the
// Aggregator), so it can be committed while aggregation goes on. Only TakeBatch makes one.
type Batch struct {
	// edges are the new and changed edges, already encoded for the store (issue 19.2: copying
	// each edge and encoding the copy later cost several allocations per edge, and with 1M
	// edges the garbage collector was most of the ingest's CPU).
	edges encodedEdges

	DeletedEdges     []EdgeKey
	Workloads        []Workload
	DeletedWorkloads []string // WorkloadKey.String()
	DNS              map[string]DNSAnswer
	DeletedDNS       []string
	Lost             []NodeLost
	// Totals are the store-wide counts after this batch (not increments).
	Flows    uint64
	Overflow uint64
	Rejected uint64
	From, To time.Time
	// Churning is the full list of churning labels when it changed since the previous batch;
	// nil leaves the stored list as it was.
	Churning []ChurningLabel
	// Files are how far each plain input file was read, all of them, when one changed; nil
	// leaves the stored marks as they were.
	Files []flows.FileMark
	// Cursor is the ingest position the batch brings the store to; nil leaves it as it was.
	Cursor *flows.Cursor
	// EdgeCount and WorkloadCount are the Aggregator's sizes, for the store's gauges.
	EdgeCount, WorkloadCount int
}

// encodedEdges holds store keys (appendEdgeKey) and values (appendEdge) back to back in two
// buffers: edge i is keys[keyEnd[i-1]:keyEnd[i]] and the same of values.
type encodedEdges struct {
	keys, values   []byte
	keyEnd, valEnd []int
	// ordered says the edges are already in key order (Aggregator.batchOrder).
	ordered bool
}

func (x *encodedEdges) len() int { return len(x.keyEnd) }

func (x *encodedEdges) key(i int) []byte {
	if i == 0 {
		return x.keys[:x.keyEnd[0]:x.keyEnd[0]]
	}
	return x.keys[x.keyEnd[i-1]:x.keyEnd[i]:x.keyEnd[i]]
}

func (x *encodedEdges) value(i int) []byte {
	if i == 0 {
		return x.values[:x.valEnd[0]:x.valEnd[0]]
	}
	return x.values[x.valEnd[i-1]:x.valEnd[i]:x.valEnd[i]]
}

// DNSAnswer is what the DNS answer map holds for one IP.
type DNSAnswer struct {
	Names    []string
	LastSeen time.Time
}

// Empty reports whether the batch changes nothing but, possibly, the cursor.
func (b *Batch) Empty() bool {
	return b.edges.len() == 0 && len(b.DeletedEdges) == 0 && len(b.Workloads) == 0 &&
		len(b.DeletedWorkloads) == 0 && len(b.DNS) == 0 && len(b.DeletedDNS) == 0 && len(b.Lost) == 0
}

// TakeBatch returns the changes since the previous call and starts a new batch.
func (a *Aggregator) TakeBatch() *Batch {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := &Batch{
		Flows: a.tot.Flows, Overflow: a.tot.Overflow, Rejected: a.tot.Rejected, From: a.tot.From, To: a.tot.To,
		EdgeCount: a.nEdges, WorkloadCount: len(a.workloads),
	}
	for id, k := range a.deletedEdges {
		if !a.live(id) {
			b.DeletedEdges = append(b.DeletedEdges, k)
		}
	}
	clear(a.deletedEdges)
	// Sized up front: at 100k edges a batch holds tens of thousands of edges, and growing the
	// buffers copied them over and over under a.mu (9% of the ingest's CPU, issue 19.2). The
	// key sizes are known; values are estimated and grow if they must.
	size := 0
	for _, i := range a.dirtyEdges {
		if r := a.edges.at(i); !r.deleted {
			size += len(a.wlByID[r.wl].key) + len(a.peers[r.peer].key) + 7
		}
	}
	x := &b.edges
	if sp := &a.spare; cap(sp.keys) >= size && cap(sp.keyEnd) >= len(a.dirtyEdges) {
		*x = encodedEdges{keys: sp.keys[:0], values: sp.values[:0], keyEnd: sp.keyEnd[:0], valEnd: sp.valEnd[:0]}
		*sp = encodedEdges{}
	} else {
		x.keys = make([]byte, 0, size)
		x.values = make([]byte, 0, size+64*len(a.dirtyEdges))
		x.keyEnd = make([]int, 0, len(a.dirtyEdges))
		x.valEnd = make([]int, 0, len(a.dirtyEdges))
	}
	var order []edgeIdx
	order, x.ordered = a.batchOrder()
	for _, i := range order {
		r := a.edges.at(i)
		e := a.edgeOf(r)
		x.keys = appendEdgeKey(x.keys, a.wlByID[r.wl].key, a.peers[r.peer].key, &e.EdgeKey)
		x.values = appendEdge(x.values, &e)
		x.keyEnd = append(x.keyEnd, len(x.keys))
		x.valEnd = append(x.valEnd, len(x.values))
	}
	for _, i := range a.dirtyEdges {
		a.edges.at(i).dirty = false
	}
	a.dirtyEdges = a.dirtyEdges[:0]
	a.reuseFreed()
	for k := range a.deletedWls {
		b.DeletedWorkloads = append(b.DeletedWorkloads, k)
	}
	clear(a.deletedWls)
	b.Workloads = make([]Workload, 0, len(a.dirtyWorkloads))
	for _, w := range a.dirtyWorkloads {
		if a.workloads[w.key] == w {
			b.Workloads = append(b.Workloads, w.Workload.clone())
		}
		w.dirty = false
	}
	a.dirtyWorkloads = a.dirtyWorkloads[:0]
	for ip := range a.dirtyDNS {
		if e := a.dns[ip]; e != nil {
			if b.DNS == nil {
				b.DNS = make(map[string]DNSAnswer)
			}
			b.DNS[ip] = DNSAnswer{Names: slices.Clone(e.names), LastSeen: e.last}
		} else {
			b.DeletedDNS = append(b.DeletedDNS, ip)
		}
	}
	clear(a.dirtyDNS)
	for n := range a.dirtyLost {
		b.Lost = append(b.Lost, *a.lost[n])
	}
	clear(a.dirtyLost)
	if a.churn.newFound {
		b.Churning = a.churning()
		a.churn.newFound = false
	}
	a.totDirty = false
	return b
}

// recycle hands back the buffers of a committed batch for TakeBatch to reuse; b must not be
// used afterwards. nil drops the buffers kept. With many edges every batch's encoding was
// garbage of several MiB, and each collection it brings on marks every edge held.
func (a *Aggregator) recycle(b *Batch) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if b == nil {
		a.spare = encodedEdges{}
		return
	}
	if cap(b.edges.keys) > cap(a.spare.keys) {
		a.spare = b.edges
	}
	b.edges = encodedEdges{}
}

// pending returns the number of edges and workloads changed since the last TakeBatch: the
// next commit's records.
func (a *Aggregator) pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.dirtyEdges) + len(a.deletedEdges) + len(a.dirtyWorkloads)
}

// Dirty reports whether anything changed since the last TakeBatch.
func (a *Aggregator) Dirty() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.totDirty || len(a.dirtyEdges) > 0 || len(a.deletedEdges) > 0 || len(a.dirtyWorkloads) > 0 ||
		len(a.deletedWls) > 0 || len(a.dirtyDNS) > 0 || len(a.dirtyLost) > 0 || a.churn.newFound
}

// restore loads stored state into an empty Aggregator, rebuilding its indexes. Nothing
// restored is dirty.
func (a *Aggregator) restore(s *Snapshot) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tot = totals{Flows: s.Flows, Overflow: s.Overflow, Rejected: s.Rejected, From: s.From, To: s.To}
	for _, w := range s.Workloads {
		key := w.Key.String()
		ws := &workloadState{key: key, Workload: w}
		a.workloads[key] = ws
		a.addWorkloadID(ws)
		a.nsWorkloads[w.Key.Namespace]++
	}
	for _, l := range s.Churning {
		if _, ok := a.churn.flagged[l]; !ok {
			a.churn.flagged[l] = struct{}{}
			a.churn.order = append(a.churn.order, l)
		}
	}
	for key, es := range s.Edges {
		w := a.workloads[key]
		rebuilt := w == nil
		if rebuilt && len(es) > 0 {
			// Edges stored without their workload's record: every edge needs its workload,
			// so the record is rebuilt from the edges.
			w = &workloadState{key: key, Workload: Workload{Key: es[0].Workload, FirstSeen: es[0].FirstSeen, LastSeen: es[0].LastSeen}}
			a.workloads[key] = w
			a.addWorkloadID(w)
			a.nsWorkloads[w.Key.Namespace]++
		}
		for _, e := range es {
			e.reshapeSamples()
			pid := a.peerFor(e.Peer, e.Peer.Key())
			gk := groupID{w.id, pid, e.Direction, e.Proto}
			i := a.newEdge(w, pid, e.Direction, e.Proto, e.Port, e.Collapsed, nanos(e.FirstSeen))
			r := a.edges.at(i)
			r.endPort, r.counts, r.last, r.truncated = e.EndPort, e.Counts, nanos(e.LastSeen), e.Truncated
			if len(e.DNSNames) > 0 || len(e.HTTP) > 0 {
				x := a.extraOf(i)
				x.dns, x.http = e.DNSNames, e.HTTP
			}
			a.link(gk, i)
			if rebuilt && e.FirstSeen.Before(w.FirstSeen) {
				w.FirstSeen = e.FirstSeen
			}
			if rebuilt && e.LastSeen.After(w.LastSeen) {
				w.LastSeen = e.LastSeen
			}
		}
	}
	for ip, names := range s.DNS {
		a.dns[ip] = &dnsEntry{names: names, last: s.dnsLast[ip]}
	}
	for _, l := range s.Lost {
		a.lost[l.Node] = &NodeLost{Node: l.Node, Lost: l.Lost, Last: l.Last}
	}
}

// batchOrder returns the live edges changed since the last batch in the order of their store
// keys, and whether it could order them (else they come in no order). A store key is the
// workload key, a 0 byte, the direction, the peer key, a 0 byte, the protocol, the collapsed
// flag and the port (appendEdgeKey), and no key holds a 0 byte (validate), so key order is the
// order of (workload key, direction, peer key, protocol, collapsed, port). Ranking the batch's
// distinct workload and peer keys as strings, few next to its edges, makes each edge's key one
// integer, and sorting those integers costs a small part of sorting the keys' bytes (issue
// 19.2: 0.25 s of the 1M-edge case).
func (a *Aggregator) batchOrder() ([]edgeIdx, bool) {
	live := make([]edgeIdx, 0, len(a.dirtyEdges))
	for _, i := range a.dirtyEdges {
		if !a.edges.at(i).deleted {
			live = append(live, i)
		}
	}
	if len(live) < 2 {
		return live, true
	}
	// rank+1 of each workload and peer of the batch, 0 for the others.
	wlRank := make([]uint32, len(a.wlByID))
	peerRank := make([]uint32, len(a.peers))
	var wls, peers []uint32
	for _, i := range live {
		r := a.edges.at(i)
		if wlRank[r.wl] == 0 {
			wlRank[r.wl] = 1
			wls = append(wls, r.wl)
		}
		if peerRank[r.peer] == 0 {
			peerRank[r.peer] = 1
			peers = append(peers, r.peer)
		}
	}
	pb, wb := bits.Len(uint(len(peers))), bits.Len(uint(len(wls)))
	// Below the peer rank: protocol (8 bits), collapsed (1) and port (16); above it the
	// direction (2) and the workload rank.
	const low = 8 + 1 + 16
	if wb+2+pb+low > 64 {
		return live, false
	}
	slices.SortFunc(wls, func(x, y uint32) int { return strings.Compare(a.wlByID[x].key, a.wlByID[y].key) })
	slices.SortFunc(peers, func(x, y uint32) int { return strings.Compare(a.peers[x].key, a.peers[y].key) })
	for rank, id := range wls {
		wlRank[id] = uint32(rank)
	}
	for rank, id := range peers {
		peerRank[id] = uint32(rank)
	}
	keyed := make([]keyedEdge, len(live))
	for j, i := range live {
		r := a.edges.at(i)
		k := uint64(wlRank[r.wl])<<(2+pb+low) | uint64(r.dir)<<(pb+low) | uint64(peerRank[r.peer])<<low |
			uint64(r.proto)<<17
		if r.collapsed {
			k |= 1 << 16 // and port 0, as in the key
		} else {
			k |= uint64(r.port)
		}
		keyed[j] = keyedEdge{k, i}
	}
	radixSortKeyed(keyed, wb+2+pb+low)
	for j := range keyed {
		live[j] = keyed[j].i
	}
	return live, true
}

type keyedEdge struct {
	key uint64
	i   edgeIdx
}

// radixSortKeyed sorts ks by key, whose bits above width are 0: least significant digit
// first, 11 bits per pass, so 100k edges over 50 bits take five linear passes.
func radixSortKeyed(ks []keyedEdge, width int) {
	if len(ks) < 256 {
		slices.SortFunc(ks, func(x, y keyedEdge) int { return cmp.Compare(x.key, y.key) })
		return
	}
	const digit = 11
	tmp := make([]keyedEdge, len(ks))
	for shift := 0; shift < width; shift += digit {
		var count [1<<digit + 1]int
		for _, k := range ks {
			count[(k.key>>shift)&(1<<digit-1)+1]++
		}
		for d := 1; d < len(count); d++ {
			count[d] += count[d-1]
		}
		for _, k := range ks {
			d := (k.key >> shift) & (1<<digit - 1)
			tmp[count[d]] = k
			count[d]++
		}
		ks, tmp = tmp, ks
	}
	if (width+digit-1)/digit%2 == 1 {
		copy(tmp, ks) // an odd number of passes left the result in the scratch
	}
}
