package provider

import (
	"errors"
	"github.com/lmbridge/lmbridge/internal/testpg"
	"slices"
	"testing"
)

// sameEpoch checks that every listed client is at the same epoch with the same authenticator.
func sameEpoch(t *testing.T, room string, clients map[*node][]string) uint64 {
	t.Helper()
	var epoch uint64
	var auth string
	first := true
	for nd, cs := range clients {
		for _, c := range cs {
			e, a := nd.epochAuth(room, c)
			if first {
				epoch, auth, first = e, a, false
			} else if e != epoch || a != auth {
				t.Fatalf("%s at epoch %d (%s…), others at %d (%s…)", c, e, a[:8], epoch, auth[:8])
			}
		}
	}
	return epoch
}

// waitEpoch waits until a client reaches an epoch; a client whose Welcome has not arrived yet is not there yet.
func (nd *node) waitEpoch(room, client string, epoch uint64) {
	nd.t.Helper()
	waitFor(nd.t, client+" to reach its epoch", func() bool {
		g, err := nd.p.loadGroup(testContext(nd.t), room, client)
		if errors.Is(err, ErrNotInRoom) {
			return false
		} else if err != nil {
			nd.t.Fatal(err)
		}
		return g.Epoch() >= epoch
	})
}

// TestFlows runs the draft's example flows over HTTPS between three providers: a creates a room and adds Bob of b,
// Bob adds Cathy of c, all three exchange end-to-end encrypted MIMI content, Bob adds a second device by external
// commit, Cathy leaves.
func TestFlows(t *testing.T) { runFlows(t, newNet(t)) }

// TestFlowsPostgres runs the flows with every provider on PostgreSQL.
func TestFlowsPostgres(t *testing.T) {
	testpg.RequireT(t)
	n := newNet(t)
	n.postgres = true
	runFlows(t, n)
}

func runFlows(t *testing.T, n *testNet) {
	a, b, c := n.start(t, "a.example"), n.start(t, "b.example"), n.start(t, "c.example")
	ctx := testContext(t)
	alice, alice1 := a.register("alice", "phone")
	bob, bob1 := b.register("bob", "laptop")
	cathy, cathy1 := c.register("cathy", "tablet")

	// Create a room: a is its hub.
	room, err := a.p.CreateRoom(ctx, "team", alice, RoomMetadata{Name: "Team"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := a.p.RoomState(ctx, room)
	if err != nil || len(st.Participants) != 1 || st.RoleOf(alice) != RoleAdmin || st.Metadata.Name != "Team" || st.Metadata.RoomURI != room {
		t.Fatalf("new room state %+v, %v", st, err)
	}

	// Alice adds Bob, a user of another provider: keyMaterial from b, commit + Welcome through the hub, Welcome
	// fanned out to b.
	if err := a.p.AddUser(ctx, room, alice, bob, RoleParticipant); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to join", func() bool { return b.rec.has(LocalJoined, bob) })
	// Callbacks run from the inbox, after the commit returned.
	waitFor(t, "the hub's MemberAdded for bob", func() bool { return a.rec.has(MemberAdded, bob) })
	sameEpoch(t, room, map[*node][]string{a: {alice1}, b: {bob1}})

	// Bob adds Cathy of a third provider: b asks the hub for her key material, the hub asks c.
	if err := b.p.AddUser(ctx, room, bob, cathy, RoleParticipant); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cathy to join", func() bool { return c.rec.has(LocalJoined, cathy) })
	waitFor(t, "alice to see cathy", func() bool { return a.rec.has(MemberAdded, cathy) })
	a.waitEpoch(room, alice1, 2)
	sameEpoch(t, room, map[*node][]string{a: {alice1}, b: {bob1}, c: {cathy1}})
	st, _ = c.p.RoomState(ctx, room)
	if st.RoleOf(bob) != RoleParticipant || st.RoleOf(cathy) != RoleParticipant || len(st.Participants) != 3 {
		t.Fatalf("room state at c: %+v", st.Participants)
	}

	// Messages: MIMI content in PrivateMessages, through the hub, to the other two providers each.
	for _, s := range []struct {
		nd   *node
		user string
		body string
	}{{a, alice, "hello from alice"}, {b, bob, "bob here"}, {c, cathy, "cathy too"}, {a, alice, "second from alice"}} {
		if _, err := s.nd.p.Send(ctx, room, s.user, text(t, s.user, room, s.body)); err != nil {
			t.Fatalf("%s sending: %v", s.user, err)
		}
	}
	want := map[*node][]string{
		a: {bob + ": bob here", cathy + ": cathy too"},
		b: {alice + ": hello from alice", cathy + ": cathy too", alice + ": second from alice"},
		c: {alice + ": hello from alice", bob + ": bob here", alice + ": second from alice"},
	}
	for nd, w := range want {
		waitFor(t, nd.domain+" messages", func() bool { return len(nd.rec.messages()) >= len(w) })
		if got := texts(t, nd.rec.messages()); !slices.Equal(got, w) {
			t.Fatalf("%s received %q, want %q", nd.domain, got, w)
		}
	}

	// A new device: Bob's second client joins by external commit from the hub's groupInfo.
	_, bob2 := b.register("bob", "phone")
	if err := b.p.AddDevice(ctx, room, bob2); err != nil {
		t.Fatal(err)
	}
	a.waitEpoch(room, alice1, 3)
	c.waitEpoch(room, cathy1, 3)
	sameEpoch(t, room, map[*node][]string{a: {alice1}, b: {bob1, bob2}, c: {cathy1}})
	if _, err := c.p.Send(ctx, room, cathy, text(t, cathy, room, "welcome, second device")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to get cathy's message", func() bool { return len(b.rec.messages()) == 4 })
	if got := texts(t, b.rec.messages()[3:]); got[0] != cathy+": welcome, second device" {
		t.Fatalf("b got %q", got)
	}

	// Cathy leaves: c proposes removing her client, the lowest remaining member (Alice, at the hub) commits it with
	// the participant-list change.
	if err := c.p.Leave(ctx, room, cathy); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cathy to be out", func() bool { return c.rec.has(LocalLeft, cathy) })
	waitFor(t, "a to see cathy leave", func() bool { return a.rec.has(MemberRemoved, cathy) })
	waitFor(t, "b to see cathy leave", func() bool { return b.rec.has(MemberRemoved, cathy) })
	b.waitEpoch(room, bob1, 4)
	sameEpoch(t, room, map[*node][]string{a: {alice1}, b: {bob1, bob2}})
	if _, err := c.p.Send(ctx, room, cathy, text(t, cathy, room, "still here?")); !errors.Is(err, ErrNotInRoom) {
		t.Fatalf("cathy sending after leaving: %v", err)
	}
	before := len(c.rec.messages())
	if _, err := a.p.Send(ctx, room, alice, text(t, alice, room, "after cathy")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to get the last message", func() bool { return len(b.rec.messages()) == 5 })
	if got := len(c.rec.messages()); got != before {
		t.Fatalf("c received %d messages after leaving", got-before)
	}
	st, _ = a.p.RoomState(ctx, room)
	if len(st.Participants) != 2 || st.RoleOf(cathy) != RoleNone {
		t.Fatalf("participants after the leave: %+v", st.Participants)
	}
}
