package e2e

import (
	"context"
	"maps"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/internal/tesths"
)

// TestAbandonedSendIsNotRepeated is a ghost's message whose request was abandoned, as when lmbridge dies mid-request
// or its request times out: the homeserver is frozen past the client's deadline. The homeserver may still create the
// event, and Dendrite then forgets the transaction ID (its cache only keeps answers a client was still waiting for),
// so the same transaction ID sent again made a second event. Sent again under the same key, the message must be
// there once, and the second send must answer with its event.
func TestAbandonedSendIsNotRepeated(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		ctx := testContext(t)
		b := newLMBridge(t, tesths.DefaultServerName)
		hs := tesths.StartT(t, kind, tesths.Options{ServerName: b.ServerName, Registrations: [][]byte{b.RegYAML}})
		// lmbridge's process is not needed: the test is its ghost, through the appservice package.
		as := appserviceFor(ctx, t, b, hs)
		alice := hs.RegisterUserT(t, "alice", "alice-password", false)
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		ghostID, err := as.GhostUserID("bob=lm.test")
		if err != nil {
			t.Fatal(err)
		}
		ghost, err := as.Ghost(ghostID)
		if err != nil {
			t.Fatal(err)
		}
		if err = ghost.SetProfile(ctx, "Bob (LM)", id.ContentURI{}); err != nil {
			t.Fatal(err)
		}
		if err = ghost.Join(ctx, room); err != nil {
			t.Fatal(err)
		}
		const key, body = "$lm-abandoned", "sent once"
		content := map[string]any{"msgtype": "m.text", "body": body}

		if err = hs.Pause(); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, time.Second)
		_, err = ghost.SendMessage(short, room, event.EventMessage, content, time.Time{}, key)
		cancel()
		if rerr := hs.Resume(); rerr != nil {
			t.Fatal(rerr)
		}
		if err == nil {
			t.Fatal("a send to a frozen homeserver succeeded")
		}
		// Whether the abandoned request made its event is the homeserver's race. If it did not, make the event as it
		// would have, under another transaction ID, so that no cache of the homeserver knows it.
		var copies []*event.Event
		waitUntil(t, 10*time.Second, "the homeserver to answer again", func() bool {
			_, err := alice.JoinedMembers(ctx, room)
			return err == nil
		})
		time.Sleep(time.Second)
		if copies = eventsWithBody(ctx, t, alice, room, body); len(copies) == 0 {
			abandoned := maps.Clone(content)
			abandoned[appservice.TxnMarkerKey] = appservice.TxnID(ghostID, room, key)
			if _, err = ghost.SendMessageEvent(ctx, room, event.EventMessage, abandoned, mautrix.ReqSendEvent{TransactionID: "elsewhere"}); err != nil {
				t.Fatal(err)
			}
			t.Log("the abandoned request made no event; made it under another transaction ID")
		} else {
			t.Logf("the abandoned request made its event %s", copies[0].ID)
		}

		again, err := ghost.SendMessage(ctx, room, event.EventMessage, content, time.Time{}, key)
		if err != nil {
			t.Fatalf("second send: %v", err)
		}
		copies = eventsWithBody(ctx, t, alice, room, body)
		if len(copies) != 1 {
			t.Fatalf("the room holds %d copies of the message, want 1", len(copies))
		}
		if again != copies[0].ID {
			t.Errorf("the second send answered %s, want the first attempt's %s", again, copies[0].ID)
		}
	})
}

func eventsWithBody(ctx context.Context, t *testing.T, client *mautrix.Client, room id.RoomID, body string) []*event.Event {
	t.Helper()
	var out []*event.Event
	for _, evt := range roomTimeline(ctx, t, client, room) {
		if evt.Type == event.EventMessage && bodyOf(evt) == body {
			out = append(out, evt)
		}
	}
	return out
}
