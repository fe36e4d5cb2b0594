package linearize

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

var errCallerTest = errors.New("caller refused")

// TestSendEventKeyedWithCommitsTogether checks that the caller's rows written in SendEventKeyedWith's function commit
// with the send or not at all: as hub (the appended event) and as participant (the queued LPDU, where one function
// failing in a group of concurrent sends fails only its own call).
func TestSendEventKeyedWithCommitsTogether(t *testing.T) {
	ctx := testContext(t)
	hub := newHTTPNode(t, nil)
	part := newHTTPNode(t, nil)
	roomID, alice, bob := joinedPair(t, hub, part)
	for _, nd := range []*node{hub, part} {
		must(nd.db.Exec(ctx, `CREATE TABLE caller_row (event_id TEXT PRIMARY KEY)`))
	}
	callerRows := func(nd *node) []string {
		rows := must(nd.db.Query(ctx, `SELECT event_id FROM caller_row ORDER BY event_id`))
		defer rows.Close()
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	record := func(nd *node, fail bool, seen *string) func(ctx context.Context, eventID string) error {
		return func(ctx context.Context, eventID string) error {
			*seen = eventID
			if _, err := nd.db.Exec(ctx, `INSERT INTO caller_row (event_id) VALUES ($1)`, eventID); err != nil {
				return err
			}
			if fail {
				return errCallerTest
			}
			return nil
		}
	}

	// As hub: a refusing function leaves neither the event, nor its key, nor the function's row.
	before := logIDs(t, hub, roomID)
	var refusedID string
	_, err := hub.eng.SendEventKeyedWith(ctx, roomID, alice, "m.room.message", nil, text("one"), time.Time{}, "$dag1", record(hub, true, &refusedID))
	if !errors.Is(err, errCallerTest) {
		t.Fatalf("hub: send with a refusing function returned %v, want its error", err)
	}
	if after := logIDs(t, hub, roomID); len(after) != len(before) || slices.Contains(after, refusedID) {
		t.Fatalf("hub: refused send left %d events in the log (had %d)", len(after), len(before))
	}
	if rows := callerRows(hub); len(rows) != 0 {
		t.Fatalf("hub: refused send left the caller's rows %v", rows)
	}
	var seen string
	first := must(hub.eng.SendEventKeyedWith(ctx, roomID, alice, "m.room.message", nil, text("one"), time.Time{}, "$dag1", record(hub, false, &seen)))
	if seen != first {
		t.Fatalf("hub: function saw %s, send returned %s", seen, first)
	}
	if after := logIDs(t, hub, roomID); len(after) != len(before)+1 || after[len(after)-1] != first {
		t.Fatalf("hub: log has %d events ending with %s, want %d ending with %s", len(after), after[len(after)-1], len(before)+1, first)
	}
	seen = ""
	if again := must(hub.eng.SendEventKeyedWith(ctx, roomID, alice, "m.room.message", nil, text("one"), time.Time{}, "$dag1", func(ctx context.Context, eventID string) error {
		seen = eventID
		return nil
	})); again != first || seen != first {
		t.Fatalf("hub: repeated key returned %s and ran the function with %q, want %s for both", again, seen, first)
	}
	if rows := callerRows(hub); !slices.Equal(rows, []string{first}) {
		t.Fatalf("hub: caller's rows %v, want [%s]", rows, first)
	}

	// As participant, three sends queued together; the middle one's function refuses.
	newReq := func(body, key string, with func(ctx context.Context, eventID string) error) *sendRequest {
		p := &pdu.PDU{RoomID: roomID, Type: "m.room.message", Sender: bob, OriginServerTS: time.Now().UnixMilli()}
		if err := p.SetContent(text(body)); err != nil {
			t.Fatal(err)
		}
		return &sendRequest{ctx: ctx, p: p, key: key, with: with}
	}
	var seenA, seenB, seenC string
	a := newReq("a", "$a", record(part, false, &seenA))
	b := newReq("b", "$b", record(part, true, &seenB))
	c := newReq("c", "", record(part, false, &seenC))
	part.eng.writeLock.Lock()
	part.eng.sendQueued([]*sendRequest{a, b, c})
	part.eng.writeLock.Unlock()
	if a.err != nil || c.err != nil || a.id != seenA || c.id != seenC || a.id == "" || c.id == "" {
		t.Fatalf("participant: a %q %v (function saw %q), c %q %v (function saw %q)", a.id, a.err, seenA, c.id, c.err, seenC)
	}
	if !errors.Is(b.err, errCallerTest) || b.id != "" || seenB == "" {
		t.Fatalf("participant: refused send returned %q, %v", b.id, b.err)
	}
	want := []string{a.id, c.id}
	slices.Sort(want)
	if rows := callerRows(part); !slices.Equal(rows, want) {
		t.Fatalf("participant: caller's rows %v, want %v", rows, want)
	}
	// The refused send's key was not stored: sending it again queues a new LPDU.
	// A later origin_server_ts than b's: the same content in the same millisecond would be the very same LPDU.
	retried := must(part.eng.SendEventKeyedWith(ctx, roomID, bob, "m.room.message", nil, text("b"),
		time.UnixMilli(b.p.OriginServerTS+1), "$b", nil))
	if retried == seenB {
		t.Fatalf("the retried send has the refused LPDU's ID %s", seenB)
	}
	hub.rec.waitFor(t, "the LPDUs at the hub", func() bool {
		got := map[string]bool{}
		for _, ev := range must(hub.eng.Events(ctx, roomID, 0, 1000)) {
			got[ev.LPDUID] = true
		}
		if got[seenB] {
			t.Fatalf("hub appended the refused LPDU %s", seenB)
		}
		return got[a.id] && got[c.id] && got[retried]
	})
}
