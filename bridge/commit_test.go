package bridge

import (
	"context"
	"errors"
	"testing"

	"maunium.net/go/mautrix/event"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/remote"
)

var errAfterMapping = errors.New("crash after the mapping row")

// failingCommitLM is the real engine whose send transaction fails after the bridge's function has written the
// mapping row, as a crash before the commit would leave it.
type failingCommitLM struct {
	remote.Rooms
	fail bool
}

func (f *failingCommitLM) SendRoomEvent(ctx context.Context, req *remote.SendRequest) (remote.EventID, error) {
	with := req.With
	failing := *req
	failing.With = func(ctx context.Context, eventID remote.EventID) error {
		if err := with(ctx, eventID); err != nil {
			return err
		}
		if f.fail {
			return errAfterMapping
		}
		return nil
	}
	return f.Rooms.SendRoomEvent(ctx, &failing)
}

// TestDAGMappingCommitsWithLMEvent checks that a DAG event's mapping row and its LM event commit together: when the
// engine's transaction fails after the mapping was written, neither the LM event nor the mapping is left, the event
// is offered again, and it then crosses once.
func TestDAGMappingCommitsWithLMEvent(t *testing.T) {
	tb, link, ctx := linkedHub(t)
	lm := &failingCommitLM{Rooms: tb.eng, fail: true}
	tb.lmProto.rooms = lm
	before, err := tb.eng.Events(ctx, link.LMRoomID, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	evt := mkEvent(dagRoom, "$atomic", alice, event.EventMessage, nil, map[string]any{"msgtype": "m.text", "body": "atomic"})
	if err = tb.HandleDAGEvent(ctx, evt); !errors.Is(err, errAfterMapping) {
		t.Fatalf("HandleDAGEvent with a failing commit returned %v, want it offered again", err)
	}
	if after, _ := tb.eng.Events(ctx, link.LMRoomID, 0, 1000); len(after) != len(before) {
		t.Fatalf("failed commit left %d LM events behind", len(after)-len(before))
	}
	if m, err := tb.DB().GetEventByDAG(ctx, evt.ID); err != nil || m != nil {
		t.Fatalf("failed commit left the mapping %+v (%v)", m, err)
	}
	if outcome, err := tb.DB().Processed(ctx, bridgedb.OriginDAG, evt.ID.String()); err != nil || outcome != "" {
		t.Fatalf("failed commit left the event processed as %q (%v)", outcome, err)
	}

	lm.fail = false
	first := sendDAG(t, tb, ctx, evt)
	after, _ := tb.eng.Events(ctx, link.LMRoomID, 0, 1000)
	if len(after) != len(before)+1 || after[len(after)-1].EventID != first {
		t.Fatalf("after the retry the LM log grew by %d and the mapping points to %q", len(after)-len(before), first)
	}
	if again := sendDAG(t, tb, ctx, evt); again != first {
		t.Fatalf("redelivery mapped to %q, want %q", again, first)
	}
	if again, _ := tb.eng.Events(ctx, link.LMRoomID, 0, 1000); len(again) != len(after) {
		t.Fatal("a redelivered event crossed again")
	}
}
