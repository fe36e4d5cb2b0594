package linearize

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/store"
)

// snapshotDB copies nd's database as it is committed now, through VACUUM INTO: what a SIGKILL at this moment would
// leave behind (SQLite in WAL mode keeps every committed transaction across a process crash), or a backup taken now.
func snapshotDB(t *testing.T, nd *node) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "snapshot.db")
	if _, err := nd.db.Exec(testContext(t), "VACUUM INTO '"+path+"'"); err != nil {
		t.Fatalf("failed to snapshot the database of %s: %v", nd.name, err)
	}
	return path
}

// restoreDB stops nd, puts the snapshot in place of its database and starts it again.
func restoreDB(t *testing.T, nd *node, snapshot string) {
	t.Helper()
	httpNet{}.stop(t, nd)
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(nd.dbPath + suffix); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	// A new file renamed into place: the checkpointer of the old pool, closed only at the end of the test, still holds
	// the old one open and locked.
	raw, err := os.ReadFile(snapshot)
	if err != nil {
		t.Fatal(err)
	}
	if err = os.WriteFile(nd.dbPath+".restore", raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err = os.Rename(nd.dbPath+".restore", nd.dbPath); err != nil {
		t.Fatal(err)
	}
	httpNet{}.start(t, nd)
}

// restart stops and starts nd: cleanly (SIGTERM), or as a SIGKILL would leave it (the database as committed just
// before the stop, whatever the stop writes thrown away).
func restart(t *testing.T, nd *node, kill bool) {
	t.Helper()
	if !kill {
		httpNet{}.stop(t, nd)
		httpNet{}.start(t, nd)
		return
	}
	restoreDB(t, nd, snapshotDB(t, nd))
}

// waitLPDU waits until nd's log holds the completion of the LPDU lpduID.
func waitLPDU(t *testing.T, nd *node, roomID, lpduID string) {
	t.Helper()
	nd.rec.waitFor(t, fmt.Sprintf("%s to hold the completion of %s", nd.name, lpduID), func() bool {
		return slices.Contains(lpduIDs(t, nd, roomID), lpduID)
	})
}

// lpduIDs returns the LPDU IDs of the events of a room's log completed from LPDUs, oldest first.
func lpduIDs(t testing.TB, nd *node, roomID string) []string {
	t.Helper()
	var ids []string
	for _, ev := range must(nd.eng.Events(testContext(t), roomID, 0, 100000)) {
		if ev.LPDUID != "" {
			ids = append(ids, ev.LPDUID)
		}
	}
	return ids
}

// checkLPDUsOnce checks that the hub's log holds the completion of every LPDU of sent once, in the order sent.
func checkLPDUsOnce(t *testing.T, hub *node, roomID string, sent []string) {
	t.Helper()
	ours := make(map[string]bool)
	for _, id := range sent {
		ours[id] = true
	}
	var got []string
	for _, id := range lpduIDs(t, hub, roomID) {
		if ours[id] {
			got = append(got, id)
		}
	}
	if !slices.Equal(got, sent) {
		t.Fatalf("the hub's log holds LPDUs %v, want %v once each in order", got, sent)
	}
}

// checkLogPiece checks that part's log is a contiguous piece of hub's: same events, same order, none twice. (A
// restarted node's recorder saw only what followed its cursor, so checkMirror does not apply to it.)
func checkLogPiece(t *testing.T, hub, part *node, roomID string) {
	t.Helper()
	hubLog, partLog := logIDs(t, hub, roomID), logIDs(t, part, roomID)
	start := slices.Index(hubLog, partLog[0])
	if start < 0 || start+len(partLog) > len(hubLog) || !slices.Equal(hubLog[start:start+len(partLog)], partLog) {
		t.Fatalf("participant log is not a piece of the hub's:\nhub  %v\npart %v", hubLog, partLog)
	}
}

// TestRestartAfterFullDeliveryReachesPeer restarts an origin once everything it queued was delivered, so its outbox
// is empty: the events sent after the restart must reach the peer, which has recorded the transactions sent before.
// As hub (PDUs to a participant) and as participant (LPDUs to the hub), stopped cleanly and killed.
func TestRestartAfterFullDeliveryReachesPeer(t *testing.T) {
	for _, kill := range []bool{false, true} {
		name := "stop"
		if kill {
			name = "kill"
		}
		t.Run(name+"/hub", func(t *testing.T) {
			ctx := testContext(t)
			hub, part := newHTTPNode(t, nil), newHTTPNode(t, nil)
			roomID, alice, _ := joinedPair(t, hub, part)
			// One at a time, each in its own transaction: a later event would make the participant backfill an
			// earlier one that was dropped, and hide the loss.
			for i := range 3 {
				id := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text(fmt.Sprintf("before %d", i)), time.Time{}))
				waitHead(t, part, roomID, id)
			}
			waitOutboxIdle(t, hub)
			restart(t, hub, kill)
			for i := range 3 {
				id := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text(fmt.Sprintf("after %d", i)), time.Time{}))
				waitHead(t, part, roomID, id)
			}
			checkMirror(t, hub, part, roomID, nil)
		})
		t.Run(name+"/participant", func(t *testing.T) {
			ctx := testContext(t)
			hub, part := newHTTPNode(t, nil), newHTTPNode(t, nil)
			roomID, _, bob := joinedPair(t, hub, part)
			var sent []string
			for i := range 3 {
				sent = append(sent, must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text(fmt.Sprintf("before %d", i)), time.Time{})))
			}
			waitLPDU(t, part, roomID, sent[len(sent)-1])
			waitOutboxIdle(t, part)
			restart(t, part, kill)
			for i := range 3 {
				sent = append(sent, must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text(fmt.Sprintf("after %d", i)), time.Time{})))
			}
			waitLPDU(t, part, roomID, sent[len(sent)-1])
			checkLPDUsOnce(t, hub, roomID, sent)
			checkLogPiece(t, hub, part, roomID)
		})
	}
}

// TestRestoredBackupReusesNoTxnID restores an origin's database from a backup taken before more traffic was delivered:
// its outbox's seqs go back to where the backup left them, and the transactions it sends next carry other content
// than the ones the peer recorded under those seqs. They must not reuse those transactions' IDs, or the peer answers
// from its record and drops them.
func TestRestoredBackupReusesNoTxnID(t *testing.T) {
	t.Run("hub", func(t *testing.T) {
		ctx := testContext(t)
		hub, part := newHTTPNode(t, nil), newHTTPNode(t, nil)
		roomID, alice, _ := joinedPair(t, hub, part)
		// One at a time, as above: each must arrive by itself.
		send := func(what string) string {
			var id string
			for i := range 3 {
				id = must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text(fmt.Sprintf("%s %d", what, i)), time.Time{}))
				waitHead(t, part, roomID, id)
			}
			waitOutboxIdle(t, hub)
			return id
		}
		send("before the backup")
		backup := snapshotDB(t, hub)
		send("after the backup")
		restoreDB(t, hub, backup)
		// The restored hub's log ends before the events sent after the backup: its next events follow that end, and
		// the participant, which is the hub's to command, appends them after what it holds.
		last := send("after the restore")
		if ids := logIDs(t, part, roomID); ids[len(ids)-1] != last {
			t.Fatalf("the participant's log ends with %s, want %s", ids[len(ids)-1], last)
		}
	})
	t.Run("participant", func(t *testing.T) {
		ctx := testContext(t)
		hub, part := newHTTPNode(t, nil), newHTTPNode(t, nil)
		roomID, _, bob := joinedPair(t, hub, part)
		var sent []string
		send := func(what string) {
			for i := range 3 {
				sent = append(sent, must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text(fmt.Sprintf("%s %d", what, i)), time.Time{})))
			}
			waitLPDU(t, part, roomID, sent[len(sent)-1])
			waitOutboxIdle(t, part)
		}
		send("before the backup")
		backup := snapshotDB(t, part)
		send("after the backup")
		restoreDB(t, part, backup)
		send("after the restore")
		checkLPDUsOnce(t, hub, roomID, sent)
		checkLogPiece(t, hub, part, roomID)
	})
}

// TestOutboxSeqNeverGoesBack empties the outbox and restarts, cleanly and as a kill: the seqs given after the restart
// follow those given before, although no row is left to show them.
func TestOutboxSeqNeverGoesBack(t *testing.T) {
	ctx := testContext(t)
	hub, part := newHTTPNode(t, nil), newHTTPNode(t, nil)
	roomID, alice, _ := joinedPair(t, hub, part)
	seqOf := func() int64 {
		hub.eng.writeLock.Lock()
		defer hub.eng.writeLock.Unlock()
		return hub.eng.outboxSeq
	}
	for _, kill := range []bool{false, true} {
		id := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("before"), time.Time{}))
		waitHead(t, part, roomID, id)
		waitOutboxIdle(t, hub)
		before := seqOf()
		restart(t, hub, kill)
		if after := seqOf(); after != before {
			t.Fatalf("the outbox's last seq is %d after the restart, %d before", after, before)
		}
		// The next row queued gets the next seq: the participant is down, so it stays to be read.
		httpNet{}.stop(t, part)
		id = must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("after"), time.Time{}))
		var seq int64
		if err := hub.db.QueryRow(ctx, `SELECT seq FROM lm_outbox WHERE event_id=$1`, id).Scan(&seq); err != nil {
			t.Fatal(err)
		} else if seq != before+1 {
			t.Fatalf("the event after the restart was queued at seq %d, want %d", seq, before+1)
		}
		httpNet{}.start(t, part)
		waitHead(t, part, roomID, id)
	}
}

// outboxCount counts nd's rows queued for dest.
func outboxCount(t *testing.T, nd *node, dest string) int {
	t.Helper()
	var n int
	if err := nd.db.QueryRow(testContext(t), `SELECT COUNT(*) FROM lm_outbox WHERE destination=$1`, dest).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// destOf reads nd's in-flight mark and retry count for dest.
func destOf(t *testing.T, nd *node, dest string) store.Dest {
	t.Helper()
	return must(nd.eng.store.GetDest(testContext(t), dest))
}

// waitUntil polls cond every 20 ms until it holds, failing after 20 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDepartedServerIsNotRetriedForever: a server whose last user was removed while it was down gets the event that
// removed them if it comes back within the bound, and otherwise, once it has failed that many times, the hub drops
// what it queued for it and stops retrying. A server still joined keeps its rows however long it is down.
func TestDepartedServerIsNotRetriedForever(t *testing.T) {
	ctx := testContext(t)
	hub, part, stay := newHTTPNode(t, nil), newHTTPNode(t, nil), newHTTPNode(t, nil)
	hub.eng.outbox.SetDepartedRetries(4)
	roomID, alice, bob := joinedPair(t, hub, part)
	carol := userAt("carol", stay.name)
	must(hub.eng.InviteUser(ctx, roomID, alice, carol))
	waitHead(t, stay, roomID, must(stay.eng.Join(ctx, roomID, carol, hub.name)))

	// Down for less than the bound: the kick reaches bob's server once it is back.
	waitOutboxIdle(t, hub)
	httpNet{}.stop(t, part)
	kick := must(hub.eng.Kick(ctx, roomID, alice, bob, "away"))
	waitUntil(t, "a failed attempt to reach bob's server", func() bool { return destOf(t, hub, part.name).RetryCount >= 2 })
	if n := outboxCount(t, hub, part.name); n != 1 {
		t.Fatalf("%d rows queued for bob's server before the bound, want the kick", n)
	}
	// However long the restart takes on a busy machine.
	hub.eng.outbox.SetDepartedRetries(1000)
	httpNet{}.start(t, part)
	waitHead(t, part, roomID, kick)

	// Bob back in, then his server and carol's down for good while alice talks and kicks him again.
	must(hub.eng.InviteUser(ctx, roomID, alice, bob))
	join := must(part.eng.Join(ctx, roomID, bob, hub.name))
	waitHead(t, part, roomID, join)
	waitHead(t, stay, roomID, join)
	waitOutboxIdle(t, hub)
	hub.eng.outbox.SetDepartedRetries(4)
	httpNet{}.stop(t, part)
	httpNet{}.stop(t, stay)
	var last string
	for i := range 2 {
		last = must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text(fmt.Sprintf("m%d", i)), time.Time{}))
	}
	kick = must(hub.eng.Kick(ctx, roomID, alice, bob, "gone"))
	waitUntil(t, "the rows of bob's server dropped", func() bool { return outboxCount(t, hub, part.name) == 0 })
	if ds := destOf(t, hub, part.name); ds.TxnLastSeq != 0 {
		t.Fatalf("a transaction up to %d is still in flight to bob's server after its rows were dropped", ds.TxnLastSeq)
	}
	// Carol's server is still in the room: it keeps its rows past the bound.
	waitUntil(t, "carol's server to fail past the bound", func() bool { return destOf(t, hub, stay.name).RetryCount > 4 })
	if n := outboxCount(t, hub, stay.name); n != 3 {
		t.Fatalf("%d rows queued for carol's server, want 3", n)
	}
	// Nothing more is tried for bob's server.
	time.Sleep(time.Second)
	if ds := destOf(t, hub, part.name); ds.RetryCount != 0 || outboxCount(t, hub, part.name) != 0 {
		t.Fatalf("bob's server retried %d times after its rows were dropped", ds.RetryCount)
	}
	httpNet{}.start(t, stay)
	waitHead(t, stay, roomID, kick)
	if !slices.Contains(logIDs(t, stay, roomID), last) {
		t.Fatal("carol's server is missing alice's messages")
	}
	checkLogPiece(t, hub, stay, roomID)
}

// TestLPDUSentAgainIsAppendedOnce sends the hub, under a txnId it has not seen, an LPDU it completed already (what a
// participant restored from a backup, or upgraded across a change of txnIds, does): the hub accepts it without
// appending it again.
func TestLPDUSentAgainIsAppendedOnce(t *testing.T) {
	ctx := testContext(t)
	hub, part := newHTTPNode(t, nil), newHTTPNode(t, nil)
	roomID, _, bob := joinedPair(t, hub, part)
	// With the hub down, the LPDU waits in the participant's outbox, where its body can be read.
	httpNet{}.stop(t, hub)
	lpduID := must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text("once"), time.Time{}))
	var body string
	if err := part.db.QueryRow(ctx, `SELECT lpdu FROM lm_outbox WHERE event_id=$1`, lpduID).Scan(&body); err != nil {
		t.Fatal(err)
	}
	httpNet{}.start(t, hub)
	waitLPDU(t, part, roomID, lpduID)
	for _, txnID := range []string{"again-1", "again-2"} {
		resp, err := part.eng.remote.SendTransaction(ctx, hub.name, txnID, &federation.Transaction{PDUs: []json.RawMessage{json.RawMessage(body), json.RawMessage(body)}})
		if err != nil {
			t.Fatal(err)
		} else if len(resp.FailedPDUs) != 0 {
			t.Fatalf("the hub refused the LPDU sent again: %v", resp.FailedPDUs)
		}
	}
	after := must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text("after"), time.Time{}))
	waitLPDU(t, part, roomID, after)
	checkLPDUsOnce(t, hub, roomID, []string{lpduID, after})
	checkLogPiece(t, hub, part, roomID)
}

// TestOutboxSeqMigrationStartsAtTheQueuedRows upgrades a database at version 4 with rows queued and a destination
// known: the destination keeps its state, and the first seq given after the upgrade follows the queued rows.
func TestOutboxSeqMigrationStartsAtTheQueuedRows(t *testing.T) {
	ctx := testContext(t)
	nd := newHTTPNode(t, nil)
	httpNet{}.stop(t, nd)
	db := openTestDB(t, nd.dbPath)
	for _, q := range []string{`ALTER TABLE lm_destination DROP COLUMN sent_up_to`, `DROP INDEX lm_event_lpdu_idx`,
		`DROP TABLE lm_join_pending`, `DROP TABLE lm_join`,
		`UPDATE linearize_version SET version=4`,
		`INSERT INTO lm_outbox (destination, seq, room_id, event_id, lpdu) VALUES ('a.invalid', 3, '!r:x', '$a', '{}'), ('b.invalid', 7, '!r:x', '$b', '{}')`,
		`INSERT INTO lm_destination (destination, txn_last_seq, retry_count, next_attempt) VALUES ('b.invalid', 7, 2, 0)`} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	_ = db.Close()
	httpNet{}.start(t, nd)
	nd.eng.writeLock.Lock()
	seq := nd.eng.outboxSeq
	nd.eng.writeLock.Unlock()
	if seq != 7 {
		t.Fatalf("the outbox's last seq is %d after the upgrade, want 7", seq)
	}
	if ds := destOf(t, nd, "b.invalid"); ds.TxnLastSeq != 7 {
		t.Fatalf("the transaction in flight to b.invalid ends at %d after the upgrade, want 7", ds.TxnLastSeq)
	}
}
