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
// ingest cursor that the counts cover. A Batch owns its data (it shares with the Aggregator
// only strings and label slices, which are never changed in place), so it can be committed
// while aggregation goes on. Only TakeBatch makes one.
type Batch struct {
	// edges are the new and changed edges, already encoded for the store (issue 19.2: copying
	// each edge and encoding the copy later cost several allocations per edge, and with 1M
	// edges the garbage collector was most of the ingest's CPU).
	edges encodedEdges
	// copied are the changed edges as TakeBatch copied them; encode (called by Store.Commit)
	// turns them into edges, on the committing goroutine and off the aggregator's lock.
	copied *edgeCopy

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
	// recs is the records buffer of the copy encode encoded, emptied, handed back with the
	// rest for the next copy: with 1M edges each batch copies about 10 MiB of records, and
	// allocating it anew cleared and faulted in that much on the ingesting goroutine.
	recs []edgeRec
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
	return b.edges.len() == 0 && (b.copied == nil || len(b.copied.recs) == 0) && len(b.DeletedEdges) == 0 && len(b.Workloads) == 0 &&
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
	// The batch's edges are copied, not encoded, under a.mu: over 1M edges encoding them took
	// 15% of the ingesting goroutine, the one that bounds the rate, while the committing one
	// waited (issue 19.2). The buffers of a committed batch are handed on for encode to fill.
	b.copied = a.copyEdges()
	b.edges, a.spare = a.spare, encodedEdges{}
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
	if x := b.edges; cap(x.keys) > cap(a.spare.keys) {
		// The buffers, not their contents: a batch taken with them holds no edges until
		// encode fills them.
		a.spare = encodedEdges{keys: x.keys[:0], values: x.values[:0], keyEnd: x.keyEnd[:0], valEnd: x.valEnd[:0], recs: x.recs[:0]}
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
// restored is dirty but what it had to repair (see below), which the next batch writes.
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
	// tails are the last edge of each group restored so far, so that linking a group's edges
	// costs a step each: a store written with a large MaxPorts holds thousands per group.
	tails := make(map[groupID]edgeIdx)
	a.groups.reserve(s.EdgeCount()) // at most one group per edge: no rehashing while loading
	for key, es := range s.Edges {
		w := a.workloads[key]
		rebuilt := w == nil
		if rebuilt && len(es) > 0 {
			// Edges stored without their workload's record: every edge needs its workload,
			// so the record is rebuilt from the edges and written with the next batch.
			w = &workloadState{key: key, Workload: Workload{Key: es[0].Workload, FirstSeen: es[0].FirstSeen, LastSeen: es[0].LastSeen}}
			a.workloads[key] = w
			a.addWorkloadID(w)
			a.nsWorkloads[w.Key.Namespace]++
			a.markWorkload(w)
		}
		for _, e := range es {
			e.reshapeSamples()
			peerKey := e.Peer.Key()
			pid := a.peerFor(e.Peer, peerKey)
			gk := groupID{w.id, pid, e.Direction, e.Proto}
			if rebuilt && e.FirstSeen.Before(w.FirstSeen) {
				w.FirstSeen = e.FirstSeen
			}
			if rebuilt && e.LastSeen.After(w.LastSeen) {
				w.LastSeen = e.LastSeen
			}
			// A store never holds a group's collapsed edge and per-port edges at once
			// (collapsing deletes the latter in the same batch), but a damaged one may: the
			// per-port edges are merged into the collapsed one and deleted with the next
			// batch, so that each flow of the group has one edge to be counted in.
			head := a.groups.get(gk)
			switch {
			case head != 0 && a.edges.at(head).collapsed && !e.Collapsed:
				a.mergeEdge(head, &e)
				a.markEdge(head)
				a.deletedEdges[edgeID{w: key, dir: e.Direction, peer: peerKey, proto: e.Proto, port: e.Port}] = e.EdgeKey
				continue
			case head != 0 && e.Collapsed:
				c := a.collapse(gk, head, e.Port)
				a.mergeEdge(c, &e)
				a.markEdge(c)
				delete(tails, gk)
				continue
			}
			i := a.newEdge(w, pid, e.Direction, e.Proto, e.Port, e.Collapsed, nanos(e.FirstSeen))
			r := a.edges.at(i)
			r.endPort, r.counts, r.last, r.truncated = e.EndPort, e.Counts, nanos(e.LastSeen), e.Truncated
			if len(e.DNSNames) > 0 || len(e.HTTP) > 0 {
				x := a.extraOf(i)
				x.dns, x.http = e.DNSNames, e.HTTP
			}
			a.appendToGroup(gk, tails[gk], i)
			tails[gk] = i
		}
	}
	for ip, names := range s.DNS {
		a.dns[ip] = &dnsEntry{names: names, last: s.dnsLast[ip]}
	}
	for _, l := range s.Lost {
		a.lost[l.Node] = &NodeLost{Node: l.Node, Lost: l.Lost, Last: l.Last}
	}
}

// edgeCopy is what TakeBatch copies of a batch's changed edges: their records, whose wl,
// peer and extra index the copy's own tables, and those tables. It shares nothing mutable
// with the Aggregator (label slices and strings are never changed in place).
type edgeCopy struct {
	recs   []edgeRec
	wls    []copiedWorkload
	peers  []peerEntry
	extras []edgeExtra // slot 0 unused
}

type copiedWorkload struct {
	key string // WorkloadKey.String()
	k   WorkloadKey
}

// copyEdges copies the live edges changed since the last batch.
func (a *Aggregator) copyEdges() *edgeCopy {
	c := &edgeCopy{recs: reuse(a.spare.recs, len(a.dirtyEdges)), extras: make([]edgeExtra, 1)}
	a.spare.recs = nil
	// index+1 of each workload and peer in the copy's tables, 0 for those not copied yet.
	wlAt := make([]uint32, len(a.wlByID))
	peerAt := make([]uint32, len(a.peers))
	for _, i := range a.dirtyEdges {
		r := *a.edges.at(i)
		if r.deleted {
			continue
		}
		if wlAt[r.wl] == 0 {
			w := a.wlByID[r.wl]
			c.wls = append(c.wls, copiedWorkload{w.key, w.Key})
			wlAt[r.wl] = uint32(len(c.wls))
		}
		if peerAt[r.peer] == 0 {
			c.peers = append(c.peers, a.peers[r.peer])
			peerAt[r.peer] = uint32(len(c.peers))
		}
		r.wl, r.peer = wlAt[r.wl]-1, peerAt[r.peer]-1
		if r.extra != 0 {
			x := &a.extras[r.extra]
			c.extras = append(c.extras, edgeExtra{dns: slices.Clone(x.dns), http: slices.Clone(x.http)})
			r.extra = uint32(len(c.extras) - 1)
		}
		c.recs = append(c.recs, r)
	}
	return c
}

// encode encodes the copied edges into b.edges, in key order when it can (ordered). Store.Commit
// calls it; it does nothing once done.
func (b *Batch) encode() {
	c := b.copied
	if c == nil {
		return
	}
	b.copied = nil
	order, ordered := c.order()
	// Each workload's and peer's part of the values is encoded once (appendEdge's parts):
	// building an Edge for each record and encoding its labels again was half of encode.
	var parts []byte
	wlPart, peerPart := make([]int, len(c.wls)+1), make([]int, len(c.peers)+1)
	for i := range c.wls {
		parts = appendWorkloadPart(parts, c.wls[i].k)
		wlPart[i+1] = len(parts)
	}
	peerPart[0] = len(parts)
	for i := range c.peers {
		parts = appendPeerPart(parts, &c.peers[i].Peer)
		peerPart[i+1] = len(parts)
	}
	x := &b.edges
	size := 0
	for i := range c.recs {
		r := &c.recs[i]
		size += len(c.wls[r.wl].key) + len(c.peers[r.peer].key) + 7
	}
	n := len(c.recs)
	*x = encodedEdges{
		keys: reuse(x.keys, size), values: reuse(x.values, size+64*n),
		keyEnd: reuse(x.keyEnd, n), valEnd: reuse(x.valEnd, n),
		ordered: ordered,
	}
	for _, j := range order {
		r := &c.recs[j]
		t := edgeTail{
			proto: r.proto, port: r.port, endPort: r.endPort, collapsed: r.collapsed, truncated: r.truncated,
			counts: &r.counts, first: r.first, last: r.last,
		}
		if r.extra != 0 {
			t.dns, t.http = c.extras[r.extra].dns, c.extras[r.extra].http
		}
		x.keys = appendEdgeKey(x.keys, c.wls[r.wl].key, c.peers[r.peer].key, r.dir, r.proto, r.port, r.collapsed)
		x.values = append(x.values, edgeFormat)
		x.values = append(x.values, parts[wlPart[r.wl]:wlPart[r.wl+1]]...)
		x.values = append(x.values, byte(r.dir))
		x.values = append(x.values, parts[peerPart[r.peer]:peerPart[r.peer+1]]...)
		x.values = appendEdgeTail(x.values, t)
		x.keyEnd = append(x.keyEnd, len(x.keys))
		x.valEnd = append(x.valEnd, len(x.values))
	}
	x.recs = c.recs[:0]
}

// reuse returns buf emptied when it holds n elements, else a new buffer for n and a quarter
// more: batches grow with the edges, and slices.Grow would copy the old buffer's whole
// capacity, bytes encode overwrites anyway (issue 19.2: 0.1 s of the 1M-edge case).
func reuse[T any](buf []T, n int) []T {
	if cap(buf) >= n {
		return buf[:0]
	}
	return make([]T, 0, n+n/4)
}

// order returns the indexes of the copied edges in the order of their store keys, and whether
// it could order them (else they come as copied). A store key is the workload key, a 0 byte,
// the direction, the peer key, a 0 byte, the protocol, the collapsed flag and the port
// (appendEdgeKey), and no key holds a 0 byte (validate), so key order is the order of
// (workload key, direction, peer key, protocol, collapsed, port). Ranking the batch's distinct
// workload and peer keys as strings, few next to its edges, makes each edge's key one integer,
// and sorting those integers costs a small part of sorting the keys' bytes (issue 19.2: 0.25 s
// of the 1M-edge case).
func (c *edgeCopy) order() ([]uint32, bool) {
	order := make([]uint32, len(c.recs))
	for i := range order {
		order[i] = uint32(i)
	}
	pb, wb := bits.Len(uint(len(c.peers))), bits.Len(uint(len(c.wls)))
	// Below the peer rank: protocol (8 bits), collapsed (1) and port (16); above it the
	// direction (2) and the workload rank.
	const low = 8 + 1 + 16
	if len(order) < 2 || wb+2+pb+low > 64 {
		return order, len(order) < 2
	}
	wlRank := ranks(len(c.wls), func(i, j int) int { return strings.Compare(c.wls[i].key, c.wls[j].key) })
	peerRank := ranks(len(c.peers), func(i, j int) int { return strings.Compare(c.peers[i].key, c.peers[j].key) })
	keyed := make([]keyedEdge, len(c.recs))
	for i := range c.recs {
		r := &c.recs[i]
		k := uint64(wlRank[r.wl])<<(2+pb+low) | uint64(r.dir)<<(pb+low) | uint64(peerRank[r.peer])<<low |
			uint64(r.proto)<<17
		if r.collapsed {
			k |= 1 << 16 // and port 0, as in the key
		} else {
			k |= uint64(r.port)
		}
		keyed[i] = keyedEdge{k, uint32(i)}
	}
	radixSortKeyed(keyed, wb+2+pb+low)
	for j := range keyed {
		order[j] = keyed[j].i
	}
	return order, true
}

// ranks returns the rank of each of n items in the order cmp sorts them.
func ranks(n int, cmp func(i, j int) int) []uint32 {
	byRank := make([]int, n)
	for i := range byRank {
		byRank[i] = i
	}
	slices.SortFunc(byRank, cmp)
	rank := make([]uint32, n)
	for r, i := range byRank {
		rank[i] = uint32(r)
	}
	return rank
}

type keyedEdge struct {
	key uint64
	i   uint32
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
