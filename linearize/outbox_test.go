package linearize

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/internal/testpg"
	"github.com/lmbridge/lmbridge/linearize/outbox"
)

// TestFanOutOneAtATimeCommitsOncePerEvent sends events one at a time from a hub to one participant, as a quiet room
// does. The append's commit marks the event as the participant's next transaction (so the outbox sends it without a
// commit first) and writes the end of the previous one (deferred, since nothing was queued behind it), so the hub
// commits once per event instead of three times. Every event still arrives once, in order; the last deferred end is
// written by the worker soon after, and a stop leaves nothing to send again.
func TestFanOutOneAtATimeCommitsOncePerEvent(t *testing.T) {
	ctx := testContext(t)
	hub := newHTTPNode(t, nil)
	part := newHTTPNode(t, nil)
	roomID, alice, _ := joinedPair(t, hub, part)
	// Let the set-up's listener cursors and deferred ends be written first.
	time.Sleep(cursorSaveInterval + outbox.AckFlushDelay + 100*time.Millisecond)
	waitOutboxIdle(t, hub)
	commits := hub.eng.store.Commits()
	const sends = 30
	for i := 0; i < sends; i++ {
		id := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("one at a time"), time.Time{}))
		waitHead(t, part, roomID, id)
		// The participant appends before its answer reaches the hub; the next event comes after that answer.
		waitDeferredEnd(t, hub)
	}
	if n := hub.eng.store.Commits() - commits; n > sends+5 {
		t.Fatalf("the hub committed %d times for %d events sent one at a time, want at most %d", n, sends, sends+5)
	}
	if hubLog, partLog := logIDs(t, hub, roomID), logIDs(t, part, roomID); !slices.Equal(hubLog[len(hubLog)-sends:], partLog[len(partLog)-sends:]) {
		t.Fatal("the participant's log does not end with the hub's last events")
	}
	waitOutboxIdle(t, hub)

	// A stop with an end still deferred writes it on the way out.
	id := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("just before the stop"), time.Time{}))
	waitHead(t, part, roomID, id)
	waitDeferredEnd(t, hub)
	httpNet{}.stop(t, hub)
	db := openTestDB(t, hub.dbPath)
	var rows, inFlight int64
	if err := db.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM lm_outbox), (SELECT COALESCE(SUM(txn_last_seq), 0) FROM lm_destination)`).Scan(&rows, &inFlight); err != nil {
		t.Fatal(err)
	}
	if rows != 0 || inFlight != 0 {
		t.Fatalf("after the stop the outbox holds %d rows and a transaction up to %d in flight, want none", rows, inFlight)
	}
}

// waitOutboxIdle waits until nd has nothing queued and no transaction in flight, so that the next event finds its
// destinations idle.
func waitOutboxIdle(t *testing.T, nd *node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var rows, inFlight int64
		err := nd.db.QueryRow(context.Background(), `SELECT (SELECT COUNT(*) FROM lm_outbox),
			(SELECT COALESCE(SUM(txn_last_seq), 0) FROM lm_destination)`).Scan(&rows, &inFlight)
		if err != nil {
			t.Fatal(err)
		}
		if rows == 0 && inFlight == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d rows, %d in flight", rows, inFlight)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitDeferredEnd waits until nd's outbox holds a deferred end: its last transaction succeeded.
func waitDeferredEnd(t *testing.T, nd *node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if nd.eng.outbox.DeferredEnds() > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the outbox never deferred the end of a transaction")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// TestDeferredEndLostInACrashResendsTheSameTransaction drops a deferred end as a crash would (the process gone before
// any commit wrote it): after the restart the hub sends the transaction again under the same txnId, the participant
// answers it from its record, and nothing arrives twice.
func TestDeferredEndLostInACrashResendsTheSameTransaction(t *testing.T) {
	ctx := testContext(t)
	hub := newHTTPNode(t, nil)
	part := newHTTPNode(t, nil)
	roomID, alice, _ := joinedPair(t, hub, part)
	waitOutboxIdle(t, hub)
	id := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("before the crash"), time.Time{}))
	waitHead(t, part, roomID, id)
	waitDeferredEnd(t, hub)
	// The crash: the deferred end is forgotten before anything writes it.
	hub.eng.outbox.ForgetDeferredEnds()
	httpNet{}.stop(t, hub)
	httpNet{}.start(t, hub)
	waitOutboxIdle(t, hub)
	after := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("after the restart"), time.Time{}))
	waitHead(t, part, roomID, after)
	hubLog, partLog := logIDs(t, hub, roomID), logIDs(t, part, roomID)
	if !slices.Equal(hubLog[len(hubLog)-len(partLog):], partLog) {
		t.Fatalf("participant log %v is not the end of the hub's %v", partLog, hubLog)
	}
	seen := make(map[string]bool)
	for _, e := range partLog {
		if seen[e] {
			t.Fatalf("event %s is in the participant's log twice", e)
		}
		seen[e] = true
	}
}

// TestPruneForgetsOldAnswers fills lm_received_txn with old and recent rows, more old ones than a batch: pruning
// removes exactly the old ones.
func TestPruneForgetsOldAnswers(t *testing.T) {
	nd := newHTTPNode(t, nil)
	testPrune(t, nd.eng, nd.db)
}

// TestPruneOnPostgres runs the same on PostgreSQL, whose DELETE has no LIMIT: the queries must work on both.
func TestPruneOnPostgres(t *testing.T) {
	ctx := testContext(t)
	db, err := database.Open(ctx, config.Database{Type: "postgres", URI: testpg.NewDatabaseT(t), MaxOpenConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	eng, err := New(ctx, config.LM{ServerName: "pg.example", SigningKeyPath: filepath.Join(t.TempDir(), "key")}, db.Database, Options{})
	if err != nil {
		t.Fatal(err)
	}
	testPrune(t, eng, db.Database)
}

func testPrune(t *testing.T, eng *Engine, db *dbutil.Database) {
	ctx := testContext(t)
	now := time.Now()
	old, recent := now.Add(-pruneRetention-time.Hour).UnixMilli(), now.Add(-time.Minute).UnixMilli()
	oldRows := pruneBatch + 7
	for i := 0; i < oldRows; i++ {
		if err := eng.store.PutReceivedTxn(ctx, "old.example", "t"+strconv.Itoa(i), json.RawMessage("{}"), old); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 5; i++ {
		if err := eng.store.PutReceivedTxn(ctx, "new.example", "t"+strconv.Itoa(i), json.RawMessage("{}"), recent); err != nil {
			t.Fatal(err)
		}
	}
	if err := eng.prune(ctx, now.Add(-pruneRetention)); err != nil {
		t.Fatal(err)
	}
	count := func(query string) (n int) {
		if err := db.QueryRow(ctx, query).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(`SELECT COUNT(*) FROM lm_received_txn WHERE origin='old.example'`); n != 0 {
		t.Errorf("%d old transaction answers left", n)
	}
	if n := count(`SELECT COUNT(*) FROM lm_received_txn WHERE origin='new.example'`); n != 5 {
		t.Errorf("%d recent transaction answers left, want 5", n)
	}
}

// TestParticipantSendsLPDUsInSmallTransactions queues more LPDUs than one transaction takes while the hub is down:
// once it is back they reach it in transactions of at most outbox.MaxLPDUsPerTxn, every one once and in order.
func TestParticipantSendsLPDUsInSmallTransactions(t *testing.T) {
	ctx := testContext(t)
	var lock sync.Mutex
	// perTxn counts the LPDUs the hub appended per received transaction (each has its own arrival time).
	perTxn := make(map[time.Time]int)
	hub := newHTTPNode(t, func(_ string, arrived time.Time) {
		lock.Lock()
		perTxn[arrived]++
		lock.Unlock()
	})
	part := newHTTPNode(t, nil)
	roomID, _, bob := joinedPair(t, hub, part)
	waitOutboxIdle(t, part)
	lock.Lock()
	clear(perTxn)
	lock.Unlock()
	httpNet{}.stop(t, hub)
	const n = 2*outbox.MaxLPDUsPerTxn + 5
	var sent []string
	for i := range n {
		sent = append(sent, must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text(strconv.Itoa(i)), time.Time{})))
	}
	httpNet{}.start(t, hub)
	part.rec.waitFor(t, "every LPDU's echo", func() bool {
		evs := part.rec.roomEvents(roomID)
		return len(evs) > 0 && evs[len(evs)-1].LPDUID == sent[n-1]
	})
	ours := make(map[string]bool)
	for _, id := range sent {
		ours[id] = true
	}
	var echoed []string
	for _, ev := range part.rec.roomEvents(roomID) {
		if ours[ev.LPDUID] {
			echoed = append(echoed, ev.LPDUID)
		}
	}
	if !slices.Equal(echoed, sent) {
		t.Fatalf("the hub appended LPDUs %v, want %v once each in order", echoed, sent)
	}
	lock.Lock()
	defer lock.Unlock()
	largest, total := 0, 0
	for _, c := range perTxn {
		largest = max(largest, c)
		total += c
	}
	if total != n || largest != outbox.MaxLPDUsPerTxn {
		t.Fatalf("the hub appended %d LPDUs, at most %d per transaction; want %d, at most %d", total, largest, n, outbox.MaxLPDUsPerTxn)
	}
}
