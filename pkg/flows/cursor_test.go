package flows_test

import (
	"errors"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

func ev(node string, ms int, id uint64) *flows.Event {
	return &flows.Event{Kind: flows.KindFlow, Node: node, Time: t0.Add(time.Duration(ms) * time.Millisecond), ID: id}
}

// Ensure that Seen tells boundary records already delivered from new ones, per node.
func TestCursorSeen(t *testing.T) {
	c := flows.NewCursor()
	for _, e := range []*flows.Event{ev("a", 10, 1), ev("a", 20, 2), ev("a", 20, 3), ev("b", 15, 4), ev("a", 5, 9)} {
		c.Advance(e)
	}
	tests := []struct {
		ev   *flows.Event
		want bool
	}{
		{ev("a", 10, 1), true},  // older than a's position
		{ev("a", 20, 2), true},  // at the position, delivered
		{ev("a", 20, 3), true},  // at the position, delivered
		{ev("a", 20, 7), false}, // at the position, new
		{ev("a", 21, 2), false}, // newer
		{ev("b", 15, 4), true},  // b's own position
		{ev("b", 16, 1), false}, // newer on b
		{ev("c", 1, 1), false},  // unknown node
		{ev("a", 5, 9), true},   // out of order on a: older than the position
	}
	for _, tt := range tests {
		if got := c.Seen(tt.ev); got != tt.want {
			t.Errorf("Seen(%s %v #%d) = %v, want %v", tt.ev.Node, tt.ev.Time, tt.ev.ID, got, tt.want)
		}
	}
	if got, want := c.Since(), t0.Add(15*time.Millisecond); !got.Equal(want) {
		t.Errorf("Since() = %v, want %v (oldest node position)", got, want)
	}
	if got, ok := c.Position("a"); !ok || !got.Equal(t0.Add(20*time.Millisecond)) {
		t.Errorf("Position(a) = %v, %v; want %v", got, ok, t0.Add(20*time.Millisecond))
	}
}

// Ensure that the binary form round-trips, is deterministic, and rejects damaged input.
func TestCursorBinary(t *testing.T) {
	c := flows.NewCursor()
	for _, e := range []*flows.Event{ev("a", 10, 1), ev("a", 10, 2), ev("b", 15, 4), ev("", 3, 5)} {
		c.Advance(e)
	}
	data, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := c.Clone().MarshalBinary()
	if string(again) != string(data) {
		t.Error("MarshalBinary is not deterministic")
	}
	got := flows.NewCursor()
	if err := got.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	if !got.Equal(c) {
		t.Errorf("round trip changed the cursor")
	}
	empty, _ := flows.NewCursor().MarshalBinary()
	if err := got.UnmarshalBinary(empty); err != nil || got.Len() != 0 || !got.Since().IsZero() {
		t.Errorf("empty cursor round trip: %v, len %d, since %v", err, got.Len(), got.Since())
	}
	for _, bad := range [][]byte{nil, {9}, data[:len(data)-1], append(append([]byte{}, data...), 0)} {
		if err := flows.NewCursor().UnmarshalBinary(bad); !errors.Is(err, flows.ErrCursorFormat) {
			t.Errorf("UnmarshalBinary(%x) = %v, want ErrCursorFormat", bad, err)
		}
	}
}

// Ensure that Merge takes the later position per node and unions the IDs at equal times.
func TestCursorMerge(t *testing.T) {
	ev := func(node string, sec int, id uint64) *flows.Event {
		return &flows.Event{Node: node, Time: time.Unix(int64(sec), 0).UTC(), ID: id}
	}
	a, b := flows.NewCursor(), flows.NewCursor()
	a.Advance(ev("n1", 10, 1))
	a.Advance(ev("n2", 5, 2))
	b.Advance(ev("n1", 10, 3))
	b.Advance(ev("n2", 7, 4))
	b.Advance(ev("n3", 1, 5))
	a.Merge(b)
	for _, tc := range []struct {
		ev   *flows.Event
		seen bool
	}{
		{ev("n1", 10, 1), true}, {ev("n1", 10, 3), true}, {ev("n1", 10, 9), false},
		{ev("n2", 6, 0), true}, {ev("n2", 7, 4), true}, {ev("n2", 8, 0), false},
		{ev("n3", 1, 5), true}, {ev("n4", 0, 0), false},
	} {
		if got := a.Seen(tc.ev); got != tc.seen {
			t.Errorf("merged Seen(%s %s %d) = %v, want %v", tc.ev.Node, tc.ev.Time, tc.ev.ID, got, tc.seen)
		}
	}
	if got := a.Node("n2"); got.Len() != 1 || !got.Seen(ev("n2", 7, 4)) {
		t.Errorf("Node(n2) = %d nodes, want n2's position alone", got.Len())
	}
}
