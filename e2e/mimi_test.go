package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/internal/testca"
	"github.com/lmbridge/lmbridge/internal/tesths"
)

// mimiSide is one lmbridge binary on its homeserver, acting as a MIMI provider.
type mimiSide struct {
	b      *lmbridgeProcess
	hs     *tesths.Homeserver
	bot    id.UserID
	domain string
}

// startMIMISide starts a homeserver of kind and an lmbridge (the real binary) on it, as the MIMI provider domain,
// listening on port, reaching its peers (domain → port) on loopback with certificates of ca.
func startMIMISide(t *testing.T, kind tesths.Kind, serverName, domain string, port int, peers map[string]int, ca *testca.CA) *mimiSide {
	t.Helper()
	b := newLMBridgeOn(t, serverName, sqliteDB)
	files := ca.WriteFilesT(t, b.Dir, domain)
	peerAddrs := map[string]string{}
	for d, p := range peers {
		peerAddrs[d] = "127.0.0.1:" + strconv.Itoa(p)
	}
	b.Extra = map[string]any{
		"mimi": map[string]any{"domain": domain, "listen": "127.0.0.1:" + strconv.Itoa(port),
			"tls_cert": files.Cert, "tls_key": files.Key, "tls_ca": files.CA, "peers": peerAddrs},
		"bridge": map[string]any{"permissions": map[string]string{"*": "relay", serverName: "admin"}},
	}
	hs := tesths.StartT(t, kind, tesths.Options{ServerName: serverName, Registrations: [][]byte{b.RegYAML}})
	b.SetHomeserver(t, hs)
	b.Start(t)
	return &mimiSide{b: b, hs: hs, bot: id.NewUserID(b.Registration.SenderLocalpart, serverName), domain: domain}
}

// ask sends a command as c and returns the bot's answer to it.
func (s *mimiSide) ask(ctx context.Context, t *testing.T, c *mautrix.Client, room id.RoomID, command string) string {
	t.Helper()
	cmd := sendText(ctx, t, c, room, map[string]any{"msgtype": "m.text", "body": command})
	answer := findDAG(ctx, t, c, room, "the bot's answer to "+command, func(evt *event.Event) bool {
		return evt.Sender == s.bot && replyTarget(rawContent(evt)) == string(cmd)
	})
	return bodyOf(answer)
}

// TestMIMIBetweenTwoHomeservers: a Dendrite and a Synapse, each with an lmbridge that is a MIMI provider (mutual TLS
// on loopback, a throwaway CA), and no Matrix federation between them. alice on Dendrite links a room as a new MIMI
// room (her bridge is its hub) and adds bob of the other provider; bob's bridge registers his MLS client when asked
// for his key material and opens a portal for him. Then every content type crosses both ways (text, formatted text,
// replies, reactions, edits, deletes, mentions, images), in order and once, also across a restart of either bridge, with
// messages sent while it was down. Deletes go from Synapse's side only: Dendrite does not hand redactions to
// application services.
func TestMIMIBetweenTwoHomeservers(t *testing.T) {
	for _, pair := range [][2]tesths.Kind{{tesths.Dendrite, tesths.Synapse}, {tesths.Synapse, tesths.Dendrite}} {
		t.Run(string(pair[0])+" hub, "+string(pair[1])+" follower", func(t *testing.T) {
			tesths.RequireKind(t, pair[0])
			tesths.RequireKind(t, pair[1])
			testMIMIBetween(t, pair[0], pair[1])
		})
	}
}

// testMIMIBetween is TestMIMIBetweenTwoHomeservers with alice's homeserver (and the hub) of kindA, bob's of kindB.
func testMIMIBetween(t *testing.T, kindA, kindB tesths.Kind) {
	ctx := testContext(t)
	ca := testca.NewT(t)
	portA, err := tesths.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	portB, err := tesths.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	const domainA, domainB = "mimi-a.test", "mimi-b.test"
	a := startMIMISide(t, kindA, "hsa.localhost", domainA, portA, map[string]int{domainB: portB}, ca)
	b := startMIMISide(t, kindB, "hsb.localhost", domainB, portB, map[string]int{domainA: portA}, ca)
	if dir := os.Getenv("LMBRIDGE_E2E_KEEP_LOGS"); dir != "" {
		t.Cleanup(func() {
			for name, path := range map[string]string{"a.log": a.b.LogPath, "b.log": b.b.LogPath} {
				if data, err := os.ReadFile(path); err == nil {
					_ = os.WriteFile(filepath.Join(dir, name), data, 0o600)
				}
			}
		})
	}

	alice := a.hs.RegisterUserT(t, "alice", "alice-password", false)
	bob := b.hs.RegisterUserT(t, "bob", "bob-password", false)
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "MIMI plans",
		Invite:             []id.UserID{a.bot},
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice.UserID: 100, a.bot: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	roomA := created.RoomID
	waitUntil(t, 60*time.Second, "A's bot to join", func() bool {
		members, err := alice.JoinedMembers(ctx, roomA)
		return err == nil && hasMember(members, a.bot)
	})
	answer := a.ask(ctx, t, alice, roomA, "!lm mimi link")
	if !strings.HasPrefix(answer, "Linked this room to the MIMI room mimi://"+domainA+"/r/") {
		t.Fatalf("link answer %q", answer)
	}
	answerOfLink := answer
	bobURI := "mimi://" + domainB + "/u/bob=hsb.localhost"
	if answer = a.ask(ctx, t, alice, roomA, "!lm mimi invite "+bobURI); !strings.HasPrefix(answer, "Added") {
		t.Fatalf("invite answer %q", answer)
	}

	// bob's bridge opens a portal for the MIMI room; bob joins it.
	var portal id.RoomID
	since := ""
	waitUntil(t, 60*time.Second, "bob's invite to the portal", func() bool {
		resp, err := bob.SyncRequest(ctx, 1000, since, "", false, event.PresenceOnline)
		if err != nil {
			return false
		}
		since = resp.NextBatch
		for roomID := range resp.Rooms.Invite {
			portal = roomID
			return true
		}
		return false
	})
	if _, err = bob.JoinRoomByID(ctx, portal); err != nil {
		t.Fatal(err)
	}
	// alice's ghost joins the portal once bob's bridge has the link active; bob's ghost joined alice's room when he
	// was added.
	var aliceGhost, bobGhost id.UserID
	waitUntil(t, 60*time.Second, "alice's ghost in the portal", func() bool {
		members, err := bob.JoinedMembers(ctx, portal)
		if err != nil {
			return false
		}
		for u := range members.Joined {
			if strings.Contains(string(u), "alice") {
				aliceGhost = u
				return true
			}
		}
		return false
	})
	waitUntil(t, 60*time.Second, "bob's ghost in alice's room", func() bool {
		members, err := alice.JoinedMembers(ctx, roomA)
		if err != nil {
			return false
		}
		for u := range members.Joined {
			if strings.Contains(string(u), "bob") {
				bobGhost = u
				return true
			}
		}
		return false
	})

	joinedIn := func(c *mautrix.Client, room id.RoomID, user id.UserID) bool {
		members, err := c.JoinedMembers(ctx, room)
		return err == nil && hasMember(members, user)
	}

	// onlyOnce finds the one event matching pred in a room, and fails when there are more.
	onlyOnce := func(c *mautrix.Client, room id.RoomID, what string, pred func(*event.Event) bool) *event.Event {
		t.Helper()
		found := findDAG(ctx, t, c, room, what, pred)
		n := 0
		for _, evt := range roomTimeline(ctx, t, c, room) {
			if pred(evt) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%s: %d events, want 1", what, n)
		}
		return found
	}
	textFrom := func(sender id.UserID, body string) func(*event.Event) bool {
		return func(evt *event.Event) bool {
			return evt.Sender == sender && evt.Type == event.EventMessage && bodyOf(evt) == body
		}
	}

	// Text and formatted text, with a mention, A → B.
	helloA := sendText(ctx, t, alice, roomA, map[string]any{"msgtype": "m.text", "body": "hello bob",
		"format": "org.matrix.custom.html", "formatted_body": "hello <a href=\"https://matrix.to/#/" + string(bobGhost) + "\">bob</a>, <em>welcome</em>",
		"m.mentions": map[string]any{"user_ids": []any{string(bobGhost)}}})
	helloB := onlyOnce(bob, portal, "alice's hello on B", func(evt *event.Event) bool {
		return evt.Sender == aliceGhost && strings.Contains(bodyOf(evt), "welcome")
	})
	hc := rawContent(helloB)
	if fb, _ := hc["formatted_body"].(string); !strings.Contains(fb, "<em>welcome</em>") || !strings.Contains(fb, string(bob.UserID)) {
		t.Errorf("alice's hello on B has formatted body %q, want the emphasis and a pill for %s", fb, bob.UserID)
	}
	if m, _ := hc["m.mentions"].(map[string]any); m == nil || !containsString(m["user_ids"], string(bob.UserID)) {
		t.Errorf("alice's hello on B mentions %v, want %s", hc["m.mentions"], bob.UserID)
	}

	// A formatted reply with a mention, B → A.
	replyB := sendText(ctx, t, bob, portal, map[string]any{"msgtype": "m.text", "body": "hi alice",
		"format": "org.matrix.custom.html", "formatted_body": "<strong>hi</strong> <a href=\"https://matrix.to/#/" + string(aliceGhost) + "\">alice</a>",
		"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": string(helloB.ID)}},
		"m.mentions":   map[string]any{"user_ids": []any{string(aliceGhost)}}})
	replyA := onlyOnce(alice, roomA, "bob's reply on A", func(evt *event.Event) bool {
		return evt.Sender == bobGhost && strings.Contains(bodyOf(evt), "hi")
	})
	rc := rawContent(replyA)
	if replyTarget(rc) != string(helloA) {
		t.Errorf("bob's reply on A replies to %q, want alice's %s", replyTarget(rc), helloA)
	}
	if fb, _ := rc["formatted_body"].(string); !strings.Contains(fb, "<strong>hi</strong>") {
		t.Errorf("bob's reply on A has formatted body %q", fb)
	}
	if m, _ := rc["m.mentions"].(map[string]any); m == nil || !containsString(m["user_ids"], string(alice.UserID)) {
		t.Errorf("bob's reply on A mentions %v, want %s", rc["m.mentions"], alice.UserID)
	}

	// Reactions both ways.
	react := func(c *mautrix.Client, room id.RoomID, target id.EventID, key string) id.EventID {
		t.Helper()
		resp, err := c.SendMessageEvent(ctx, room, event.EventReaction, map[string]any{"m.relates_to": map[string]any{
			"rel_type": "m.annotation", "event_id": string(target), "key": key}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.EventID
	}
	reactionOn := func(sender id.UserID, target id.EventID, key string) func(*event.Event) bool {
		return func(evt *event.Event) bool {
			r := relatesTo(rawContent(evt))
			return evt.Sender == sender && evt.Type == event.EventReaction && r["event_id"] == string(target) && r["key"] == key
		}
	}
	aliceReaction := react(alice, roomA, replyA.ID, "👍")
	onlyOnce(bob, portal, "alice's reaction on B", reactionOn(aliceGhost, replyB, "👍"))
	bobReaction := react(bob, portal, helloB.ID, "🎉")
	onlyOnce(alice, roomA, "bob's reaction on A", reactionOn(bobGhost, helloA, "🎉"))

	// Edits both ways: each side sees an m.replace of its copy of the original.
	edit := func(c *mautrix.Client, room id.RoomID, target id.EventID, body string) {
		t.Helper()
		sendText(ctx, t, c, room, map[string]any{"msgtype": "m.text", "body": "* " + body,
			"m.new_content": map[string]any{"msgtype": "m.text", "body": body},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": string(target)}})
	}
	editOf := func(sender id.UserID, target id.EventID, body string) func(*event.Event) bool {
		return func(evt *event.Event) bool {
			c := rawContent(evt)
			nc, _ := c["m.new_content"].(map[string]any)
			return evt.Sender == sender && relatesTo(c)["rel_type"] == "m.replace" && relatesTo(c)["event_id"] == string(target) &&
				nc != nil && nc["body"] == body
		}
	}
	edit(alice, roomA, helloA, "hello bob, edited")
	onlyOnce(bob, portal, "alice's edit on B", editOf(aliceGhost, helloB.ID, "hello bob, edited"))
	edit(bob, portal, replyB, "hi alice, edited")
	onlyOnce(alice, roomA, "bob's edit on A", editOf(bobGhost, replyA.ID, "hi alice, edited"))

	// Attachments both ways: an image each way (sealed external parts, served by the sender's bridge over mutual TLS
	// and fetched by the other); the bytes a client downloads on the other side are the bytes sent, with the
	// mimetype, size and name, under the receiver's homeserver.
	imageFrom := func(sender id.UserID, name string) func(*event.Event) bool {
		return func(evt *event.Event) bool {
			return evt.Sender == sender && rawContent(evt)["msgtype"] == "m.image" && bodyOf(evt) == name
		}
	}
	crosses := func(from *mautrix.Client, fromRoom id.RoomID, to *mautrix.Client, toRoom id.RoomID, ghost id.UserID, name string, seed uint64) {
		t.Helper()
		img := testPNG(t, 64, 48, seed)
		uri := uploadT(ctx, t, from, img, "image/png", name)
		sendText(ctx, t, from, fromRoom, map[string]any{"msgtype": "m.image", "body": name, "url": uri.String(),
			"info": map[string]any{"mimetype": "image/png", "size": len(img), "w": 64, "h": 48}})
		got := onlyOnce(to, toRoom, name+" on the other side", imageFrom(ghost, name))
		c := rawContent(got)
		info, _ := c["info"].(map[string]any)
		if info["mimetype"] != "image/png" || info["size"] != float64(len(img)) {
			t.Errorf("%s on the other side has info %v, want image/png of %d bytes", name, info, len(img))
		}
		local, _ := c["url"].(string)
		sameFile(ctx, t, to, name+" on the other side", local, img, "image/png")
	}
	crosses(alice, roomA, bob, portal, aliceGhost, "alice-cat.png", 11)
	crosses(bob, portal, alice, roomA, bobGhost, "bob-dog.png", 12)

	// Deletes: Dendrite v0.13.8 never pushes a redaction to application services (see testBridge), so only the user
	// on Synapse deletes: a reaction (an unlike in MIMI) and a message, and the other side sees both.
	redactionOf := func(sender id.UserID, target id.EventID) func(*event.Event) bool {
		return func(evt *event.Event) bool {
			return evt.Sender == sender && evt.Type == event.EventRedaction &&
				(evt.Redacts == target || rawContent(evt)["redacts"] == string(target))
		}
	}
	if kindB == tesths.Synapse {
		if _, err = bob.RedactEvent(ctx, portal, bobReaction); err != nil {
			t.Fatal(err)
		}
		bobReactionA := findDAG(ctx, t, alice, roomA, "bob's reaction on A", reactionOn(bobGhost, helloA, "🎉"))
		onlyOnce(alice, roomA, "bob's unlike on A", redactionOf(bobGhost, bobReactionA.ID))
		if _, err = bob.RedactEvent(ctx, portal, replyB); err != nil {
			t.Fatal(err)
		}
		onlyOnce(alice, roomA, "bob's delete on A", redactionOf(bobGhost, replyA.ID))
	} else {
		if _, err = alice.RedactEvent(ctx, roomA, aliceReaction); err != nil {
			t.Fatal(err)
		}
		aliceReactionB := findDAG(ctx, t, bob, portal, "alice's reaction on B", reactionOn(aliceGhost, replyB, "👍"))
		onlyOnce(bob, portal, "alice's unlike on B", redactionOf(aliceGhost, aliceReactionB.ID))
		if _, err = alice.RedactEvent(ctx, roomA, helloA); err != nil {
			t.Fatal(err)
		}
		onlyOnce(bob, portal, "alice's delete on B", redactionOf(aliceGhost, helloB.ID))
	}

	// Order and once: a burst each way.
	burst := func(c *mautrix.Client, room id.RoomID, prefix string, n int) []string {
		t.Helper()
		var bodies []string
		for i := range n {
			body := fmt.Sprintf("%s %d", prefix, i)
			sendText(ctx, t, c, room, map[string]any{"msgtype": "m.text", "body": body})
			bodies = append(bodies, body)
		}
		return bodies
	}
	inOrderOnce := func(c *mautrix.Client, room id.RoomID, sender id.UserID, bodies []string, what string) {
		t.Helper()
		last := bodies[len(bodies)-1]
		findDAG(ctx, t, c, room, what, textFrom(sender, last))
		var got []string
		for _, evt := range roomTimeline(ctx, t, c, room) {
			if evt.Sender == sender && evt.Type == event.EventMessage && containsString(toAny(bodies), bodyOf(evt)) {
				got = append(got, bodyOf(evt))
			}
		}
		if strings.Join(got, "|") != strings.Join(bodies, "|") {
			t.Fatalf("%s: got %q, want %q", what, got, bodies)
		}
	}
	inOrderOnce(bob, portal, aliceGhost, burst(alice, roomA, "a→b", 5), "alice's burst on B")
	inOrderOnce(alice, roomA, bobGhost, burst(bob, portal, "b→a", 5), "bob's burst on A")

	// bob's bridge (a follower) is down while alice talks: the hub keeps the fan-out and delivers it after the restart.
	b.b.Stop(t)
	whileB := burst(alice, roomA, "while B was down", 3)
	b.b.Start(t)
	inOrderOnce(bob, portal, aliceGhost, whileB, "what alice sent while B was down")

	// alice's bridge (the hub) is killed while bob talks: B retries bob's messages until the hub is back.
	a.b.Kill(t)
	whileA := burst(bob, portal, "while A was down", 3)
	time.Sleep(2 * time.Second)
	a.b.Start(t)
	inOrderOnce(alice, roomA, bobGhost, whileA, "what bob sent while A was down")

	// After both restarts, nothing came twice: every burst is still there once, in order.
	inOrderOnce(bob, portal, aliceGhost, burst(alice, roomA, "after the restarts", 2), "alice's messages after the restarts")
	for _, check := range []struct {
		c      *mautrix.Client
		room   id.RoomID
		sender id.UserID
		prefix string
	}{{bob, portal, aliceGhost, "a→b"}, {alice, roomA, bobGhost, "b→a"}, {bob, portal, aliceGhost, "while B"}, {alice, roomA, bobGhost, "while A"}} {
		counts := map[string]int{}
		for _, evt := range roomTimeline(ctx, t, check.c, check.room) {
			if evt.Sender == check.sender && strings.HasPrefix(bodyOf(evt), check.prefix) {
				counts[bodyOf(evt)]++
			}
		}
		for body, n := range counts {
			if n != 1 {
				t.Errorf("%q arrived %d times", body, n)
			}
		}
	}

	// !lm status on the hub shows the follower's delivery state: nothing waits for B any more.
	if answer = a.ask(ctx, t, alice, roomA, "!lm status"); !strings.Contains(answer, "Delivery: "+domainB+" up to date") {
		t.Errorf("status on A does not say %s is up to date: %q", domainB, answer)
	}

	// bob moves the conversation to another room of his: he unlinks the portal, and links his new room to the MIMI
	// room he is in with !lm mimi join (his bridge is a follower there).
	if answer = b.ask(ctx, t, bob, portal, "!lm unlink"); !strings.HasPrefix(answer, "This room is no longer bridged") {
		t.Fatalf("unlink answer %q", answer)
	}
	created, err = bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "bob's MIMI room",
		Invite:             []id.UserID{b.bot},
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{bob.UserID: 100, b.bot: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	// The bot above bob, so that it can carry a removal from the MIMI room to him.
	if _, err = bob.SendStateEvent(ctx, created.RoomID, event.StatePowerLevels, "", map[string]any{
		"users": map[string]any{string(bob.UserID): 50, string(b.bot): 100}, "state_default": 50, "ban": 50, "kick": 50,
		"redact": 50, "invite": 0, "events_default": 0}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "B's bot to join bob's room", func() bool { return joinedIn(bob, created.RoomID, b.bot) })
	roomURI := strings.TrimSuffix(strings.Fields(strings.TrimPrefix(answerOfLink, "Linked this room to the MIMI room "))[0], ",")
	if answer = b.ask(ctx, t, bob, created.RoomID, "!lm mimi join "+roomURI); !strings.HasPrefix(answer, "Linked this room to the MIMI room "+roomURI) {
		t.Fatalf("join answer %q", answer)
	}
	portal = created.RoomID
	waitUntil(t, 60*time.Second, "alice's ghost in bob's room", func() bool { return joinedIn(bob, portal, aliceGhost) })
	inOrderOnce(bob, portal, aliceGhost, burst(alice, roomA, "in bob's room", 2), "alice's messages in bob's room")
	inOrderOnce(alice, roomA, bobGhost, burst(bob, portal, "from bob's room", 2), "bob's messages from his room")

	// Membership both ways: bob leaves the portal and his ghost leaves alice's room; alice adds him again and his
	// bridge invites him back into the portal; alice kicks his ghost and his bridge removes him from the portal.
	if _, err = bob.LeaveRoom(ctx, portal); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "bob's ghost to leave alice's room", func() bool { return !joinedIn(alice, roomA, bobGhost) })
	if answer = a.ask(ctx, t, alice, roomA, "!lm mimi invite "+bobURI); !strings.HasPrefix(answer, "Added") {
		t.Fatalf("second invite answer %q", answer)
	}
	waitUntil(t, 60*time.Second, "bob's invite back into the portal", func() bool {
		resp, err := bob.SyncRequest(ctx, 1000, since, "", false, event.PresenceOnline)
		if err != nil {
			return false
		}
		since = resp.NextBatch
		_, ok := resp.Rooms.Invite[portal]
		return ok
	})
	if _, err = bob.JoinRoomByID(ctx, portal); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "bob's ghost back in alice's room", func() bool { return joinedIn(alice, roomA, bobGhost) })
	back := burst(alice, roomA, "back again", 1)
	inOrderOnce(bob, portal, aliceGhost, back, "alice's message after bob came back")
	if _, err = alice.KickUser(ctx, roomA, &mautrix.ReqKickUser{UserID: bobGhost, Reason: "testing"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "bob's removal from the portal", func() bool { return !joinedIn(bob, portal, bob.UserID) })

}

func containsString(list any, s string) bool {
	items, _ := list.([]any)
	for _, it := range items {
		if it == s {
			return true
		}
	}
	return false
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
