package linearize

import (
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/linearize/store/upgrades"
)

// TestSendEventKeyedIsIdempotent sends with idempotency keys as hub and as participant over loopback HTTP, across a
// restart of the participant, and checks that a repeated key sends nothing and returns the first ID.
func TestSendEventKeyedIsIdempotent(t *testing.T) {
	ctx := testContext(t)
	hub := newHTTPNode(t, nil)
	part := newHTTPNode(t, nil)
	alice, bob := userAt("alice", hub.name), userAt("bob", part.name)
	roomID := must(hub.eng.CreateRoom(ctx, alice, nil))
	otherRoom := must(hub.eng.CreateRoom(ctx, alice, nil))
	must(hub.eng.InviteUser(ctx, roomID, alice, bob))
	must(part.eng.Join(ctx, roomID, bob, hub.name))

	// As hub.
	before := len(logIDs(t, hub, roomID))
	first := must(hub.eng.SendEventKeyed(ctx, roomID, alice, "m.room.message", nil, text("one"), time.Time{}, "$dag1"))
	again := must(hub.eng.SendEventKeyed(ctx, roomID, alice, "m.room.message", nil, text("one, redelivered"), time.Time{}, "$dag1"))
	if again != first {
		t.Fatalf("hub: repeated key gave %s, first send gave %s", again, first)
	}
	if got := len(logIDs(t, hub, roomID)) - before; got != 1 {
		t.Fatalf("hub: %d events appended for one key, want 1", got)
	}
	if other := must(hub.eng.SendEventKeyed(ctx, otherRoom, alice, "m.room.message", nil, text("one"), time.Time{}, "$dag1")); other == first {
		t.Fatal("hub: a key used in another room returned that room's event")
	}
	unkeyed1 := must(hub.eng.SendEventKeyed(ctx, roomID, alice, "m.room.message", nil, text("two"), time.Time{}, ""))
	unkeyed2 := must(hub.eng.SendEventKeyed(ctx, roomID, alice, "m.room.message", nil, text("three"), time.Time{}, ""))
	if unkeyed1 == unkeyed2 {
		t.Fatal("hub: two sends without a key were taken as one")
	}

	// As participant: the LPDU is queued once, and the key survives a restart.
	lpdu := must(part.eng.SendEventKeyed(ctx, roomID, bob, "m.room.message", nil, text("from bob"), time.Time{}, "$dag2"))
	httpNet{}.stop(t, part)
	httpNet{}.start(t, part)
	again = must(part.eng.SendEventKeyed(ctx, roomID, bob, "m.room.message", nil, text("from bob"), time.Now(), "$dag2"))
	if again != lpdu {
		t.Fatalf("participant: repeated key after a restart gave %s, first send gave %s", again, lpdu)
	}
	marker := must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text("marker"), time.Time{}))
	part.rec.waitFor(t, "the marker's echo", func() bool {
		for _, ev := range must(part.eng.Events(ctx, roomID, 0, 1000)) {
			if ev.LPDUID == marker {
				return true
			}
		}
		return false
	})
	count := 0
	for _, ev := range must(hub.eng.Events(ctx, roomID, 0, 1000)) {
		if ev.LPDUID == lpdu {
			count++
		}
	}
	if count != 1 {
		t.Fatalf("the hub appended the keyed LPDU %d times, want 1", count)
	}
}

// TestSendKeyMigration upgrades a database at version 1 (before send keys and the join tables, with the pending-LPDU
// table) and uses a key on it.
func TestSendKeyMigration(t *testing.T) {
	ctx := testContext(t)
	nd := newHTTPNode(t, nil)
	roomID := must(nd.eng.CreateRoom(ctx, userAt("alice", nd.name), nil))
	httpNet{}.stop(t, nd)
	db := openTestDB(t, nd.dbPath)
	// Back to version 1: without what versions 2 and later added.
	for _, undo := range []string{`DROP TABLE lm_send_key`, `ALTER TABLE lm_destination DROP COLUMN sent_up_to`, `DROP INDEX lm_event_lpdu_idx`,
		`DROP TABLE lm_join_pending`, `DROP TABLE lm_join`} {
		if _, err := db.Exec(ctx, undo); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(ctx, `CREATE TABLE lm_pending_lpdu (lpdu_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, sent_at BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `UPDATE linearize_version SET version=1`); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	httpNet{}.start(t, nd)
	var version int
	if err := nd.db.QueryRow(ctx, `SELECT version FROM linearize_version`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version != len(upgrades.Table) {
		t.Fatalf("version %d after the upgrade, want %d", version, len(upgrades.Table))
	}
	var left int
	if err := nd.db.QueryRow(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE name='lm_pending_lpdu'`).Scan(&left); err != nil {
		t.Fatal(err)
	} else if left != 0 {
		t.Fatal("lm_pending_lpdu is still there after the upgrade")
	}
	alice := userAt("alice", nd.name)
	first := must(nd.eng.SendEventKeyed(ctx, roomID, alice, "m.room.message", nil, text("x"), time.Time{}, "k"))
	if again := must(nd.eng.SendEventKeyed(ctx, roomID, alice, "m.room.message", nil, text("x"), time.Time{}, "k")); again != first {
		t.Fatalf("repeated key gave %s, want %s", again, first)
	}
}
