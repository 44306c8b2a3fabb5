package aggregate

import "math/bits"

// groupTable maps each group of edges to the first of its edges: an open-addressing hash table
// with linear probing over one flat array of 16-byte slots. Every flow looks up two groups,
// and over 1M edges the table is far larger than the caches: a lookup in Go's map missed the
// cache twice (its control word, then its slot) and was a fifth of the ingest's CPU (issue
// 19.2); here a lookup reads one slot and, rarely, its neighbours. Keys are the Aggregator's
// own dense indexes, not strings from the wire, so a fixed mixing function spreads them.
type groupTable struct {
	slots []groupSlot // len is a power of two; head 0 marks a free slot
	n     int
}

type groupSlot struct {
	key  groupID
	head edgeIdx
}

const minGroupSlots = 1 << 10

func newGroupTable() groupTable { return groupTable{slots: make([]groupSlot, minGroupSlots)} }

func (t *groupTable) len() int { return t.n }

// home is the slot where a search for k starts.
func (t *groupTable) home(k groupID) int {
	x := uint64(k.wl) | uint64(k.peer)<<32
	x ^= (uint64(k.dir) | uint64(k.proto)<<8) * 0x9e3779b97f4a7c15
	// A multiply-xorshift finalizer (MurmurHash3's fmix64): consecutive indexes land far apart.
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return int(x >> (64 - bits.TrailingZeros(uint(len(t.slots)))))
}

// get returns the first edge of group k, 0 when there is none.
func (t *groupTable) get(k groupID) edgeIdx {
	mask := len(t.slots) - 1
	for i := t.home(k); ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.head == 0 || s.key == k {
			return s.head
		}
	}
}

// set makes head (not 0) the first edge of group k.
func (t *groupTable) set(k groupID, head edgeIdx) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.resize(len(t.slots) * 2)
	}
	mask := len(t.slots) - 1
	for i := t.home(k); ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.head == 0 {
			*s = groupSlot{k, head}
			t.n++
			return
		}
		if s.key == k {
			s.head = head
			return
		}
	}
}

// delete removes group k. The slots after it that would no longer be found from their home
// slot move back into the gap (backward-shift deletion), so no tombstones accumulate.
func (t *groupTable) delete(k groupID) {
	mask := len(t.slots) - 1
	i := t.home(k)
	for ; t.slots[i].key != k || t.slots[i].head == 0; i = (i + 1) & mask {
		if t.slots[i].head == 0 {
			return
		}
	}
	t.n--
	for j := (i + 1) & mask; t.slots[j].head != 0; j = (j + 1) & mask {
		// The slot at j may fill the gap at i unless its home lies cyclically in (i, j].
		if h := t.home(t.slots[j].key); (j-h)&mask >= (j-i)&mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = groupSlot{}
	if len(t.slots) > minGroupSlots && t.n*8 < len(t.slots) {
		t.resize(len(t.slots) / 2)
	}
}

// reserve grows the table to hold n groups without growing again.
func (t *groupTable) reserve(n int) {
	size := len(t.slots)
	for n*4 > size*3 {
		size *= 2
	}
	if size > len(t.slots) {
		t.resize(size)
	}
}

func (t *groupTable) resize(n int) {
	old := t.slots
	t.slots = make([]groupSlot, n)
	t.n = 0
	for _, s := range old {
		if s.head != 0 {
			t.set(s.key, s.head)
		}
	}
}

// all calls f for every group, in no order; f must not change the table.
func (t *groupTable) all(f func(k groupID, head edgeIdx)) {
	for _, s := range t.slots {
		if s.head != 0 {
			f(s.key, s.head)
		}
	}
}
