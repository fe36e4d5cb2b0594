package bridge

import (
	"context"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/remote"
)

// joinThenMessage is the LM side with a hub message sent, and delivered to the bridge, after a portal user's join is
// stored and before JoinRoom returns: the window in which the link is not active yet.
type joinThenMessage struct {
	remote.Rooms
	send func(ctx context.Context) error
}

func (j *joinThenMessage) JoinRoom(ctx context.Context, req *remote.MembershipRequest) (remote.EventID, error) {
	evtID, err := j.Rooms.JoinRoom(ctx, req)
	if err == nil {
		err = j.send(ctx)
	}
	return evtID, err
}

// seenListener tells when the bridge has been offered an event with a given body.
type seenListener struct {
	remote.Listener
	body string
	once sync.Once
	seen chan struct{}
}

func (s *seenListener) OnEvent(ctx context.Context, ev *remote.Event) error {
	if c, err := parseContent(ev.Content); err == nil && c["body"] == s.body {
		s.once.Do(func() { close(s.seen) })
	}
	return s.Listener.OnEvent(ctx, ev)
}

// TestPortalMessageDuringJoinIsBridged: an LM message the hub sends right after a portal user's join reaches the
// bridge before the link is marked active; it is bridged into the portal, not skipped as an unlinked room's.
func TestPortalMessageDuringJoinIsBridged(t *testing.T) {
	ctx := testContext(t)
	ts := newTwoServers(t, ctx)
	roomID, err := ts.remote.CreateRoom(ctx, ts.bob, nil)
	if err != nil {
		t.Fatal(err)
	}
	const body = "sent as the join lands"
	seen := &seenListener{Listener: ts.br, body: body, seen: make(chan struct{})}
	ts.fwd.set(seen)
	ts.br.lm = &joinThenMessage{Rooms: ts.ours, send: func(ctx context.Context) error {
		if _, err := ts.remote.SendEvent(ctx, roomID, ts.bob, "m.room.message", nil,
			map[string]any{"msgtype": "m.text", "body": body}, time.Time{}); err != nil {
			return err
		}
		select {
		case <-seen.seen:
			return nil
		case <-time.After(20 * time.Second):
			t.Error("the bridge was not offered the message before the join returned")
			return nil
		}
	}}
	if _, err = ts.remote.InviteUser(ctx, roomID, ts.bob, ts.alice); err != nil {
		t.Fatal(err)
	}
	var portal id.RoomID
	eventually(t, "the portal link", func() bool {
		l, _ := ts.br.DB().GetLinkByLMRoom(ctx, roomID)
		if l != nil {
			portal = l.DAGRoomID
		}
		return l != nil && l.Status == bridgedb.LinkPendingJoin
	})
	join := mkEvent(portal, "$aliceportal", alice, event.StateMember, sk(string(alice)), map[string]any{"membership": "join"})
	if err = ts.br.HandleDAGEvent(ctx, join); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the message in the portal", func() bool {
		for _, c := range ts.mx.callsOf("message") {
			if c.RoomID == portal && c.Sender == ts.ghost && c.Content["body"] == body {
				return true
			}
		}
		return false
	})
}
