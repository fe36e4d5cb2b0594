package linearize

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// TestInviteThroughHub has a participant invite a user of a third server that is not in the room: the LPDU goes to
// the hub's /invite, the hub has the third server countersign it, and everyone then talks.
func TestInviteThroughHub(t *testing.T) {
	eachNet(t, func(t *testing.T, n network) {
		hub, p1, p2 := n.newNode(t, "hub.test"), n.newNode(t, "one.test"), n.newNode(t, "two.test")
		ctx := testContext(t)
		roomID, alice, bob := joinedPair(t, hub, p1)
		// Let bob invite (invite level 50 by default): alice raises him to 50.
		must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.power_levels", pdu.StringPtr(""), map[string]any{
			"users": map[string]int{alice: 100, bob: 50}, "invite": 50, "kick": 50, "ban": 50, "state_default": 50,
			"events": map[string]int{"m.room.power_levels": 100},
		}, time.Time{}))
		carol := userAt("carol", p2.name)
		inviteID := must(p1.eng.InviteUser(ctx, roomID, bob, carol))
		p2.rec.waitFor(t, "carol's invite", func() bool { return lastInvite(p2, roomID, carol) != nil })
		if inv := lastInvite(p2, roomID, carol); inv.EventID != inviteID || inv.Sender != bob || inv.HubServer != hub.name {
			t.Fatalf("carol's invite: %+v, want %s from %s through %s", inv, inviteID, bob, hub.name)
		}
		waitHead(t, p1, roomID, inviteID)
		joinID := must(p2.eng.Join(ctx, roomID, carol, hub.name))
		waitHead(t, p1, roomID, joinID)
		msg := must(p2.eng.SendEvent(ctx, roomID, carol, "m.room.message", nil, text("hi all"), time.Time{}))
		var msgID string
		p1.rec.waitFor(t, "carol's message at bob's server", func() bool {
			for _, ev := range p1.rec.roomEvents(roomID) {
				if ev.LPDUID == msg {
					msgID = ev.EventID
					return true
				}
			}
			return false
		})
		waitHead(t, p2, roomID, msgID)
		checkMirror(t, hub, p1, roomID, nil)
		checkMirror(t, hub, p2, roomID, nil)
	})
}

// TestGapFilledByBackfill drops fan-out rows at the hub while the participant is away, so the next event it gets
// names a prev event it never saw: it must fetch the missing events through backfill and append them in order.
func TestGapFilledByBackfill(t *testing.T) {
	eachNet(t, func(t *testing.T, n network) {
		hub, part := n.newNode(t, "hub.test"), n.newNode(t, "part.test")
		ctx := testContext(t)
		roomID, alice, _ := joinedPair(t, hub, part)
		waitListener(t, part, roomID)
		seen := part.rec.roomEvents(roomID)
		n.stop(t, part)
		var last string
		for i := 0; i < 150; i++ {
			last = must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text(fmt.Sprintf("m%d", i)), time.Time{}))
		}
		// Lose all but the last queued event for the participant.
		if _, err := hub.db.Exec(ctx, `DELETE FROM lm_outbox WHERE destination=$1 AND seq<(SELECT MAX(seq) FROM lm_outbox WHERE destination=$1)`, part.name); err != nil {
			t.Fatal(err)
		}
		n.start(t, part)
		waitHead(t, part, roomID, last)
		waitListener(t, part, roomID)
		checkMirror(t, hub, part, roomID, append(seen, part.rec.roomEvents(roomID)...))
		if got := len(logIDs(t, part, roomID)); got != len(seen)+150 {
			t.Fatalf("participant holds %d events, want %d", got, len(seen)+150)
		}
	})
}

// TestHubReadEndpoints asks the hub over HTTP for an event, the state and state IDs before it, and backfill, as a
// participant's federation client does, and a participant for the same (M_WRONG_SERVER).
func TestHubReadEndpoints(t *testing.T) {
	n := httpNet{}
	hub, part := n.newNode(t, ""), n.newNode(t, "")
	ctx := testContext(t)
	roomID, alice, _ := joinedPair(t, hub, part)
	msg := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("read me"), time.Time{}))
	client := federation.NewClient(part.name, part.key, federation.ClientOptions{AllowHTTPPeers: true})
	hubLog := logIDs(t, hub, roomID)

	raw := must(client.GetEvent(ctx, hub.name, msg))
	if got := must(must(pdu.Parse(raw)).EventID()); got != msg {
		t.Fatalf("event %s came back as %s", msg, got)
	}
	ids := must(client.StateIDs(ctx, hub.name, roomID, msg))
	state := must(client.State(ctx, hub.name, roomID, msg))
	if len(ids.PDUIDs) != len(state.PDUs) || len(ids.PDUIDs) < 6 || len(state.AuthChain) == 0 {
		t.Fatalf("state before %s: %d IDs, %d events, %d auth chain", msg, len(ids.PDUIDs), len(state.PDUs), len(state.AuthChain))
	}
	for _, id := range ids.PDUIDs {
		if !slices.Contains(hubLog, id) || id == msg {
			t.Fatalf("state ID %s is not an earlier event of the log", id)
		}
	}
	back := must(client.Backfill(ctx, hub.name, roomID, []string{msg}, 3))
	var backIDs []string
	for _, r := range back.PDUs {
		backIDs = append(backIDs, must(must(pdu.Parse(r)).EventID()))
	}
	if !slices.Equal(backIDs, hubLog[len(hubLog)-3:]) {
		t.Fatalf("backfill %v, want the last three of %v, oldest first", backIDs, hubLog)
	}
	var fe *federation.Error
	if _, err := client.GetEvent(ctx, hub.name, "$nothing"); !errors.As(err, &fe) || fe.Status != http.StatusNotFound {
		t.Fatalf("unknown event: %v", err)
	}
	hubClient := federation.NewClient(hub.name, hub.key, federation.ClientOptions{AllowHTTPPeers: true})
	if _, err := hubClient.State(ctx, part.name, roomID, msg); !errors.As(err, &fe) || fe.ErrCode != federation.ErrCodeWrongServer {
		t.Fatalf("state at a participant: %v, want M_WRONG_SERVER", err)
	}
	stranger := newHTTPNode(t, nil)
	strangerClient := federation.NewClient(stranger.name, stranger.key, federation.ClientOptions{AllowHTTPPeers: true})
	if _, err := strangerClient.GetEvent(ctx, hub.name, msg); !errors.As(err, &fe) || fe.Status != http.StatusNotFound {
		t.Fatalf("a server with no member in the room read an event: %v", err)
	}
}

// TestOversizeEventRefused checks that an event over the draft's 65,536 bytes is refused before it is appended or
// sent, on the hub and on a participant, with pdu.ErrEventTooLarge.
func TestOversizeEventRefused(t *testing.T) {
	var n directNet
	hub, part := n.newNode(t, "hub.test"), n.newNode(t, "part.test")
	ctx := testContext(t)
	roomID, alice, bob := joinedPair(t, hub, part)
	before := len(logIDs(t, hub, roomID))
	huge := text(string(make([]byte, pdu.MaxEventBytes)))
	if _, err := hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, huge, time.Time{}); !errors.Is(err, pdu.ErrEventTooLarge) {
		t.Fatalf("hub-local oversize event: %v", err)
	}
	if _, err := part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, huge, time.Time{}); !errors.Is(err, pdu.ErrEventTooLarge) {
		t.Fatalf("oversize LPDU: %v", err)
	}
	if got := len(logIDs(t, hub, roomID)); got != before {
		t.Fatalf("log grew from %d to %d", before, got)
	}
}

// TestTransactionRefusedForGood has the hub answer a participant's transaction 400 M_BAD_JSON: the participant drops
// it instead of retrying forever, tells its listener the LPDU failed, and later LPDUs still go through.
func TestTransactionRefusedForGood(t *testing.T) {
	n := &directNet{}
	hub, part := n.newNode(t, "hub.test"), n.newNode(t, "part.test")
	ctx := testContext(t)
	roomID, _, bob := joinedPair(t, hub, part)
	var refuse sync.Once
	var refusing atomic.Bool
	refusing.Store(true)
	n.lock.Lock()
	n.refuse = func(origin, dest string) error {
		if origin == part.name && dest == hub.name && refusing.Load() {
			refuse.Do(func() { refusing.Store(false) })
			return federation.Errorf(http.StatusBadRequest, federation.ErrCodeBadJSON, "no")
		}
		return nil
	}
	n.lock.Unlock()
	bad := must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text("refused"), time.Time{}))
	part.rec.waitFor(t, "the refusal at the listener", func() bool {
		part.rec.lock.Lock()
		defer part.rec.lock.Unlock()
		return part.rec.failed[bad] != ""
	})
	good := must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text("accepted"), time.Time{}))
	part.rec.waitFor(t, "the next LPDU's echo", func() bool {
		evs := part.rec.roomEvents(roomID)
		return len(evs) > 0 && evs[len(evs)-1].LPDUID == good
	})
	for _, ev := range part.rec.roomEvents(roomID) {
		if ev.LPDUID == bad {
			t.Fatalf("the refused LPDU was appended")
		}
	}
}

// TestParticipantKeepsRedactedCopyOnHashMismatch sends the participant a PDU from the hub whose content was changed
// after signing: the signatures (over the redacted event) hold, the content hash does not, so §5.1 says keep the
// redacted copy, under the same event ID.
func TestParticipantKeepsRedactedCopyOnHashMismatch(t *testing.T) {
	var n directNet
	hub, part := n.newNode(t, "hub.test"), n.newNode(t, "part.test")
	ctx := testContext(t)
	roomID, alice, _ := joinedPair(t, hub, part)
	hub.eng.writeLock.Lock()
	rs := must(hub.eng.loadRoom(ctx, roomID))
	p := &pdu.PDU{RoomID: roomID, Type: "m.room.message", Sender: alice, OriginServerTS: time.Now().UnixMilli()}
	if err := p.SetContent(text("original")); err != nil {
		t.Fatal(err)
	}
	p.AuthEvents = selectAuthEvents(p, rs)
	eventID := must(p.Complete(p.AuthEvents, rs.headID(), hub.name, string(hub.key.ID), hub.key.Priv))
	hub.eng.writeLock.Unlock()
	if err := p.SetContent(text("tampered")); err != nil {
		t.Fatal(err)
	}
	raw := must(p.Canonical())
	// The hub's own outbox may have a transaction in flight to the participant: wait for our turn.
	var resp *federation.SendResponse
	var err error
	for i := 0; i < 100; i++ {
		if resp, err = part.eng.Federation().Send(ctx, hub.name, "tampered", &federation.Transaction{PDUs: []json.RawMessage{raw}}); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.FailedPDUs) != 0 {
		t.Fatalf("tampered PDU refused: %+v", resp.FailedPDUs)
	}
	stored := must(part.eng.GetEventByID(ctx, eventID))
	if stored == nil || stored.Index < 1 {
		t.Fatalf("the redacted copy of %s was not appended", eventID)
	}
	kept := must(pdu.Parse(stored.PDU))
	if string(kept.Content) != "{}" {
		t.Fatalf("kept content %s, want the redacted {}", kept.Content)
	}
}
