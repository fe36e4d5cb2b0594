package linearize

import (
	"context"
	"encoding/json"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/linearize/auth"
	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// joinRecorder is a Remote that keeps every send_join answer it passes on.
type joinRecorder struct {
	Remote
	lock    sync.Mutex
	answers []*federation.SendJoinResponse
}

func (r *joinRecorder) SendJoin(ctx context.Context, dest, txnID string, event json.RawMessage) (*federation.SendJoinResponse, error) {
	resp, err := r.Remote.SendJoin(ctx, dest, txnID, event)
	if err == nil {
		r.lock.Lock()
		r.answers = append(r.answers, resp)
		r.lock.Unlock()
	}
	return resp, err
}

func (r *joinRecorder) last(t *testing.T) *federation.SendJoinResponse {
	t.Helper()
	r.lock.Lock()
	defer r.lock.Unlock()
	if len(r.answers) == 0 {
		t.Fatalf("no send_join answer recorded")
	}
	return r.answers[len(r.answers)-1]
}

// replayLikeEigen reads a send_join answer the way eigen-server does: the `state` array, in the order given, through
// the auth rules from an empty room, then the join; auth_chain is not looked at. It fails the test on the first event
// the rules refuse and returns the state the replay ends in (after the join), as event IDs by type and state key.
func replayLikeEigen(t *testing.T, resp *federation.SendJoinResponse) map[auth.Key]string {
	t.Helper()
	st := auth.NewState()
	apply := func(i int, raw json.RawMessage) {
		p := must(pdu.Parse(raw))
		id := must(p.EventID())
		// Our rules allow the creator's first join by its prev_events; eigen only as the second event it replays.
		if create := st.Create(); create != nil && membershipOf(p) == auth.MembershipJoin && p.Sender == st.Creator() &&
			len(p.PrevEvents) == 1 && p.PrevEvents[0] == create.EventID && st.Length() != 1 {
			t.Fatalf("the creator's first join is event %d of the replay, eigen wants it second", i+1)
		}
		if err := auth.Check(st, p); err != nil {
			t.Fatalf("replay refuses event %d of %d (%s %s %q): %v", i, len(resp.State), id, p.Type, p.StateKeyValue(), err)
		}
		if err := st.Apply(id, p); err != nil {
			t.Fatal(err)
		}
	}
	for i, raw := range resp.State {
		apply(i, raw)
	}
	apply(len(resp.State), resp.Event)
	out := make(map[auth.Key]string)
	st.Range(func(k auth.Key, e *auth.Entry) bool {
		out[k] = e.EventID
		return true
	})
	return out
}

func stateMap(t *testing.T, nd *node, roomID string) map[auth.Key]string {
	t.Helper()
	out := make(map[auth.Key]string)
	for _, st := range must(nd.eng.CurrentState(testContext(t), roomID)) {
		out[auth.Key{Type: st.Type, StateKey: st.StateKey}] = st.EventID
	}
	return out
}

// TestEigenReplaysOurSendJoin: a room whose members joined by invite, whose power levels changed and whose members
// came and went, then bob of another server joins. Our send_join answer, replayed as eigen replays it (state in order
// from nothing, no auth chain), must accept every event and end in the hub's state; our own participant must join
// with the same answer and hold the same state.
func TestEigenReplaysOurSendJoin(t *testing.T) {
	rec := &joinRecorder{}
	hub := newHTTPNode(t, nil)
	part := newHTTPNodeWith(t, func(r Remote) Remote { rec.Remote = r; return rec }, nil)
	ctx := testContext(t)
	alice, carol, dave := userAt("alice", hub.name), userAt("carol", hub.name), userAt("dave", hub.name)
	bob := userAt("bob", part.name)
	roomID := must(hub.eng.CreateRoom(ctx, alice, []InitialState{{Type: "m.room.name", Content: map[string]any{"name": "replay"}}}))
	send := func(sender, evType string, stateKey *string, content any) string {
		t.Helper()
		return must(hub.eng.SendEvent(ctx, roomID, sender, evType, stateKey, content, time.Time{}))
	}
	empty := ""
	// carol joins by invite; alice raises her to 50, which lets her set the topic and invite.
	must(hub.eng.InviteUser(ctx, roomID, alice, carol))
	must(hub.eng.Join(ctx, roomID, carol, hub.name))
	send(alice, "m.room.message", nil, text("hello carol"))
	send(alice, auth.TypePowerLevels, &empty, map[string]any{
		"ban": 50, "kick": 50, "invite": 50, "redact": 50, "events_default": 0, "state_default": 50, "users_default": 0,
		"users":  map[string]any{alice: 100, carol: 50},
		"events": map[string]any{"m.room.power_levels": 100, "m.room.history_visibility": 100},
	})
	send(carol, "m.room.topic", &empty, map[string]any{"topic": "set by carol"})
	// dave is invited by carol, joins, talks and leaves.
	must(hub.eng.InviteUser(ctx, roomID, carol, dave))
	must(hub.eng.Join(ctx, roomID, dave, hub.name))
	send(dave, "m.room.message", nil, text("bye"))
	must(hub.eng.Leave(ctx, roomID, dave))
	// carol invites bob, whose server countersigns; bob joins over HTTP.
	must(hub.eng.InviteUser(ctx, roomID, carol, bob))
	part.rec.waitFor(t, "bob's invite", func() bool { return lastInvite(part, roomID, bob) != nil })
	joinID := must(part.eng.Join(ctx, roomID, bob, hub.name))

	resp := rec.last(t)
	replayed := replayLikeEigen(t, resp)
	hubState := stateMap(t, hub, roomID)
	if !maps.Equal(replayed, hubState) {
		t.Fatalf("replay ends in\n%v\nthe hub's state is\n%v", replayed, hubState)
	}
	if hubState[auth.Key{Type: auth.TypeMember, StateKey: bob}] != joinID {
		t.Fatalf("the hub's state does not hold bob's join %s", joinID)
	}
	// Our participant reads the same answer the draft's way and holds the same state.
	waitHead(t, part, roomID, joinID)
	if partState := stateMap(t, part, roomID); !maps.Equal(partState, hubState) {
		t.Fatalf("participant state\n%v\nhub state\n%v", partState, hubState)
	}
	msg := send(carol, "m.room.message", nil, text("welcome bob"))
	waitHead(t, part, roomID, msg)
	checkMirror(t, hub, part, roomID, nil)
}

// TestReplayLikeEigenAcceptsEigensAnswer checks the replay above against eigen's own send_join answer (the whole
// timeline before the join), so that it stands for what eigen does.
func TestReplayLikeEigenAcceptsEigensAnswer(t *testing.T) {
	trace := loadCapture(t, "10-eigen-to-eigen-federation-trace.json")
	var resp federation.SendJoinResponse
	if err := json.Unmarshal(trace[3].ResponseBody, &resp); err != nil {
		t.Fatal(err)
	}
	got := replayLikeEigen(t, &resp)
	join := must(pdu.Parse(resp.Event))
	if got[auth.Key{Type: auth.TypeMember, StateKey: join.Sender}] != must(join.EventID()) {
		t.Fatalf("replay of eigen's answer ends in %v", got)
	}
}
