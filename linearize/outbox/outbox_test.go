package outbox

import (
	"context"
	"testing"
	"time"
)

// waitReturns runs WaitForBacklog for dests and reports whether it returned within d.
func waitReturns(ctx context.Context, o *Outbox, d time.Duration, dests ...string) bool {
	set := make(map[string]int)
	for _, dest := range dests {
		set[dest] = 1
	}
	done := make(chan struct{})
	go func() {
		o.WaitForBacklog(ctx, set)
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func TestWaitForBacklogHoldsUntilDrained(t *testing.T) {
	o := New(Config{})
	ctx := context.Background()
	if !waitReturns(ctx, o, time.Second, "a.example") {
		t.Fatal("waited with nothing queued")
	}
	o.Queued("a.example", backlogLimit)
	if !waitReturns(ctx, o, time.Second, "a.example") {
		t.Fatal("waited with a backlog at the limit")
	}
	o.Queued("a.example", 10)
	if !waitReturns(ctx, o, time.Second, "b.example") {
		t.Fatal("a sender whose events went elsewhere waited for a.example's backlog")
	}
	done := make(chan struct{})
	go func() {
		o.WaitForBacklog(ctx, map[string]int{"a.example": 1, "b.example": 1})
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("answered while a destination was over the limit")
	case <-time.After(100 * time.Millisecond):
	}
	o.sent("a.example", 5)
	select {
	case <-done:
		t.Fatal("answered while a destination was still over the limit")
	case <-time.After(100 * time.Millisecond):
	}
	o.sent("a.example", 5)
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("still waiting once the backlog drained to the limit")
	}
}

func TestWaitForBacklogIgnoresFailingDestinations(t *testing.T) {
	o := New(Config{})
	o.Queued("down.example", 10*backlogLimit)
	o.failing["down.example"] = true
	if !waitReturns(context.Background(), o, time.Second, "down.example") {
		t.Fatal("waited for a destination that is failing")
	}
	delete(o.failing, "down.example")
	if waitReturns(context.Background(), o, 100*time.Millisecond, "down.example") {
		t.Fatal("did not wait for a healthy destination over the limit")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if !waitReturns(ctx, o, time.Second, "down.example") {
		t.Fatal("kept waiting after the request ended")
	}
	// More sent than counted (rows from before a restart) leaves the count at zero, not below.
	o.sent("down.example", 100*backlogLimit)
	o.Queued("down.example", backlogLimit)
	if !waitReturns(context.Background(), o, time.Second, "down.example") {
		t.Fatal("a backlog sent past zero still holds answers")
	}
}
