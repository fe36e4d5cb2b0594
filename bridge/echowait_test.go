package bridge

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/config"
)

// TestRelationWaitsForTheHubEcho: as participant, a DAG event we sent is known by its LPDU ID until the hub echoes it.
// A reply looked up in that moment gets the LM event ID once the echo is recorded, not an empty target; an LPDU older
// than echoWait (refused, never echoed) is not waited for.
//
// It runs in a synctest bubble: the echo's delay, the polling and echoWait are on the bubble's clock, so the test
// neither sleeps nor depends on the machine's speed.
func TestRelationWaitsForTheHubEcho(t *testing.T) {
	synctest.Test(t, testRelationWaitsForTheHubEcho)
}

func testRelationWaitsForTheHubEcho(t *testing.T) {
	tb := newTestBridge(t, nil, config.Bridge{})
	ctx := context.Background()
	db := tb.DB()
	if err := db.InsertLPDU(ctx, dagRoom, "$pending", "!lm:lm.example", "$lpdu1", string(alice), time.Now()); err != nil {
		t.Fatal(err)
	}
	const echoAfter = 100 * time.Millisecond
	go func() {
		time.Sleep(echoAfter)
		if _, err := db.ConfirmLPDU(ctx, dagRoom, "!lm:lm.example", "$lpdu1", "$echoed", time.Now()); err != nil {
			t.Error(err)
		}
	}()
	start := time.Now()
	got, err := tb.LMEventOf(ctx, "$pending")
	if err != nil {
		t.Fatal(err)
	}
	if got != "$echoed" {
		t.Fatalf("target %q, want the echoed event ID", got)
	}
	if waited := time.Since(start); waited < echoAfter-10*time.Millisecond || waited > echoAfter+time.Second {
		t.Fatalf("waited %s for an echo that came after %s", waited, echoAfter)
	}

	if err = db.InsertLPDU(ctx, dagRoom, "$refused", "!lm:lm.example", "$lpdu2", string(alice), time.Now().Add(-echoWait)); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if got, err = tb.LMEventOf(ctx, id.EventID("$refused")); err != nil || got != "" {
		t.Fatalf("an LPDU older than echoWait gave %q, %v; want \"\" at once", got, err)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Fatalf("waited %s for an LPDU older than echoWait", waited)
	}
	if got, err = tb.LMEventOf(ctx, "$unknown"); err != nil || got != "" {
		t.Fatalf("an event that never crossed gave %q, %v", got, err)
	}
}

// TestRelationToARefusedLPDUStopsWaiting has the hub refuse the LPDU a relation points at while the relation waits for
// its echo: the wait ends with the refusal, not after echoWait.
func TestRelationToARefusedLPDUStopsWaiting(t *testing.T) {
	synctest.Test(t, testRelationToARefusedLPDUStopsWaiting)
}

func testRelationToARefusedLPDUStopsWaiting(t *testing.T) {
	tb := newTestBridge(t, nil, config.Bridge{})
	ctx := context.Background()
	if err := tb.DB().InsertLPDU(ctx, dagRoom, "$doomed", "!lm:lm.example", "$lpdu3", string(alice), time.Now()); err != nil {
		t.Fatal(err)
	}
	const refusedAfter = 100 * time.Millisecond
	go func() {
		time.Sleep(refusedAfter)
		tb.OnLPDUFailed(ctx, "!lm:lm.example", "$lpdu3", "auth rule 10.b rejected the event")
	}()
	start := time.Now()
	got, err := tb.LMEventOf(ctx, "$doomed")
	if err != nil || got != "" {
		t.Fatalf("a relation to a refused LPDU gave %q, %v; want \"\"", got, err)
	}
	if waited := time.Since(start); waited < refusedAfter-10*time.Millisecond || waited > refusedAfter+time.Second {
		t.Fatalf("waited %s for an LPDU refused after %s", waited, refusedAfter)
	}
}
