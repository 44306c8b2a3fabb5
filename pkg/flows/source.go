package flows

import (
	"context"
	"sync/atomic"
)

// Source delivers normalized events. Recv blocks until an event is available; it returns
// io.EOF when a finite source (a recording, or a relay read without follow) is exhausted,
// and ctx.Err() once ctx is done. Relay and file sources implement it, as do wrappers.
type Source interface {
	Recv(ctx context.Context) (*Event, error)
}

// Stats counts what a source read. Fields are updated atomically and may be read while the
// source runs.
type Stats struct {
	Events    atomic.Uint64 // events delivered
	Skipped   atomic.Uint64 // records read but not delivered (replies, non-flows, folded duplicates)
	Malformed atomic.Uint64 // records that could not be decoded
	Lost      atomic.Uint64 // events Hubble reported lost (sum of lost-events notices)
}

// Summary is a plain copy of Stats for printing.
type Summary struct {
	Events    uint64 `json:"events"`
	Skipped   uint64 `json:"skipped"`
	Malformed uint64 `json:"malformed"`
	Lost      uint64 `json:"lost"`
}

// Snapshot returns the current counts.
func (s *Stats) Snapshot() Summary {
	return Summary{Events: s.Events.Load(), Skipped: s.Skipped.Load(), Malformed: s.Malformed.Load(), Lost: s.Lost.Load()}
}
