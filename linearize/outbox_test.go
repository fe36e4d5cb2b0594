package linearize

import (
	"context"
	"testing"
	"time"
)

// waitReturns runs waitForBacklog and reports whether it returned within d.
func waitReturns(ctx context.Context, o *outbox, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		o.waitForBacklog(ctx)
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
	o := newOutbox(nil)
	ctx := context.Background()
	if !waitReturns(ctx, o, time.Second) {
		t.Fatal("waited with nothing queued")
	}
	o.queued("a.example", backlogLimit)
	if !waitReturns(ctx, o, time.Second) {
		t.Fatal("waited with a backlog at the limit")
	}
	o.queued("a.example", 10)
	done := make(chan struct{})
	go func() {
		o.waitForBacklog(ctx)
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
	o := newOutbox(nil)
	o.queued("down.example", 10*backlogLimit)
	o.failing["down.example"] = true
	if !waitReturns(context.Background(), o, time.Second) {
		t.Fatal("waited for a destination that is failing")
	}
	delete(o.failing, "down.example")
	if waitReturns(context.Background(), o, 100*time.Millisecond) {
		t.Fatal("did not wait for a healthy destination over the limit")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if !waitReturns(ctx, o, time.Second) {
		t.Fatal("kept waiting after the request ended")
	}
	// More sent than counted (rows from before a restart) leaves the count at zero, not below.
	o.sent("down.example", 100*backlogLimit)
	o.queued("down.example", backlogLimit)
	if !waitReturns(context.Background(), o, time.Second) {
		t.Fatal("a backlog sent past zero still holds answers")
	}
}
