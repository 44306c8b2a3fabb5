package flows

import (
	"context"
	"time"
)

// FoldWindow is how long after one observation of a connection a matching observation from
// the other end is taken as the same connection. Both ends report within milliseconds of each
// other; the window only has to cover clock skew between nodes.
const FoldWindow = 2 * time.Second

// Folder wraps a Source so that a connection observed at both ends (egress on the client's
// node, ingress on the server's; or trace and policy-verdict events of the same packet) is
// delivered once. Records are matched on protocol, addresses, ports, TCP phase and verdict
// within FoldWindow of flow time, so a forwarded egress and a dropped ingress of the same
// connection both stay visible.
type Folder struct {
	src   Source
	stats *Stats
	// seen maps a connection key to the flow time it was last delivered at; entries older than
	// FoldWindow are swept as time advances, so memory follows the connection rate, not history.
	seen map[foldKey]time.Time
	// l4 maps a connection (protocol, addresses, ports) to the flow time an L3/L4 record of it
	// was last delivered at; an L7 request without such a record stands for its connection
	// (Event.Connection). Swept with seen.
	l4        map[connKey]time.Time
	lastSweep time.Time
}

type connKey struct {
	proto            Protocol
	srcIP, dstIP     string
	srcPort, dstPort uint16
}

type foldKey struct {
	proto            Protocol
	srcIP, dstIP     string
	srcPort, dstPort uint16
	verdict          Verdict
	typ              EventType // L7 records fold only with L7 records
	l7               string
}

// NewFolder returns a Folder reading from src; skipped duplicates are counted in stats (may be nil).
func NewFolder(src Source, stats *Stats) *Folder {
	return &Folder{src: src, stats: stats, seen: make(map[foldKey]time.Time), l4: make(map[connKey]time.Time)}
}

// Recv returns the next event that is not a second observation of an event already delivered.
func (f *Folder) Recv(ctx context.Context) (*Event, error) {
	for {
		ev, err := f.src.Recv(ctx)
		if err != nil {
			return nil, err
		}
		replayed := f.replayed()
		if ev.Kind != KindFlow && !replayed {
			return ev, nil
		}
		if ev.Kind == KindFlow {
			f.markConnection(ev)
		}
		// A replayed record is learned (duplicate records it) but never delivered.
		if dup := ev.Kind == KindFlow && f.duplicate(ev); dup || replayed {
			if f.stats != nil {
				reason := SkipDuplicate
				if replayed {
					reason = SkipResumed
				}
				f.stats.Skip(reason)
			}
			continue
		}
		return ev, nil
	}
}

// markConnection sets Event.Connection on an L7 request when no L3/L4 record of its
// connection was delivered within FoldWindow before it. Captures of L7 events alone
// (`hubble observe --type l7`, or a cluster where the proxy logs and traces are aggregated
// away) hold no other proof of the connection; without the mark they would yield no edge.
// Responses never stand for a connection: the request of the exchange does.
func (f *Folder) markConnection(ev *Event) {
	k := connKey{proto: ev.Proto, srcIP: ev.SrcAddr, dstIP: ev.DstAddr, srcPort: ev.SrcPort, dstPort: ev.Port}
	if ev.Type != EventL7 {
		f.l4[k] = ev.Time
		return
	}
	if ev.L7 == nil || ev.Proto == ProtoUnknown || (ev.L7.DNS != nil && ev.L7.DNS.Response) || (ev.L7.HTTP != nil && ev.L7.HTTP.Code != 0) {
		return
	}
	if t, ok := f.l4[k]; ok && absDuration(ev.Time.Sub(t)) <= FoldWindow {
		return
	}
	ev.Connection = true
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func (f *Folder) duplicate(ev *Event) bool {
	k := foldKey{proto: ev.Proto, srcIP: ev.SrcAddr, dstIP: ev.DstAddr, srcPort: ev.SrcPort, dstPort: ev.Port, verdict: ev.Verdict}
	if ev.Type == EventL7 {
		k.typ = EventL7
		if ev.L7 != nil && ev.L7.DNS != nil {
			k.l7 = ev.L7.DNS.Query
			if ev.L7.DNS.Response {
				k.l7 += "\x00r"
			}
		} else if ev.L7 != nil && ev.L7.HTTP != nil {
			k.l7 = ev.L7.HTTP.Method + " " + ev.L7.HTTP.Path
		}
	}
	if ev.Time.Sub(f.lastSweep) > FoldWindow {
		for key, t := range f.seen {
			if ev.Time.Sub(t) > FoldWindow {
				delete(f.seen, key)
			}
		}
		for key, t := range f.l4 {
			if ev.Time.Sub(t) > FoldWindow {
				delete(f.l4, key)
			}
		}
		f.lastSweep = ev.Time
	}
	if t, ok := f.seen[k]; ok {
		d := ev.Time.Sub(t)
		if d < 0 {
			d = -d
		}
		if d <= FoldWindow {
			// Refresh: a busy connection stays one observation until it is idle for the window.
			if ev.Time.After(t) {
				f.seen[k] = ev.Time
			}
			return true
		}
	}
	f.seen[k] = ev.Time
	return false
}

// replayed asks a resumed FileSource whether its last record was accounted for before.
func (f *Folder) replayed() bool {
	r, ok := f.src.(interface{ Replayed() bool })
	return ok && r.Replayed()
}

// Position forwards the wrapped source's position (Positioner). The Folder reads no further
// than the event it returns, so the position is just past that event's record.
func (f *Folder) Position() (FilePos, bool) {
	if p, ok := f.src.(Positioner); ok {
		return p.Position()
	}
	return FilePos{}, false
}

// ResumeFrom forwards resume marks to a wrapped FileSource; other sources ignore them.
func (f *Folder) ResumeFrom(marks []FileMark) {
	if r, ok := f.src.(interface{ ResumeFrom([]FileMark) }); ok {
		r.ResumeFrom(marks)
	}
}
