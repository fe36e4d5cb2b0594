package linearize

import (
	"encoding/json"
	"testing"

	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/store"
)

// TestSendDuringJoinIsKept checks that a transaction for a room whose join is still in progress is answered at once,
// with no failed PDU, and its PDU kept (not appended) for when the join completes. It used to be answered 503 with
// a request to retry, which held eigen's send_join (eigen sends the join to us before it answers) until we gave up.
func TestSendDuringJoinIsKept(t *testing.T) {
	ctx := testContext(t)
	hub := newHTTPNode(t, nil)
	part := newHTTPNode(t, nil)
	roomID := must(hub.eng.CreateRoom(ctx, userAt("alice", hub.name), nil))
	evs := must(hub.eng.Events(ctx, roomID, 0, 1))
	info := &RoomInfo{RoomID: roomID, RoomVersion: DefaultRoomVersion, HubServer: hub.name, Role: RoleParticipant, Status: store.StatusJoining}
	if err := part.eng.store.PutRoom(ctx, info, 0); err != nil {
		t.Fatal(err)
	}
	resp, err := part.eng.Federation().Send(ctx, hub.name, "txn1", &federation.Transaction{PDUs: []json.RawMessage{evs[0].PDU}})
	if err != nil || len(resp.FailedPDUs) != 0 {
		t.Fatalf("send during the join: %+v, %v; want an answer with no failed PDU", resp, err)
	}
	var kept int
	if err = part.db.QueryRow(ctx, `SELECT COUNT(*) FROM lm_join_pending WHERE room_id=$1 AND event_id=$2`, roomID, evs[0].EventID).
		Scan(&kept); err != nil || kept != 1 {
		t.Fatalf("kept %d rows of the PDU (%v), want 1", kept, err)
	}
	if n := len(logIDs(t, part, roomID)); n != 0 {
		t.Fatalf("the log holds %d events before the join completed", n)
	}
}
