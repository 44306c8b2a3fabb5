package aggregate

import (
	"context"
	"errors"
	"testing"

	"github.com/recommender/recommender/pkg/flows"
)

// TestEventQueueOrder: every event put comes out of take once, in order, with the close after
// the last, whatever the interleaving of a concurrent receiver and loop (run with -race).
func TestEventQueueOrder(t *testing.T) {
	const n = 100_000
	q := newEventQueue(64)
	events := make([]flows.Event, n)
	go func() {
		for i := range events {
			if err := q.put(t.Context(), received{ev: &events[i], pos: flows.FilePos{Offset: int64(i)}}); err != nil {
				t.Error(err)
				return
			}
		}
		q.close()
	}()
	next, takes := 0, 0
	var taken []received
	for last := false; !last; {
		<-q.ready // a put or the close left a token: the loop never waits past a queued event
		taken, last = q.take(taken)
		takes++
		for _, r := range taken {
			if r.ev != &events[next] || r.pos.Offset != int64(next) {
				t.Fatalf("event %d came out as the %dth", r.pos.Offset, next)
			}
			next++
		}
	}
	if next != n {
		t.Fatalf("took %d events, put %d", next, n)
	}
	if takes > n+1 {
		t.Errorf("%d takes for %d events", takes, n)
	}
}

// TestEventQueueFull: put waits while the queue holds its limit, goes on once the loop took
// the events, and gives up when its context is done.
func TestEventQueueFull(t *testing.T) {
	q := newEventQueue(2)
	ctx := t.Context()
	for range 2 {
		if err := q.put(ctx, received{ev: &flows.Event{}}); err != nil {
			t.Fatal(err)
		}
	}
	put := make(chan error)
	go func() { put <- q.put(ctx, received{ev: &flows.Event{}}) }()
	// Whether or not the third put ran yet, it must not have added to the full queue.
	if got, _ := q.take(nil); len(got) != 2 {
		t.Fatalf("took %d events, want 2", len(got))
	}
	if err := <-put; err != nil {
		t.Fatalf("put after a take: %v", err)
	}
	if got, closed := q.take(nil); len(got) != 1 || closed {
		t.Fatalf("took %d events (closed %v), want 1, open", len(got), closed)
	}

	cctx, cancel := context.WithCancel(ctx)
	for range 2 {
		if err := q.put(cctx, received{ev: &flows.Event{}}); err != nil {
			t.Fatal(err)
		}
	}
	go func() { put <- q.put(cctx, received{ev: &flows.Event{}}) }()
	cancel()
	if err := <-put; !errors.Is(err, context.Canceled) {
		t.Fatalf("put on a full queue after cancel = %v, want context.Canceled", err)
	}
}
