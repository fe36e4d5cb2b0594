package linearize

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/remote"
)

// TestSeamErrorsMatchTheSeamsSentinels checks that the engine's failures, through remote.Rooms, match the seam's
// sentinels the bridge classifies by, and keep their own messages and errors.
func TestSeamErrorsMatchTheSeamsSentinels(t *testing.T) {
	ctx := testContext(t)
	var net directNet
	hub := net.newNode(t, "hub.example")
	alice, bob := userAt("alice", hub.name), userAt("bob", hub.name)
	rooms := remote.Rooms(hub.eng)
	roomID := must(rooms.NewRoom(ctx, remote.UserID(alice), nil))

	_, err := rooms.SendRoomEvent(ctx, &remote.SendRequest{Room: roomID, Sender: remote.UserID(bob), Type: "m.room.message",
		Content: text("not joined")})
	if !errors.Is(err, remote.ErrForbidden) || !errors.Is(err, ErrForbidden) {
		t.Errorf("a send by a non-member: %v, want remote.ErrForbidden and ErrForbidden", err)
	}
	_, err = rooms.SendRoomEvent(ctx, &remote.SendRequest{Room: "!nowhere:hub.example", Sender: remote.UserID(alice),
		Type: "m.room.message", Content: text("lost")})
	if !errors.Is(err, remote.ErrNotFound) || !errors.Is(err, ErrUnknownRoom) || err.Error() != "unknown room !nowhere:hub.example" {
		t.Errorf("a send into an unknown room: %v, want remote.ErrNotFound with the engine's message", err)
	}
	_, err = rooms.SendRoomEvent(ctx, &remote.SendRequest{Room: roomID, Sender: "@carol:elsewhere.example",
		Type: "m.room.message", Content: text("not ours")})
	if !errors.Is(err, remote.ErrNotOurUser) {
		t.Errorf("a send as another server's user: %v, want remote.ErrNotOurUser", err)
	}
	if _, err = rooms.NewRoom(ctx, "@carol:elsewhere.example", nil); !errors.Is(err, remote.ErrNotOurUser) {
		t.Errorf("a room created by another server's user: %v, want remote.ErrNotOurUser", err)
	}
	evtID := must(rooms.SendRoomEvent(ctx, &remote.SendRequest{Room: roomID, Sender: remote.UserID(alice),
		Type: "m.room.message", Content: text("hello"), Key: "k1"}))
	again := must(rooms.SendRoomEvent(ctx, &remote.SendRequest{Room: roomID, Sender: remote.UserID(alice),
		Type: "m.room.message", Content: text("hello again"), Key: "k1"}))
	if again != evtID {
		t.Errorf("a repeated key sent %s after %s", again, evtID)
	}
	ev := must(rooms.RoomEvent(ctx, evtID))
	if ev == nil || ev.EventID != string(evtID) || ev.Sender != alice || string(ev.Content) != `{"body":"hello","msgtype":"m.text"}` {
		t.Errorf("RoomEvent(%s) = %+v", evtID, ev)
	}
	if ev := must(rooms.RoomEvent(ctx, "$missing")); ev != nil {
		t.Errorf("RoomEvent of a missing event = %+v, want nil", ev)
	}

	fedErr := fmt.Errorf("failed to send_join: %w", &federation.Error{Status: http.StatusForbidden, ErrCode: "M_FORBIDDEN", Message: "no"})
	var peerErr *remote.PeerError
	if mapped := seamError(fedErr); !errors.As(mapped, &peerErr) || peerErr.Status != http.StatusForbidden ||
		peerErr.Code != "M_FORBIDDEN" || mapped.Error() != fedErr.Error() {
		t.Errorf("a federation refusal became %v (%+v)", mapped, peerErr)
	}
	if mapped := seamError(fmt.Errorf("dial: %w", federation.ErrBlockedAddress)); !errors.Is(mapped, remote.ErrBlocked) {
		t.Errorf("a blocked address became %v, want remote.ErrBlocked", mapped)
	}
	if mapped := seamError(fmt.Errorf("%w: bad template", ErrBadRemoteAnswer)); !errors.Is(mapped, remote.ErrBadAnswer) {
		t.Errorf("a bad answer became %v, want remote.ErrBadAnswer", mapped)
	}
	plain := errors.New("disk full")
	if seamError(plain) != plain {
		t.Error("an error of no seam sentinel was wrapped")
	}
}
