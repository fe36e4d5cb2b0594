package provider

import (
	"slices"
	"testing"
)

// TestCacheAfterFailedNotify fails a follower's notify transaction after its client decrypted the message (an insert
// into the inbox aborts, as a full disk would): the follower answers an error, the hub retries, and the retry is
// applied from the stored state, not from the cached group that already used the message's key, so the message
// arrives once.
func TestCacheAfterFailedNotify(t *testing.T) {
	n := newNet(t)
	a, b := n.start(t, "a.example"), n.start(t, "b.example")
	ctx := testContext(t)
	alice, _ := a.register("alice", "phone")
	bob, bob1 := b.register("bob", "laptop")
	room, err := a.p.CreateRoom(ctx, "cache", alice, RoomMetadata{Name: "Cache"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.p.AddUser(ctx, room, alice, bob, RoleParticipant); err != nil {
		t.Fatal(err)
	}
	b.waitEpoch(room, bob1, 1)
	// A first message puts bob's group in the cache.
	if _, err := a.p.Send(ctx, room, alice, text(t, alice, room, "first")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first message", func() bool { return len(b.rec.messages()) == 1 })

	if _, err := b.db.Exec(ctx, `CREATE TRIGGER fail_inbox BEFORE INSERT ON mimi_inbox BEGIN SELECT RAISE(ABORT, 'injected failure'); END`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.p.Send(ctx, room, alice, text(t, alice, room, "second")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the hub to retry", func() bool {
		st, err := a.p.DeliveryStatus(ctx)
		return err == nil && slices.ContainsFunc(st, func(s FollowerStatus) bool { return s.Destination == "b.example" && s.Attempts >= 2 })
	})
	if _, err := b.db.Exec(ctx, `DROP TRIGGER fail_inbox`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.p.Send(ctx, room, alice, text(t, alice, room, "third")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second and third messages", func() bool { return len(b.rec.messages()) >= 3 })
	want := []string{alice + ": first", alice + ": second", alice + ": third"}
	if got := texts(t, b.rec.messages()); !slices.Equal(got, want) {
		t.Fatalf("bob got %q, want %q", got, want)
	}
}
