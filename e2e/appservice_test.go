package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/internal/tesths"
	"github.com/lmbridge/lmbridge/internal/testpg"
)

// TestAppServiceOnRealHomeservers runs the real lmbridge binary against each installed homeserver: the bot joins on
// invite and seeds the room from /state; 200 messages reach dagview in order, each once; a ghost sends with a past
// ts and a repeated transaction ID does not duplicate; lmbridge killed with SIGKILL in the middle of a second run of
// 200 messages loses none of them once restarted.
func TestAppServiceOnRealHomeservers(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) { testAppService(t, kind, sqliteDB) })
}

// TestAppServiceOnPostgres is TestAppServiceOnRealHomeservers with lmbridge's tables on PostgreSQL (database.type:
// postgres), on Dendrite: the same queries have to work there.
func TestAppServiceOnPostgres(t *testing.T) {
	testpg.RequireT(t)
	tesths.RequireKind(t, tesths.Dendrite)
	testAppService(t, tesths.Dendrite, postgresDB)
}

func testAppService(t *testing.T, kind tesths.Kind, dbk dbKind) {
	ctx := testContext(t)
	b := newLMBridgeOn(t, tesths.DefaultServerName, dbk)
	hs := tesths.StartT(t, kind, tesths.Options{ServerName: b.ServerName, Registrations: [][]byte{b.RegYAML}})
	b.SetHomeserver(t, hs)
	b.Start(t)
	db := b.openDB(t)
	botID := id.NewUserID(b.Registration.SenderLocalpart, hs.ServerName)

	alice := hs.RegisterUserT(t, "alice", "alice-password", false)
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		Name:   "lmbridge e2e",
		Invite: []id.UserID{botID},
		PowerLevelOverride: &event.PowerLevelsEventContent{
			Users: map[id.UserID]int{alice.UserID: 100, botID: 100},
		},
	})
	if err != nil {
		t.Fatalf("failed to create room: %v", err)
	}
	roomID := created.RoomID

	t.Run("bot joins on invite and seeds the state", func(t *testing.T) {
		waitUntil(t, 30*time.Second, "the bot to join", func() bool {
			members, err := alice.JoinedMembers(ctx, roomID)
			return err == nil && hasMember(members, botID)
		})
		waitUntil(t, 30*time.Second, "dagview to record the bot's join", func() bool {
			return dagviewMembership(t, db, roomID, botID) == "join"
		})
		if got := dagviewMembership(t, db, roomID, alice.UserID); got != "join" {
			t.Errorf("dagview has alice as %q, want join", got)
		}
		var nameEvent stateEventJSON
		_, err := dagviewStateEvent(db, roomID, "m.room.name", &nameEvent)
		if err != nil || nameEvent.Content.Name != "lmbridge e2e" {
			t.Errorf("dagview room name: %q, %v", nameEvent.Content.Name, err)
		}
		if resp, err := alice.GetDisplayName(ctx, botID); err != nil || resp.DisplayName != "LM bridge" {
			t.Errorf("bot display name %v (%v), want the configured %q", resp, err, "LM bridge")
		}
		var seeded sql.NullInt64
		if err = db.QueryRow(`SELECT seeded_at FROM dagview_room WHERE room_id=$1`, roomID).Scan(&seeded); err != nil || !seeded.Valid {
			t.Errorf("room not seeded from /state: %v", err)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("200 messages arrive in order, each once", func(t *testing.T) {
		sendMessages(ctx, t, alice, roomID, "first", 200)
		rows := waitForBodies(t, db, roomID, "first-", 200, 60*time.Second)
		checkOrder(t, rows, "first", 200)
		for _, r := range rows {
			if r.Deliveries != 1 {
				t.Errorf("%s delivered %d times, want 1", r.Body, r.Deliveries)
			}
		}
	})

	t.Run("ghost sends with a past ts, a repeated txn ID does not duplicate", func(t *testing.T) {
		as := appserviceFor(ctx, t, b, hs)
		ghostID, err := as.GhostUserID("bob=lm.test")
		if err != nil {
			t.Fatal(err)
		}
		ghost, err := as.Ghost(ghostID)
		if err != nil {
			t.Fatal(err)
		}
		if err = ghost.SetProfile(ctx, "Bob (LM)", id.ContentURI{}); err != nil {
			t.Fatalf("failed to register ghost: %v", err)
		}
		if err = ghost.Join(ctx, roomID); err != nil {
			t.Fatalf("ghost failed to join: %v", err)
		}
		past := time.Now().Add(-36 * time.Hour).Truncate(time.Millisecond)
		content := &event.MessageEventContent{MsgType: event.MsgText, Body: "ghost-from-the-past"}
		first, err := ghost.SendMessage(ctx, roomID, event.EventMessage, content, past, "$lm-event-1")
		if err != nil {
			t.Fatalf("ghost send: %v", err)
		}
		again, err := ghost.SendMessage(ctx, roomID, event.EventMessage, content, past, "$lm-event-1")
		if err != nil {
			t.Fatalf("repeated ghost send: %v", err)
		}
		if again != first {
			t.Errorf("repeated send with the same txn ID made a second event: %s then %s", first, again)
		}
		// A different logical event gets its own transaction and its own DAG event; it also marks the end of
		// what the repeated send could have produced.
		marker, err := ghost.SendMessage(ctx, roomID, event.EventMessage,
			&event.MessageEventContent{MsgType: event.MsgText, Body: "ghost-marker"}, time.Time{}, "$lm-event-2")
		if err != nil {
			t.Fatalf("ghost marker send: %v", err)
		}
		if marker == first {
			t.Fatal("two logical events share one DAG event")
		}
		waitForBodies(t, db, roomID, "ghost-marker", 1, 30*time.Second)
		rows := rowsWithPrefix(dagviewStream(t, db, roomID), "ghost-from-the-past")
		if len(rows) != 1 {
			t.Fatalf("dagview has %d copies of the ghost's message, want 1", len(rows))
		}
		if rows[0].EventID != first || rows[0].Sender != ghostID {
			t.Errorf("dagview has %s from %s, want %s from %s", rows[0].EventID, rows[0].Sender, first, ghostID)
		}
		if rows[0].TS != past.UnixMilli() {
			t.Errorf("origin_server_ts %d, want the past ts %d", rows[0].TS, past.UnixMilli())
		}
		evt, err := alice.GetEvent(ctx, roomID, first)
		if err != nil || evt.Timestamp != past.UnixMilli() {
			t.Errorf("homeserver has the ghost event at %v (%v), want %d", evt, err, past.UnixMilli())
		}
	})

	t.Run("bot and ghost intents change state and membership", func(t *testing.T) {
		as := appserviceFor(ctx, t, b, hs)
		bot := as.Bot()
		carolID, err := as.GhostUserID("carol=lm.test")
		if err != nil {
			t.Fatal(err)
		}
		carol, err := as.Ghost(carolID)
		if err != nil {
			t.Fatal(err)
		}
		if err = carol.SetProfile(ctx, "Carol (LM)", id.ContentURI{}); err != nil {
			t.Fatalf("failed to register carol: %v", err)
		}
		if err = bot.Invite(ctx, roomID, carolID, ""); err != nil {
			t.Fatalf("bot invite: %v", err)
		}
		waitUntil(t, 30*time.Second, "dagview to see carol invited", func() bool {
			return dagviewMembership(t, db, roomID, carolID) == "invite"
		})
		if _, err = carol.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatalf("carol join: %v", err)
		}
		past := time.Now().Add(-2 * time.Hour).Truncate(time.Millisecond)
		topicID, err := bot.SendState(ctx, roomID, event.StateTopic, "", &event.TopicEventContent{Topic: "set by the bot"}, past)
		if err != nil {
			t.Fatalf("bot topic: %v", err)
		}
		if err = bot.Kick(ctx, roomID, carolID, "testing kick"); err != nil {
			t.Fatalf("bot kick: %v", err)
		}
		if err = bot.Ban(ctx, roomID, carolID, "testing ban"); err != nil {
			t.Fatalf("bot ban: %v", err)
		}
		bobID, _ := as.GhostUserID("bob=lm.test")
		bob, _ := as.Ghost(bobID)
		if err = bob.Leave(ctx, roomID); err != nil {
			t.Fatalf("bob leave: %v", err)
		}
		waitUntil(t, 30*time.Second, "dagview to see carol banned and bob gone", func() bool {
			return dagviewMembership(t, db, roomID, carolID) == "ban" && dagviewMembership(t, db, roomID, bobID) == "leave"
		})
		var topicEvent stateEventJSON
		stateEventID, err := dagviewStateEvent(db, roomID, "m.room.topic", &topicEvent)
		topic, ts := topicEvent.Content.Topic, topicEvent.OriginServerTS
		if err != nil || stateEventID != topicID || topic != "set by the bot" || ts != past.UnixMilli() {
			t.Errorf("dagview topic %s %q at %d (%v), want %s %q at %d", stateEventID, topic, ts, err, topicID, "set by the bot", past.UnixMilli())
		}
	})

	t.Run("SIGKILL mid-stream loses nothing acknowledged", func(t *testing.T) {
		const n = 200
		sent := make(chan error, 1)
		go func() { sent <- sendMessagesErr(ctx, alice, roomID, "second", n) }()
		waitUntil(t, 60*time.Second, "part of the second run to arrive", func() bool {
			return len(rowsWithPrefix(dagviewStream(t, db, roomID), "second-")) >= n/4
		})
		b.Kill(t)
		arrivedBeforeKill := len(rowsWithPrefix(dagviewStream(t, db, roomID), "second-"))
		if err := <-sent; err != nil {
			t.Fatalf("sending while lmbridge was down: %v", err)
		}
		if arrivedBeforeKill >= n {
			t.Fatalf("all %d messages arrived before the kill; the test did not kill mid-stream", n)
		}
		t.Logf("%d of %d messages had reached dagview when lmbridge was killed", arrivedBeforeKill, n)
		b.Start(t)
		rows := waitForBodies(t, db, roomID, "second-", n, 120*time.Second)
		checkOrder(t, rows, "second", n)
		// At least once: only what was in flight at the kill may be offered twice. dagview writes an event's delivered
		// mark with its next write, so that is the tail of the stream not yet marked when lmbridge died: consecutive
		// events ending with the last one appended before the kill, at most one dispatch run of the appservice (64
		// events, appended in one transaction and handed over one by one).
		var redelivered []int
		for i, r := range rows {
			if r.Deliveries > 1 {
				redelivered = append(redelivered, i)
			}
		}
		if k := len(redelivered); k > 0 {
			first, last := redelivered[0], redelivered[k-1]
			if last-first+1 != k || last != arrivedBeforeKill-1 || k > 64 {
				t.Errorf("events %v of the %d appended before the kill were offered again; want at most 64, the last ones before the kill",
					redelivered, arrivedBeforeKill)
			}
		}
		t.Logf("%d events offered again after the restart", len(redelivered))
		var unhandled int
		if err := db.QueryRow(`SELECT COUNT(*) FROM appservice_event WHERE handled_at IS NULL OR last_error IS NOT NULL`).Scan(&unhandled); err != nil {
			t.Fatal(err)
		}
		if unhandled != 0 {
			t.Errorf("%d inbox events unhandled or failed", unhandled)
		}
	})
}

func hasMember(members *mautrix.RespJoinedMembers, userID id.UserID) bool {
	_, ok := members.Joined[userID]
	return ok
}

func dagviewMembership(t *testing.T, db *sql.DB, roomID id.RoomID, userID id.UserID) string {
	t.Helper()
	var membership sql.NullString
	err := db.QueryRow(`SELECT membership FROM dagview_state WHERE room_id=$1 AND type='m.room.member' AND state_key=$2`,
		roomID, userID).Scan(&membership)
	if err != nil && err != sql.ErrNoRows && !isMissingTable(err) {
		t.Fatalf("failed to read membership: %v", err)
	}
	return membership.String
}

// stateEventJSON is the part of a stored state event the tests look at.
type stateEventJSON struct {
	OriginServerTS int64 `json:"origin_server_ts"`
	Content        struct {
		Name  string `json:"name"`
		Topic string `json:"topic"`
	} `json:"content"`
}

// dagviewStateEvent reads a room's current state event of the type (state key "") from dagview's table into into.
// The JSON is decoded here rather than in SQL, whose JSON functions differ between SQLite and PostgreSQL.
func dagviewStateEvent(db *sql.DB, roomID id.RoomID, evtType string, into *stateEventJSON) (id.EventID, error) {
	var eventID id.EventID
	var raw string
	err := db.QueryRow(`SELECT event_id, event_json FROM dagview_state WHERE room_id=$1 AND type=$2 AND state_key=''`,
		roomID, evtType).Scan(&eventID, &raw)
	if err != nil {
		return "", err
	}
	if err = json.Unmarshal([]byte(raw), into); err != nil {
		return "", fmt.Errorf("stored %s event %s is not JSON: %w", evtType, eventID, err)
	}
	return eventID, nil
}

// appserviceFor builds lmbridge's appservice package in the test process, with lmbridge's registration and its own
// scratch database, to act as lmbridge's ghosts towards the homeserver.
func appserviceFor(ctx context.Context, t *testing.T, b *lmbridgeProcess, hs *tesths.Homeserver) *appservice.AppService {
	t.Helper()
	db, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "intents.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	as, err := appservice.New(appservice.Params{
		Homeserver:   config.Homeserver{Address: hs.URL, Domain: hs.ServerName},
		AppService:   config.AppService{ID: b.Registration.ID, Bot: config.Bot{Username: b.Registration.SenderLocalpart}, UsernameTemplate: "lm_{{.}}"},
		Registration: b.Registration,
		DB:           db,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err = as.Upgrade(zerolog.Nop().WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	return as
}

func sendMessages(ctx context.Context, t *testing.T, client *mautrix.Client, roomID id.RoomID, prefix string, n int) {
	t.Helper()
	if err := sendMessagesErr(ctx, client, roomID, prefix, n); err != nil {
		t.Fatal(err)
	}
}

// sendMessagesErr sends n messages one after another, so their order is defined: each is acknowledged by the
// homeserver before the next goes out.
func sendMessagesErr(ctx context.Context, client *mautrix.Client, roomID id.RoomID, prefix string, n int) error {
	for i := range n {
		body := fmt.Sprintf("%s-%03d", prefix, i)
		if _, err := client.SendText(ctx, roomID, body); err != nil {
			return fmt.Errorf("failed to send %s: %w", body, err)
		}
	}
	return nil
}

func rowsWithPrefix(rows []streamRow, prefix string) []streamRow {
	var out []streamRow
	for _, r := range rows {
		if strings.HasPrefix(r.Body, prefix) {
			out = append(out, r)
		}
	}
	return out
}

func waitForBodies(t *testing.T, db *sql.DB, roomID id.RoomID, prefix string, n int, timeout time.Duration) []streamRow {
	t.Helper()
	var rows []streamRow
	waitUntil(t, timeout, fmt.Sprintf("%d %q messages in dagview", n, prefix), func() bool {
		rows = rowsWithPrefix(dagviewStream(t, db, roomID), prefix)
		return len(rows) >= n
	})
	// Anything arriving late would be a duplicate; give it a moment to show.
	time.Sleep(300 * time.Millisecond)
	return rowsWithPrefix(dagviewStream(t, db, roomID), prefix)
}

// checkOrder checks that the stream holds exactly prefix-000 … prefix-(n-1), once each, in send order.
func checkOrder(t *testing.T, rows []streamRow, prefix string, n int) {
	t.Helper()
	if len(rows) != n {
		t.Fatalf("dagview has %d %q messages, want %d", len(rows), prefix, n)
	}
	for i, r := range rows {
		if want := fmt.Sprintf("%s-%03d", prefix, i); r.Body != want {
			t.Fatalf("stream position %d holds %q, want %q (out of order, lost or duplicated)", r.Position, r.Body, want)
		}
		if i > 0 && r.Position <= rows[i-1].Position {
			t.Fatalf("positions not increasing at %q", r.Body)
		}
	}
}

// TestFreshHomeserverDatabaseIsNotMistakenForRepeats keeps lmbridge's database while the homeserver is replaced by one
// with a fresh database. Synapse numbers transactions 1, 2, 3 … per database, so the new server reuses transaction
// IDs lmbridge has already stored; its events must still all arrive.
func TestFreshHomeserverDatabaseIsNotMistakenForRepeats(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		ctx := testContext(t)
		b := newLMBridge(t, tesths.DefaultServerName)
		db := b.openDB(t)
		botID := id.NewUserID(b.Registration.SenderLocalpart, tesths.DefaultServerName)
		for round := range 2 {
			hs := tesths.StartT(t, kind, tesths.Options{ServerName: b.ServerName, Registrations: [][]byte{b.RegYAML}})
			b.SetHomeserver(t, hs)
			b.Start(t)
			user := hs.RegisterUserT(t, fmt.Sprintf("user%d", round), "password", false)
			created, err := user.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{botID}})
			if err != nil {
				t.Fatalf("round %d: failed to create room: %v", round, err)
			}
			waitUntil(t, 30*time.Second, "the bot to join", func() bool {
				return dagviewMembership(t, db, created.RoomID, botID) == "join"
			})
			prefix := fmt.Sprintf("round%d", round)
			sendMessages(ctx, t, user, created.RoomID, prefix, 20)
			rows := waitForBodies(t, db, created.RoomID, prefix+"-", 20, 60*time.Second)
			checkOrder(t, rows, prefix, 20)
			b.Stop(t)
			if err = hs.Stop(); err != nil {
				t.Fatalf("failed to stop homeserver: %v", err)
			}
		}
		var reused int
		err := db.QueryRow(`SELECT COUNT(*) FROM (SELECT txn_id FROM appservice_transaction GROUP BY txn_id HAVING COUNT(*) > 1) AS reused_txn`).Scan(&reused)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d transaction IDs were used by both homeserver databases", reused)
		if kind == tesths.Synapse && reused == 0 {
			t.Error("Synapse reused no transaction ID; the test did not exercise the case it is about")
		}
	})
}
