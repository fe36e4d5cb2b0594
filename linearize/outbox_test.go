package linearize

import (
	"context"
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
)

// waitReturns runs waitForBacklog for dests and reports whether it returned within d.
func waitReturns(ctx context.Context, o *outbox, d time.Duration, dests ...string) bool {
	set := make(map[string]int)
	for _, dest := range dests {
		set[dest] = 1
	}
	done := make(chan struct{})
	go func() {
		o.waitForBacklog(ctx, set)
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
	if !waitReturns(ctx, o, time.Second, "a.example") {
		t.Fatal("waited with nothing queued")
	}
	o.queued("a.example", backlogLimit)
	if !waitReturns(ctx, o, time.Second, "a.example") {
		t.Fatal("waited with a backlog at the limit")
	}
	o.queued("a.example", 10)
	if !waitReturns(ctx, o, time.Second, "b.example") {
		t.Fatal("a sender whose events went elsewhere waited for a.example's backlog")
	}
	done := make(chan struct{})
	go func() {
		o.waitForBacklog(ctx, map[string]int{"a.example": 1, "b.example": 1})
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
	o.queued("down.example", backlogLimit)
	if !waitReturns(context.Background(), o, time.Second, "down.example") {
		t.Fatal("a backlog sent past zero still holds answers")
	}
}

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
	time.Sleep(cursorSaveInterval + ackFlushDelay + 100*time.Millisecond)
	waitOutboxIdle(t, hub)
	commits := hub.eng.store.commits.Load()
	const sends = 30
	for i := 0; i < sends; i++ {
		id := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("one at a time"), time.Time{}))
		waitHead(t, part, roomID, id)
		// The participant appends before its answer reaches the hub; the next event comes after that answer.
		waitDeferredEnd(t, hub)
	}
	if n := hub.eng.store.commits.Load() - commits; n > sends+5 {
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
		nd.eng.outbox.lock.Lock()
		n := len(nd.eng.outbox.acked)
		nd.eng.outbox.lock.Unlock()
		if n > 0 {
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
	hub.eng.outbox.lock.Lock()
	clear(hub.eng.outbox.acked)
	hub.eng.outbox.lock.Unlock()
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
		if _, err := db.Exec(ctx, insertReceivedTxnQuery, "old.example", "t"+strconv.Itoa(i), "{}", old); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 5; i++ {
		if _, err := db.Exec(ctx, insertReceivedTxnQuery, "new.example", "t"+strconv.Itoa(i), "{}", recent); err != nil {
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

// TestOutboxBatchCapsLPDUs reads a destination's outbox holding LPDUs and PDUs mixed: a batch ends before the LPDU
// that would exceed maxLPDUsPerTxn, PDUs do not count, and the same rows give the same batch.
func TestOutboxBatchCapsLPDUs(t *testing.T) {
	ctx := testContext(t)
	nd := newHTTPNode(t, nil)
	const dest = "other.example"
	// Every third row is a PDU (its body read from the log, absent here); the rest are LPDUs.
	var want []int64
	lpdus := 0
	for seq := int64(1); seq <= 45; seq++ {
		var lpdu any
		if seq%3 != 0 {
			lpdu = `{"n":` + strconv.FormatInt(seq, 10) + `}`
			lpdus++
		}
		if lpdus <= maxLPDUsPerTxn {
			want = append(want, seq)
		}
		if _, err := nd.db.Exec(ctx, `INSERT INTO lm_outbox (destination, seq, room_id, event_id, lpdu) VALUES ($1, $2, $3, $4, $5)`,
			dest, seq, "!r:other.example", "$e"+strconv.FormatInt(seq, 10), lpdu); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		items, err := nd.eng.store.outboxBatch(ctx, dest, 1<<62-1, maxPDUsPerTxn, nd.eng.fanout)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, it := range items {
			got = append(got, it.seq)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("batch holds seqs %v, want %v", got, want)
		}
	}
}

// TestParticipantSendsLPDUsInSmallTransactions queues more LPDUs than one transaction takes while the hub is down:
// once it is back they reach it in transactions of at most maxLPDUsPerTxn, every one once and in order.
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
	const n = 2*maxLPDUsPerTxn + 5
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
	if total != n || largest != maxLPDUsPerTxn {
		t.Fatalf("the hub appended %d LPDUs, at most %d per transaction; want %d, at most %d", total, largest, n, maxLPDUsPerTxn)
	}
}
