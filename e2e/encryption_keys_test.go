//go:build goolm

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/internal/tesths"
	"github.com/lmbridge/lmbridge/linearize"
)

// TestEncryptionKeysAndPolicies runs, on one stack per homeserver, what the bot's device does with keys beyond the
// plain exchange of TestEncryptedRoomsWithMatrixJSSDK, each against matrix-js-sdk's Rust crypto: a new device's key
// request answered, a late key, the resend look-up in an encrypted room, a portal created encrypted, and the
// encryption.require and verification_levels settings.
func TestEncryptionKeysAndPolicies(t *testing.T) {
	tesths.ForEachKind(t, testEncryptionKeysAndPolicies)
}

func testEncryptionKeysAndPolicies(t *testing.T, kind tesths.Kind) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &lockedBuffer{}
	ctx = zerolog.New(zerolog.MultiLevelWriter(logs, zerolog.NewTestWriter(t))).Level(zerolog.InfoLevel).WithContext(ctx)
	st := startEncStack(ctx, t, kind, sqliteDB, func(e *config.Encryption) { e.Default = true })
	alice := st.hs.RegisterUserT(t, "alice", "alice-password", false)
	phone := startJSClient(t, "alice-phone")
	phone.must("login", map[string]any{"baseUrl": st.hs.URL, "user": "alice", "password": "alice-password"})
	bob := "@bob:" + st.peer.ServerName()
	room, link := linkEncryptedRoom(ctx, t, st, phone, alice, "Keys", bob)
	ghost, _ := st.users.GhostOf(bob)
	botDevice := string(st.crypto.DeviceID())

	t.Run("KeyRequestAnswered", func(t *testing.T) {
		// A message from LM, then a new device of alice's that was not there for it, with no key backup: it reads the
		// message only once the bridge answers its key request.
		sendLM(ctx, t, st, link, bob, "before the tablet")
		old := phone.must("waitMessage", map[string]any{"roomId": room, "body": "before the tablet", "timeoutMs": 60000})
		tablet := startJSClient(t, "alice-tablet")
		tabletDevice := str(tablet.must("login", map[string]any{"baseUrl": st.hs.URL, "user": "alice", "password": "alice-password"}), "deviceId")
		waitBotKnowsDevice(ctx, t, st, alice.UserID, tabletDevice)
		tablet.must("waitUndecryptable", map[string]any{"roomId": room, "eventId": str(old, "eventId"), "timeoutMs": 60000})
		// Nothing else brings the tablet the key: the Rust SDK asks only alice's own devices, which do not forward to
		// an unverified one.
		time.Sleep(3 * time.Second)
		if got := tablet.must("eventState", map[string]any{"roomId": room, "eventId": str(old, "eventId")}); got["decryptionFailure"] != true {
			t.Fatalf("the tablet read the old message before asking the bridge: %v", got)
		}
		tablet.must("requestKey", map[string]any{"roomId": room, "eventId": str(old, "eventId"), "userId": st.bot, "deviceId": botDevice})
		waitLog(t, logs, "Answered a room key request with the room key", tabletDevice)
		got := tablet.must("waitMessage", map[string]any{"roomId": room, "body": "before the tablet", "timeoutMs": 60000})
		if got["encrypted"] != true || id.UserID(str(got, "sender")) != ghost {
			t.Errorf("the tablet read %v, want the encrypted message from %s", got, ghost)
		}
	})

	t.Run("LateKey", func(t *testing.T) {
		// alice's phone keeps its key from the bot's unverified device, so the message cannot be decrypted within the
		// key wait and the room is told; the key comes afterwards, forwarded, and the message reaches LM then, once.
		phone.must("blacklistUnverified", map[string]any{"value": true})
		late := phone.must("send", map[string]any{"roomId": room, "body": "the key comes late"})
		phone.must("waitMessage", map[string]any{"roomId": room, "contains": "could not be bridged", "timeoutMs": 60000})
		isLate := func(ev *linearize.Event) bool {
			return ev.RoomID == link.LMRoomID && lmBody(ev) == "the key comes late"
		}
		if st.peer.find(isLate) != nil {
			t.Fatal("the message reached LM although the bot had no key")
		}
		phone.must("blacklistUnverified", map[string]any{"value": false})
		phone.must("forwardKey", map[string]any{"roomId": room, "eventId": str(late, "eventId"), "userId": st.bot, "deviceId": botDevice})
		findLM(t, st.peer, "the late message on LM", isLate)
		waitLog(t, logs, "Bridged an event late", str(late, "eventId"))
		// What follows still crosses, and the late message crossed once.
		exchange(ctx, t, st, phone, link, bob, "after the late key")
		n := 0
		for _, ev := range st.peer.roomEvents(link.LMRoomID) {
			if isLate(ev) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("the late message is %d times on LM, want once", n)
		}
	})

	t.Run("ResendFindsEncryptedSend", func(t *testing.T) {
		testEncryptedResend(ctx, t, st, alice, phone, room, ghost)
	})

	t.Run("PortalEncrypted", func(t *testing.T) {
		// encryption.default: the portal made for an LM invite is encrypted from its creation.
		frank := "@frank:" + st.peer.ServerName()
		lmRoom, err := st.peer.CreateRoom(ctx, frank, []linearize.InitialState{{Type: "m.room.name", Content: map[string]any{"name": "Frank's room"}}})
		if err != nil {
			t.Fatal(err)
		}
		aliceLM, _ := st.users.LMUserOf(alice.UserID)
		if _, err = st.peer.InviteUser(ctx, lmRoom, frank, aliceLM); err != nil {
			t.Fatal(err)
		}
		portal := str(phone.must("waitInvite", map[string]any{"timeoutMs": 60000}), "roomId")
		phone.must("join", map[string]any{"roomId": portal})
		var enc event.EncryptionEventContent
		if err = alice.StateEvent(ctx, id.RoomID(portal), event.StateEncryption, "", &enc); err != nil || enc.Algorithm != id.AlgorithmMegolmV1 {
			t.Fatalf("the portal's m.room.encryption = %+v, %v", enc, err)
		}
		findLM(t, st.peer, "alice's join of frank's room", func(ev *linearize.Event) bool {
			return ev.RoomID == lmRoom && ev.Type == "m.room.member" && ev.Sender == aliceLM && lmContent(ev)["membership"] == "join"
		})
		if _, err = st.peer.SendEvent(ctx, lmRoom, frank, "m.room.message", nil,
			map[string]any{"msgtype": "m.text", "body": "hi from frank"}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		frankGhost, _ := st.users.GhostOf(frank)
		found := false
		for deadline := time.Now().Add(60 * time.Second); !found && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			for _, evt := range roomTimeline(ctx, t, alice, id.RoomID(portal)) {
				found = found || (evt.Sender == frankGhost && evt.Type == event.EventEncrypted)
			}
		}
		if !found {
			for _, evt := range roomTimeline(ctx, t, alice, id.RoomID(portal)) {
				t.Logf("portal event %s %s from %s: %v", evt.ID, evt.Type.Type, evt.Sender, evt.Content.Raw)
			}
			t.Fatal("frank's message did not reach the portal encrypted")
		}
		got := phone.must("waitMessage", map[string]any{"roomId": portal, "body": "hi from frank", "timeoutMs": 60000})
		if got["encrypted"] != true {
			t.Errorf("frank's message in the portal: %v, want it encrypted", got)
		}
	})

	t.Run("RequireAndTrustLevels", func(t *testing.T) {
		st.cfg.Encryption.Require = true
		st.cfg.Encryption.Verification.Receive = "cross-signed-tofu"
		st.cfg.Encryption.Verification.Share = "cross-signed-tofu"
		st.restart(ctx)

		// share: a new device below the level asks in vain.
		sendLM(ctx, t, st, link, bob, "before the second tablet")
		old := phone.must("waitMessage", map[string]any{"roomId": room, "body": "before the second tablet", "timeoutMs": 60000})
		tablet := startJSClient(t, "alice-tablet2")
		tabletDevice := str(tablet.must("login", map[string]any{"baseUrl": st.hs.URL, "user": "alice", "password": "alice-password"}), "deviceId")
		waitBotKnowsDevice(ctx, t, st, alice.UserID, tabletDevice)
		tablet.must("waitUndecryptable", map[string]any{"roomId": room, "eventId": str(old, "eventId"), "timeoutMs": 60000})
		tablet.must("requestKey", map[string]any{"roomId": room, "eventId": str(old, "eventId"), "userId": st.bot, "deviceId": botDevice})
		waitLog(t, logs, "Refused a room key request from a device below the share trust level", tabletDevice)
		time.Sleep(3 * time.Second)
		if got := tablet.must("eventState", map[string]any{"roomId": room, "eventId": str(old, "eventId")}); got["decryptionFailure"] != true {
			t.Errorf("a device below the share level read the old message: %v", got)
		}

		// receive: a message from alice's unverified phone is not bridged, and she is told why.
		phone.must("send", map[string]any{"roomId": room, "body": "from an unverified device"})
		phone.must("waitMessage", map[string]any{"roomId": room, "contains": "does not trust enough", "timeoutMs": 60000})

		// require: a plaintext message in the encrypted room is not bridged, and an unencrypted room is not linked.
		if _, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "in clear"}); err != nil {
			t.Fatal(err)
		}
		phone.must("waitMessage", map[string]any{"roomId": room, "contains": "only bridges encrypted messages", "timeoutMs": 60000})
		plain := id.RoomID(str(phone.must("createRoom", map[string]any{"name": "Plain", "encrypted": false,
			"invite": []string{string(st.bot)}}), "roomId"))
		phone.must("waitJoined", map[string]any{"roomId": plain, "userId": st.bot, "timeoutMs": 60000})
		raisePower(ctx, t, alice, plain, st.bot)
		phone.must("send", map[string]any{"roomId": plain, "body": "!lm link"})
		phone.must("waitMessage", map[string]any{"roomId": plain, "contains": "only bridges encrypted rooms", "timeoutMs": 60000})
		if l, _ := st.br.DB().GetLinkByDAGRoom(ctx, plain); l != nil {
			t.Errorf("the unencrypted room was linked to %s", l.LMRoomID)
		}
		for _, body := range []string{"from an unverified device", "in clear"} {
			if ev := st.peer.find(func(ev *linearize.Event) bool { return lmBody(ev) == body }); ev != nil {
				t.Errorf("%q reached LM in %s", body, ev.RoomID)
			}
		}

		// send: a device below the level gets no key for what the bridge sends.
		st.cfg.Encryption.Verification.Receive = "unverified"
		st.cfg.Encryption.Verification.Send = "cross-signed-tofu"
		st.restart(ctx)
		third := id.RoomID(str(phone.must("createRoom", map[string]any{"name": "Send level", "encrypted": true,
			"invite": []string{string(st.bot)}}), "roomId"))
		phone.must("waitJoined", map[string]any{"roomId": third, "userId": st.bot, "timeoutMs": 60000})
		raisePower(ctx, t, alice, third, st.bot)
		phone.must("send", map[string]any{"roomId": third, "body": "!lm link"})
		waitLink(ctx, t, st, third)
		got := phone.must("waitUndecryptableFrom", map[string]any{"roomId": third, "sender": st.bot, "timeoutMs": 60000})
		if !strings.Contains(str(got, "reason"), "WITHHELD") {
			t.Errorf("the bot's answer on a device below the send level: %v, want its key withheld", got)
		}
	})
}

// linkEncryptedRoom has alice's device create an encrypted room with the bot, link it, and bring bob of LM in.
func linkEncryptedRoom(ctx context.Context, t *testing.T, st *encStack, c *jsClient, alice *mautrix.Client, name, bob string) (id.RoomID, *bridgedb.Link) {
	t.Helper()
	room := id.RoomID(str(c.must("createRoom", map[string]any{"name": name, "encrypted": true,
		"invite": []string{string(st.bot)}}), "roomId"))
	c.must("waitJoined", map[string]any{"roomId": room, "userId": st.bot, "timeoutMs": 60000})
	raisePower(ctx, t, alice, room, st.bot)
	c.must("send", map[string]any{"roomId": room, "body": "!lm link"})
	link := waitLink(ctx, t, st, room)
	ghost, _ := st.users.GhostOf(bob)
	c.must("invite", map[string]any{"roomId": room, "userId": ghost})
	peerJoin(ctx, t, st, link, bob)
	c.must("waitJoined", map[string]any{"roomId": room, "userId": ghost, "timeoutMs": 60000})
	return room, link
}

// testEncryptedResend is TestAbandonedSendIsNotRepeated in an encrypted room: the event of an abandoned send is
// m.room.encrypted, and the resend look-up finds it by the marker in its clear part.
func testEncryptedResend(ctx context.Context, t *testing.T, st *encStack, alice *mautrix.Client, c *jsClient, room id.RoomID, ghostID id.UserID) {
	ghost, err := st.as.Ghost(ghostID)
	if err != nil {
		t.Fatal(err)
	}
	// A send first, so that the room's session is shared and the abandoned one needs the homeserver only for itself.
	if _, err = ghost.SendMessage(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "warm up"}, time.Time{}, "$warm"); err != nil {
		t.Fatal(err)
	}
	const key, body = "$lm-abandoned-encrypted", "sent once, encrypted"
	txnID := appservice.TxnID(ghostID, room, key)
	content := map[string]any{"msgtype": "m.text", "body": body}
	if err = st.hs.Pause(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, time.Second)
	_, err = ghost.SendMessage(short, room, event.EventMessage, content, time.Time{}, key)
	cancel()
	if rerr := st.hs.Resume(); rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil {
		t.Fatal("a send to a frozen homeserver succeeded")
	}
	waitUntil(t, 10*time.Second, "the homeserver to answer again", func() bool {
		_, err := alice.JoinedMembers(ctx, room)
		return err == nil
	})
	time.Sleep(time.Second)
	withMarker := func() []*event.Event {
		var out []*event.Event
		for _, evt := range roomTimeline(ctx, t, alice, room) {
			if v, _ := evt.Content.Raw[appservice.TxnMarkerKey].(string); v == txnID {
				out = append(out, evt)
			}
		}
		return out
	}
	if len(withMarker()) == 0 {
		// The abandoned request made no event: make it as it would have, encrypted with the marker in clear, under
		// another transaction ID.
		marked := map[string]any{"msgtype": "m.text", "body": body, appservice.TxnMarkerKey: txnID}
		enc, err := st.crypto.Encrypt(ctx, room, event.EventMessage, marked)
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(enc)
		if err != nil {
			t.Fatal(err)
		}
		var wire map[string]any
		if err = json.Unmarshal(data, &wire); err != nil {
			t.Fatal(err)
		}
		wire[appservice.TxnMarkerKey] = txnID
		if _, err = ghost.SendMessageEvent(ctx, room, event.EventEncrypted, wire, mautrix.ReqSendEvent{TransactionID: "elsewhere"}); err != nil {
			t.Fatal(err)
		}
		t.Log("the abandoned request made no event; made it under another transaction ID")
	} else {
		t.Log("the abandoned request made its event")
	}
	again, err := ghost.SendMessage(ctx, room, event.EventMessage, content, time.Time{}, key)
	if err != nil {
		t.Fatalf("second send: %v", err)
	}
	copies := withMarker()
	if len(copies) != 1 {
		t.Fatalf("the room holds %d events of the send, want 1", len(copies))
	}
	if copies[0].Type != event.EventEncrypted || again != copies[0].ID {
		t.Errorf("the send's event is %s %s, and the second send answered %s", copies[0].Type.Type, copies[0].ID, again)
	}
	got := c.must("waitMessage", map[string]any{"roomId": room, "body": body, "timeoutMs": 60000})
	if got["eventId"] != string(copies[0].ID) {
		t.Errorf("alice's device read %v, want event %s", got, copies[0].ID)
	}
}

// waitBotKnowsDevice waits until the bot's device has heard of a device of user.
func waitBotKnowsDevice(ctx context.Context, t *testing.T, st *encStack, user id.UserID, device string) {
	t.Helper()
	waitUntil(t, 60*time.Second, "the bot's device to know "+device, func() bool {
		var n int
		err := st.db.QueryRow(ctx, "SELECT COUNT(*) FROM crypto_device WHERE user_id=$1 AND device_id=$2", user, device).Scan(&n)
		return err == nil && n == 1
	})
}

// waitLog waits for a log line of lmbridge's with msg that mentions about.
func waitLog(t *testing.T, logs *lockedBuffer, msg, about string) {
	t.Helper()
	waitUntil(t, 60*time.Second, "the log line "+msg, func() bool {
		for line := range strings.SplitSeq(logs.String(), "\n") {
			if strings.Contains(line, msg) && strings.Contains(line, about) {
				return true
			}
		}
		return false
	})
}
