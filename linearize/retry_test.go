package linearize

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/lmbridge/lmbridge/linearize/federation"
)

// TestSendDuringJoinAsksForRetry checks that a transaction for a room whose join is still in progress is answered
// 503 with a message that names the room and says to retry, not a bare internal error.
func TestSendDuringJoinAsksForRetry(t *testing.T) {
	ctx := testContext(t)
	hub := newHTTPNode(t, nil)
	part := newHTTPNode(t, nil)
	roomID := must(hub.eng.CreateRoom(ctx, userAt("alice", hub.name), nil))
	evs := must(hub.eng.Events(ctx, roomID, 0, 1))
	info := &RoomInfo{RoomID: roomID, RoomVersion: DefaultRoomVersion, HubServer: hub.name, Role: RoleParticipant, status: statusJoining}
	if err := part.eng.store.putRoom(ctx, info, 0); err != nil {
		t.Fatal(err)
	}
	_, err := part.eng.Send(ctx, hub.name, "txn1", &federation.Transaction{PDUs: []json.RawMessage{evs[0].PDU}})
	var fe *federation.Error
	if !errors.As(err, &fe) {
		t.Fatalf("got %v, want a *federation.Error", err)
	}
	if fe.Status != http.StatusServiceUnavailable || fe.ErrCode != federation.ErrCodeUnknown ||
		!strings.Contains(fe.Message, "Join in progress") || !strings.Contains(fe.Message, roomID) ||
		!strings.Contains(fe.Message, "retry") {
		t.Fatalf("got %d %s %q, want 503 M_UNKNOWN saying the join of %s is in progress", fe.Status, fe.ErrCode, fe.Message, roomID)
	}
}
