package aggregate

import (
	"context"
	"sync"
)

// eventQueue hands the events the receiving goroutine reads to Run's loop. A channel of
// single events cost a channel operation on each side of every event, and woke the loop for
// each one (issue 19.2: a quarter of the CPU of an ingest over 1k edges). Here the receiver
// appends under a mutex and wakes the loop only when the queue turns non-empty; the loop
// takes everything queued at once. No event waits for a later one: each is visible to the
// loop as soon as it is put.
type eventQueue struct {
	mu     sync.Mutex
	items  []received
	closed bool // the receiver put its last event
	// ready holds a token while the loop may have events (or the close) to take: put sends
	// one on each empty-to-non-empty turn, so the loop never sleeps past a queued event; a
	// token may be stale, and take then returns nothing.
	ready chan struct{}
	// space holds a token once the loop took events, for a receiver waiting on a full queue.
	space chan struct{}
	limit int
}

func newEventQueue(limit int) *eventQueue {
	return &eventQueue{ready: make(chan struct{}, 1), space: make(chan struct{}, 1), limit: limit}
}

// signal leaves a token on c unless one is there already.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// put queues r, waiting while the queue holds limit events; it fails only once ctx is done.
func (q *eventQueue) put(ctx context.Context, r received) error {
	for {
		q.mu.Lock()
		if len(q.items) < q.limit {
			q.items = append(q.items, r)
			first := len(q.items) == 1
			q.mu.Unlock()
			if first {
				signal(q.ready)
			}
			return nil
		}
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close tells the loop that no event follows those queued.
func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	signal(q.ready)
}

// take returns the queued events, oldest first, and whether the receiver is done and these
// are the last. spare, the slice take returned before, is reused for the events that follow:
// the loop is done with it, and cleared it so that it keeps no applied event alive.
func (q *eventQueue) take(spare []received) ([]received, bool) {
	q.mu.Lock()
	items, closed := q.items, q.closed
	q.items = spare[:0]
	q.mu.Unlock()
	signal(q.space)
	return items, closed
}
