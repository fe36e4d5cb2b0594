package provider

import (
	"bytes"
	"errors"
	"sync/atomic"

	"fmt"
	"github.com/lmbridge/lmbridge/mls/group"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/mimi/protocol"
)

func (nd *node) count(table string) int {
	nd.t.Helper()
	var n int
	if err := nd.db.QueryRow(testContext(nd.t), "SELECT COUNT(*) FROM "+table).Scan(&n); err != nil {
		nd.t.Fatal(err)
	}
	return n
}

func (nd *node) outboxRows() [][]byte {
	nd.t.Helper()
	rows, err := nd.db.Query(testContext(nd.t), "SELECT fanout FROM mimi_outbox ORDER BY seq")
	if err != nil {
		nd.t.Fatal(err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			nd.t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestRestart kills the hub and the follower with fan-out queued and events unhandled: after restarts every message
// arrives once, in order, the hub resends byte for byte what it queued, a repeated notify is answered 201 and
// ignored, and the hub's replayed view accepts further commits and messages.
func TestRestart(t *testing.T) {
	n := newNet(t)
	a, b := n.start(t, "a.example"), n.start(t, "b.example")
	ctx := testContext(t)
	alice, alice1 := a.register("alice", "phone")
	bob, bob1 := b.register("bob", "laptop")
	room, err := a.p.CreateRoom(ctx, "restart", alice, RoomMetadata{Name: "R"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.p.AddUser(ctx, room, alice, bob, RoleParticipant); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to join", func() bool { return b.rec.has(LocalJoined, bob) })

	// The follower is down: the hub accepts and queues.
	b.stop()
	var want []string
	for i := range 5 {
		body := fmt.Sprintf("message %d", i)
		want = append(want, alice+": "+body)
		if _, err := a.p.Send(ctx, room, alice, text(t, alice, room, body)); err != nil {
			t.Fatal(err)
		}
	}
	queued := a.outboxRows()
	if len(queued) != 5 {
		t.Fatalf("%d rows queued for the stopped follower, want 5", len(queued))
	}
	// The delivery state says so, and counts the failed attempts.
	waitFor(t, "failed notify attempts", func() bool {
		st, err := a.p.DeliveryStatus(ctx)
		return err == nil && len(st) == 1 && st[0].Destination == "b.example" && st[0].Queued == 5 && st[0].Attempts > 0 && st[0].LastError != ""
	})
	// The hub is killed with them queued; what it sends after the restart is what it stored.
	a.stop()
	a.restart()
	if again := a.outboxRows(); !slices.EqualFunc(queued, again, bytes.Equal) {
		t.Fatal("queued fan-out changed across the hub's restart")
	}
	b.restart()
	waitFor(t, "the queued messages", func() bool { return len(b.rec.messages()) >= 5 })
	time.Sleep(100 * time.Millisecond)
	if got := texts(t, b.rec.messages()); !slices.Equal(got, want) {
		t.Fatalf("after restarts b received %q, want %q", got, want)
	}
	if n := a.count("mimi_outbox"); n != 0 {
		t.Fatalf("%d fan-out rows left after delivery", n)
	}
	waitFor(t, "the delivery state to clear", func() bool {
		st, err := a.p.DeliveryStatus(ctx)
		return err == nil && len(st) == 1 && st[0].Queued == 0 && st[0].Attempts == 0
	})

	// A repeated notify (the hub retrying after a lost 201) is accepted and not applied again.
	status, resp, _, err := a.p.peers.post(ctx, "b.example", func(d *protocol.Directory) string { return d.Notify }, map[string]string{"roomId": room}, queued[4])
	if err != nil || status != http.StatusCreated {
		t.Fatalf("repeated notify: %d %s %v", status, resp, err)
	}
	time.Sleep(50 * time.Millisecond)
	if got := len(b.rec.messages()); got != 5 {
		t.Fatalf("repeated notify delivered again: %d messages", got)
	}

	// The follower acknowledged a message whose callback fails, and is killed before it succeeds: after its
	// restart the callback gets it, once.
	b.rec.mu.Lock()
	b.rec.failNext = 1 << 30
	b.rec.mu.Unlock()
	if _, err := a.p.Send(ctx, room, alice, text(t, alice, room, "acknowledged before the crash")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the notify to be acknowledged", func() bool { return a.count("mimi_outbox") == 0 && b.count("mimi_inbox") == 1 })
	b.stop()
	b.rec.mu.Lock()
	b.rec.failNext = 2 // and two more failures after the restart, retried with backoff
	b.rec.mu.Unlock()
	b.restart()
	want = append(want, alice+": acknowledged before the crash")
	waitFor(t, "the stored event", func() bool { return len(b.rec.messages()) == 6 })
	if got := texts(t, b.rec.messages()); !slices.Equal(got, want) {
		t.Fatalf("b received %q, want %q", got, want)
	}

	// The replayed hub view takes new commits and messages from the follower.
	c := n.start(t, "c.example")
	cathy, cathy1 := c.register("cathy", "tablet")
	a.stop()
	a.restart()
	if err := b.p.AddUser(ctx, room, bob, cathy, RoleParticipant); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cathy to join", func() bool { return c.rec.has(LocalJoined, cathy) })
	a.waitEpoch(room, alice1, 2)
	sameEpoch(t, room, map[*node][]string{a: {alice1}, b: {bob1}, c: {cathy1}})
	if _, err := b.p.Send(ctx, room, bob, text(t, bob, room, "after the hub restarts")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice and cathy to get bob's message", func() bool { return len(a.rec.messages()) == 1 && len(c.rec.messages()) == 1 })
	if got := texts(t, a.rec.messages()); got[0] != bob+": after the hub restarts" {
		t.Fatalf("a received %q", got)
	}
}

// TestResync loses a follower's own accepted commit (the hub accepted it, the follower failed before storing it):
// the follower's client is behind the room, notices it at the next fan-out, and re-joins by external commit that
// replaces its old leaf; the room goes on with it.
func TestResync(t *testing.T) {
	n := newNet(t)
	a, b := n.start(t, "a.example"), n.start(t, "b.example")
	ctx := testContext(t)
	alice, alice1 := a.register("alice", "phone")
	bob, bob1 := b.register("bob", "laptop")
	room, err := a.p.CreateRoom(ctx, "resync", alice, RoomMetadata{Name: "R"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.p.AddUser(ctx, room, alice, bob, RoleParticipant); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to join", func() bool { return b.rec.has(LocalJoined, bob) })
	var failed atomic.Bool
	b.p.afterAccept = func() error {
		if failed.CompareAndSwap(false, true) {
			return errors.New("crash after the hub's answer")
		}
		return nil
	}
	if err := b.p.commitAs(ctx, room, bob1, func(*group.Group) (group.CommitOptions, error) { return group.CommitOptions{}, nil }); err == nil {
		t.Fatal("the injected failure did not fail the commit")
	}
	if e, _ := b.epochAuth(room, bob1); e != 1 {
		t.Fatalf("bob's client at epoch %d after the lost commit", e)
	}
	a.waitEpoch(room, alice1, 2)
	// The next fan-out shows bob's client that it is behind.
	if _, err := a.p.Send(ctx, room, alice, text(t, alice, room, "at epoch 2")); err != nil {
		t.Fatal(err)
	}
	a.waitEpoch(room, alice1, 3)
	b.waitEpoch(room, bob1, 3)
	sameEpoch(t, room, map[*node][]string{a: {alice1}, b: {bob1}})
	if g, _ := a.p.loadGroup(ctx, room, alice1); len(leavesOf(g, bob)) != 1 {
		t.Fatalf("bob has %d leaves after the resync", len(leavesOf(g, bob)))
	}
	if _, err := b.p.Send(ctx, room, bob, text(t, bob, room, "back")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.p.Send(ctx, room, alice, text(t, alice, room, "welcome back")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "messages after the resync", func() bool { return len(a.rec.messages()) == 1 && len(b.rec.messages()) == 1 })
	if got := texts(t, b.rec.messages()); got[0] != alice+": welcome back" {
		t.Fatalf("b received %q (the message of the epoch it missed cannot be decrypted)", got)
	}
}
