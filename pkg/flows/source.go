package flows

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
)

// Source delivers normalized events. Recv blocks until an event is available; it returns
// io.EOF when a finite source (a recording, or a relay read without follow) is exhausted,
// and ctx.Err() once ctx is done. Relay and file sources implement it, as do wrappers.
type Source interface {
	Recv(ctx context.Context) (*Event, error)
}

// maxMalformedPlaces bounds the malformed-record locations Stats keeps for the summary.
const maxMalformedPlaces = 3

// Stats counts what a source read. Fields are updated atomically and may be read while the
// source runs.
type Stats struct {
	Events    atomic.Uint64 // events delivered
	Skipped   atomic.Uint64 // records read but not delivered; the sum of the per-reason counts
	Malformed atomic.Uint64 // records that could not be decoded
	Lost      atomic.Uint64 // events Hubble reported lost (sum of lost-events notices)

	// byReason counts Skipped per reason, indexed like SkipReasons.
	byReason [len(skipReasons)]atomic.Uint64

	// mu guards malformedAt, the first malformed records' places ("file:line: error").
	mu          sync.Mutex
	malformedAt []string

	// parent, when set, counts everything this Stats counts as well: the per-node stats of a
	// NodesSource roll up into the source's own. Set before the first count.
	parent *Stats
}

// Skip counts one record that produced no event, for reason r.
func (s *Stats) Skip(r SkipReason) {
	s.Skipped.Add(1)
	if i := r.index(); i >= 0 {
		s.byReason[i].Add(1)
	}
	if s.parent != nil {
		s.parent.Skip(r)
	}
}

// event counts one delivered event.
func (s *Stats) event() {
	s.Events.Add(1)
	if s.parent != nil {
		s.parent.event()
	}
}

// lost counts n events Hubble reported lost.
func (s *Stats) lost(n uint64) {
	s.Lost.Add(n)
	if s.parent != nil {
		s.parent.lost(n)
	}
}

// SkippedBy returns how many records were skipped for reason r.
func (s *Stats) SkippedBy(r SkipReason) uint64 {
	if i := r.index(); i >= 0 {
		return s.byReason[i].Load()
	}
	return 0
}

// malformed counts one record that could not be decoded, keeping the first places.
func (s *Stats) malformed(place string) {
	s.Malformed.Add(1)
	s.mu.Lock()
	if len(s.malformedAt) < maxMalformedPlaces {
		s.malformedAt = append(s.malformedAt, place)
	}
	s.mu.Unlock()
	if s.parent != nil {
		s.parent.malformed(place)
	}
}

// Summary is a plain copy of Stats for printing.
type Summary struct {
	Events    uint64 `json:"events"`
	Skipped   uint64 `json:"skipped"`
	Malformed uint64 `json:"malformed"`
	Lost      uint64 `json:"lost"`
	// SkippedBy holds the non-zero per-reason counts of Skipped.
	SkippedBy map[SkipReason]uint64 `json:"skipped_by_reason,omitempty"`
	// MalformedAt names the first malformed records ("file:line: error").
	MalformedAt []string `json:"malformed_at,omitempty"`
}

// Snapshot returns the current counts.
func (s *Stats) Snapshot() Summary {
	sum := Summary{Events: s.Events.Load(), Skipped: s.Skipped.Load(), Malformed: s.Malformed.Load(), Lost: s.Lost.Load()}
	for i, r := range skipReasons {
		if n := s.byReason[i].Load(); n > 0 {
			if sum.SkippedBy == nil {
				sum.SkippedBy = make(map[SkipReason]uint64)
			}
			sum.SkippedBy[r] = n
		}
	}
	s.mu.Lock()
	sum.MalformedAt = append([]string(nil), s.malformedAt...)
	s.mu.Unlock()
	return sum
}

// SkipText renders the per-reason skip counts in SkipReasons order ("reply 5, duplicate 7"),
// or "none".
func (s Summary) SkipText() string {
	var parts []string
	for _, r := range skipReasons {
		if n := s.SkippedBy[r]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", r, n))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// String is the one-line summary the commands print: counts, skip reasons and the first
// malformed places.
func (s Summary) String() string {
	out := fmt.Sprintf("events %d, skipped %d (%s), malformed %d, lost %d", s.Events, s.Skipped, s.SkipText(), s.Malformed, s.Lost)
	if len(s.MalformedAt) > 0 {
		out += "; first malformed: " + strings.Join(s.MalformedAt, "; ")
	}
	return out
}
