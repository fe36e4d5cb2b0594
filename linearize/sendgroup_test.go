package linearize

import (
	"errors"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// TestSendGroupCommitsTogether hands the engine a group of queued sends at once, as concurrent SendEventKeyed calls
// would: a repeated key within the group sends once, a bad request fails alone, and the hub gets every LPDU once.
func TestSendGroupCommitsTogether(t *testing.T) {
	ctx := testContext(t)
	hub := newHTTPNode(t, nil)
	part := newHTTPNode(t, nil)
	roomID, _, bob := joinedPair(t, hub, part)

	newReq := func(room, body, key string) *sendRequest {
		p := &pdu.PDU{RoomID: room, Type: "m.room.message", Sender: bob, OriginServerTS: time.Now().UnixMilli()}
		if err := p.SetContent(text(body)); err != nil {
			t.Fatal(err)
		}
		return &sendRequest{ctx: ctx, p: p, key: key}
	}
	keyed := newReq(roomID, "keyed", "$dag1")
	keyedAgain := newReq(roomID, "keyed, redelivered", "$dag1")
	unknown := newReq("!nowhere:"+hub.name, "lost", "")
	plain := newReq(roomID, "plain", "")
	reqs := []*sendRequest{keyed, keyedAgain, unknown, plain}
	part.eng.writeLock.Lock()
	part.eng.sendQueued(reqs)
	part.eng.writeLock.Unlock()

	if keyed.err != nil || plain.err != nil || keyedAgain.err != nil {
		t.Fatalf("errors: keyed %v, repeated %v, plain %v", keyed.err, keyedAgain.err, plain.err)
	}
	if keyedAgain.id != keyed.id {
		t.Fatalf("repeated key in one group gave %s, first gave %s", keyedAgain.id, keyed.id)
	}
	if plain.id == "" || plain.id == keyed.id {
		t.Fatalf("unkeyed send got ID %q (keyed: %s)", plain.id, keyed.id)
	}
	if !errors.Is(unknown.err, ErrUnknownRoom) || unknown.id != "" {
		t.Fatalf("send to an unknown room: ID %q, error %v, want ErrUnknownRoom", unknown.id, unknown.err)
	}
	if again := must(part.eng.SendEventKeyed(ctx, roomID, bob, "m.room.message", nil, text("keyed"), time.Time{}, "$dag1")); again != keyed.id {
		t.Fatalf("key sent in a group: a later send gave %s, want %s", again, keyed.id)
	}
	hub.rec.waitFor(t, "both LPDUs at the hub", func() bool {
		counts := map[string]int{}
		for _, ev := range must(hub.eng.Events(ctx, roomID, 0, 1000)) {
			counts[ev.LPDUID]++
		}
		if counts[keyed.id] > 1 || counts[plain.id] > 1 {
			t.Fatalf("hub appended the keyed LPDU %d times and the plain one %d times", counts[keyed.id], counts[plain.id])
		}
		return counts[keyed.id] == 1 && counts[plain.id] == 1
	})
}
