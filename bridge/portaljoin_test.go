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
	once sync.Once
	send func(ctx context.Context) error
}

// JoinRoom sends the message after the first join only: the other Matrix members' joins that follow a link must not
// send another copy, which would cross whether or not the first was lost.
func (j *joinThenMessage) JoinRoom(ctx context.Context, req *remote.MembershipRequest) (remote.EventID, error) {
	evtID, err := j.Rooms.JoinRoom(ctx, req)
	if err == nil {
		j.once.Do(func() { err = j.send(ctx) })
	}
	return evtID, err
}

// seenListener tells when the bridge has handled (returned from) an event with a given body.
type seenListener struct {
	remote.Listener
	body string
	once sync.Once
	seen chan struct{}
}

func (s *seenListener) OnEvent(ctx context.Context, ev *remote.Event) error {
	err := s.Listener.OnEvent(ctx, ev)
	if c, perr := parseContent(ev.Content); perr == nil && c["body"] == s.body {
		s.once.Do(func() { close(s.seen) })
	}
	return err
}

// hookJoin makes bob send body on the hub right after the bridge's LM join of roomID is stored, and holds JoinRoom
// until the bridge has handled it (or for a while: a bridge that waits for the join to end cannot finish it first).
func hookJoin(ts *twoServers, roomID, body string) {
	seen := &seenListener{Listener: ts.br, body: body, seen: make(chan struct{})}
	ts.fwd.set(seen)
	ts.br.lmProto.rooms = &joinThenMessage{Rooms: ts.ours, send: func(ctx context.Context) error {
		if _, err := ts.remote.SendEvent(ctx, roomID, ts.bob, "m.room.message", nil,
			map[string]any{"msgtype": "m.text", "body": body}, time.Time{}); err != nil {
			return err
		}
		select {
		case <-seen.seen:
		case <-time.After(2 * time.Second):
		}
		return nil
	}}
}

// waitForGhostMessage waits for bob's ghost to send body into roomID.
func waitForGhostMessage(t *testing.T, ts *twoServers, roomID id.RoomID, body string) {
	t.Helper()
	eventually(t, "the message in "+roomID.String(), func() bool {
		for _, c := range ts.mx.callsOf("message") {
			if c.RoomID == roomID && c.Sender == ts.ghost && c.Content["body"] == body {
				return true
			}
		}
		return false
	})
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
	hookJoin(ts, roomID, body)
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
	waitForGhostMessage(t, ts, portal, body)
}

// TestLinkMessageDuringJoinIsBridged: the same for a Matrix room linked to an existing LM room, where the link is
// only recorded once the join has returned.
func TestLinkMessageDuringJoinIsBridged(t *testing.T) {
	ctx := testContext(t)
	ts := newTwoServers(t, ctx)
	tb := &testBridge{Bridge: ts.br, mx: ts.mx}
	tb.seedDAGRoom()
	roomID, err := ts.remote.CreateRoom(ctx, ts.bob, []remote.InitialState{{Type: "m.room.join_rules", Content: map[string]any{"join_rule": "public"}}})
	if err != nil {
		t.Fatal(err)
	}
	const body = "sent as the link's join lands"
	hookJoin(ts, roomID, body)
	if _, err = ts.br.LinkToLM(ctx, dagRoom, roomID, ts.remote.ServerName(), alice); err != nil {
		t.Fatal(err)
	}
	waitForGhostMessage(t, ts, dagRoom, body)
}
