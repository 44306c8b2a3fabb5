package flows

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Cursor records how far a stream has been delivered, per node: the time of the newest event
// from each node and the IDs of the events delivered at exactly that time. Hubble Relay
// answers a request with `since` = T with every record at or after T, so on a reconnect the
// records at the boundary come again; the cursor is what tells them apart from new ones.
//
// A Cursor is not safe for concurrent use. The aggregate store persists it (MarshalBinary) in
// the same transaction as the aggregates it covers and hands it back at start.
type Cursor struct {
	nodes map[string]*nodePos
}

type nodePos struct {
	time time.Time
	// ids are the IDs of the events delivered at exactly time; usually one or a few.
	ids []uint64
}

// NewCursor returns an empty cursor: a stream read with it starts at the oldest record.
func NewCursor() *Cursor { return &Cursor{nodes: make(map[string]*nodePos)} }

// Len returns the number of nodes the cursor tracks.
func (c *Cursor) Len() int { return len(c.nodes) }

// Since returns the time to resume from: the oldest of the per-node positions, so that no
// node's undelivered records are skipped. It is the zero time for an empty cursor.
//
// A node that stops sending (removed from the cluster) holds Since back; the cost is that a
// resumed stream re-sends what Relay still buffers, which Seen drops.
func (c *Cursor) Since() time.Time {
	var min time.Time
	for _, p := range c.nodes {
		if min.IsZero() || p.time.Before(min) {
			min = p.time
		}
	}
	return min
}

// Position returns the newest delivered time for a node.
func (c *Cursor) Position(node string) (time.Time, bool) {
	p, ok := c.nodes[node]
	if !ok {
		return time.Time{}, false
	}
	return p.time, true
}

// Seen reports whether ev was delivered before: it is older than its node's position, or at
// that exact time with an ID already delivered.
func (c *Cursor) Seen(ev *Event) bool {
	p, ok := c.nodes[ev.Node]
	if !ok {
		return false
	}
	if ev.Time.Before(p.time) {
		return true
	}
	return ev.Time.Equal(p.time) && slices.Contains(p.ids, ev.ID)
}

// Advance records ev as delivered. Events older than their node's position (Hubble's per-node
// order is not strict across CPUs) leave the cursor where it is.
func (c *Cursor) Advance(ev *Event) {
	if c.nodes == nil {
		c.nodes = make(map[string]*nodePos)
	}
	p, ok := c.nodes[ev.Node]
	switch {
	case !ok:
		c.nodes[ev.Node] = &nodePos{time: ev.Time, ids: []uint64{ev.ID}}
	case ev.Time.After(p.time):
		p.time = ev.Time
		p.ids = append(p.ids[:0], ev.ID)
	case ev.Time.Equal(p.time) && !slices.Contains(p.ids, ev.ID):
		p.ids = append(p.ids, ev.ID)
	}
}

// Merge advances c to o's position on every node where o is ahead: the later time, or at the
// same time the union of the IDs delivered. Merging the cursors of replicas that read a node
// one after the other gives where the node's next reader starts.
func (c *Cursor) Merge(o *Cursor) {
	if c.nodes == nil {
		c.nodes = make(map[string]*nodePos)
	}
	for n, q := range o.nodes {
		p, ok := c.nodes[n]
		switch {
		case !ok || q.time.After(p.time):
			c.nodes[n] = &nodePos{time: q.time, ids: slices.Clone(q.ids)}
		case q.time.Equal(p.time):
			for _, id := range q.ids {
				if !slices.Contains(p.ids, id) {
					p.ids = append(p.ids, id)
				}
			}
		}
	}
}

// Node returns a cursor holding only node's position (empty when c has none).
func (c *Cursor) Node(node string) *Cursor {
	out := NewCursor()
	if p, ok := c.nodes[node]; ok {
		out.nodes[node] = &nodePos{time: p.time, ids: slices.Clone(p.ids)}
	}
	return out
}

// Clone returns an independent copy.
func (c *Cursor) Clone() *Cursor {
	out := NewCursor()
	for n, p := range c.nodes {
		out.nodes[n] = &nodePos{time: p.time, ids: slices.Clone(p.ids)}
	}
	return out
}

// Equal reports whether both cursors hold the same positions.
func (c *Cursor) Equal(o *Cursor) bool {
	if len(c.nodes) != len(o.nodes) {
		return false
	}
	for n, p := range c.nodes {
		q, ok := o.nodes[n]
		if !ok || !p.time.Equal(q.time) || !slices.Equal(sortedIDs(p.ids), sortedIDs(q.ids)) {
			return false
		}
	}
	return true
}

func sortedIDs(ids []uint64) []uint64 {
	s := slices.Clone(ids)
	slices.Sort(s)
	return s
}

// cursorVersion is the first byte of the binary form; bump it when the layout changes.
const cursorVersion = 1

// ErrCursorFormat is returned by UnmarshalBinary for data that is not a cursor of a known version.
var ErrCursorFormat = errors.New("invalid cursor encoding")

// MarshalBinary encodes the cursor deterministically (nodes sorted by name):
//
//	version(1) nodes(uvarint) { nameLen(uvarint) name unixNano(varint) ids(uvarint) id(8 BE)... }
func (c *Cursor) MarshalBinary() ([]byte, error) {
	buf := []byte{cursorVersion}
	buf = binary.AppendUvarint(buf, uint64(len(c.nodes)))
	for _, n := range slices.Sorted(maps.Keys(c.nodes)) {
		p := c.nodes[n]
		buf = binary.AppendUvarint(buf, uint64(len(n)))
		buf = append(buf, n...)
		buf = binary.AppendVarint(buf, p.time.UnixNano())
		buf = binary.AppendUvarint(buf, uint64(len(p.ids)))
		for _, id := range sortedIDs(p.ids) {
			buf = binary.BigEndian.AppendUint64(buf, id)
		}
	}
	return buf, nil
}

// UnmarshalBinary replaces the cursor with the encoded one.
func (c *Cursor) UnmarshalBinary(data []byte) error {
	if len(data) == 0 || data[0] != cursorVersion {
		return fmt.Errorf("%w: unknown version", ErrCursorFormat)
	}
	r := data[1:]
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(r)
		if n <= 0 {
			return 0, false
		}
		r = r[n:]
		return v, true
	}
	count, ok := uv()
	if !ok || count > uint64(len(r)) {
		return fmt.Errorf("%w: node count", ErrCursorFormat)
	}
	nodes := make(map[string]*nodePos, count)
	for range count {
		l, ok := uv()
		if !ok || l > uint64(len(r)) {
			return fmt.Errorf("%w: node name", ErrCursorFormat)
		}
		name := string(r[:l])
		r = r[l:]
		ns, n := binary.Varint(r)
		if n <= 0 {
			return fmt.Errorf("%w: node %q time", ErrCursorFormat, name)
		}
		r = r[n:]
		k, ok := uv()
		if !ok || k > uint64(len(r))/8 {
			return fmt.Errorf("%w: node %q ids", ErrCursorFormat, name)
		}
		p := &nodePos{time: time.Unix(0, ns).UTC(), ids: make([]uint64, k)}
		for i := range p.ids {
			p.ids[i] = binary.BigEndian.Uint64(r)
			r = r[8:]
		}
		nodes[name] = p
	}
	if len(r) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCursorFormat, len(r))
	}
	c.nodes = nodes
	return nil
}
