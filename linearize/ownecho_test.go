package linearize

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	mautrixfed "maunium.net/go/mautrix/federation"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// TestOwnEchoNeedsOurExactSignature checks when a participant may skip verifying its own signature on the hub's echo:
// only for an LPDU it sent, whose signature it finds unchanged and alone.
func TestOwnEchoNeedsOurExactSignature(t *testing.T) {
	key := mautrixfed.GenerateSigningKey()
	hubKey := mautrixfed.GenerateSigningKey()
	e := &Engine{serverName: "part.example", key: key}
	echo := func() *received {
		p := &pdu.PDU{RoomID: "!r:hub.example", Type: "m.room.message", Sender: "@a:part.example", HubServer: "hub.example",
			Content: json.RawMessage(`{"body":"hi"}`)}
		if _, _, err := e.makeLPDU(p, "hub.example"); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Complete([]string{"$c"}, "$prev", "hub.example", string(hubKey.ID), hubKey.Priv); err != nil {
			t.Fatal(err)
		}
		return &received{p: p}
	}
	r := echo()
	if e.isOwnEcho(r) {
		t.Fatal("an echo of an LPDU we never recorded as sent was taken as ours")
	}
	lpduID, err := r.p.LPDUID()
	if err != nil {
		t.Fatal(err)
	}
	if r.lpduID != lpduID {
		t.Fatalf("lpduID %q, want %q", r.lpduID, lpduID)
	}
	e.sentLPDUs.Store(lpduID, r.p.Signatures["part.example"][string(key.ID)])
	if !e.isOwnEcho(echo()) {
		t.Fatal("the echo of an LPDU we sent was not recognised")
	}

	r = echo()
	r.p.Signatures["part.example"][string(key.ID)] = r.p.Signatures["hub.example"][string(hubKey.ID)]
	if e.isOwnEcho(r) {
		t.Fatal("an echo with a changed signature of ours was taken as ours")
	}
	r = echo()
	r.p.Signatures["part.example"]["ed25519:other"] = r.p.Signatures["part.example"][string(key.ID)]
	if e.isOwnEcho(r) {
		t.Fatal("an echo with an extra signature of our server was taken as ours")
	}
	r = echo()
	r.p.OriginServerTS++
	if e.isOwnEcho(r) {
		t.Fatal("an echo whose signed view changed was taken as ours")
	}
	r = echo()
	r.p.Sender = "@a:other.example"
	if e.isOwnEcho(r) {
		t.Fatal("an event of another server was taken as ours")
	}
}

// TestEchoesForgetSentLPDUs sends LPDUs through a hub over loopback HTTP and checks that their echoes arrive and that
// nothing stays remembered as sent.
func TestEchoesForgetSentLPDUs(t *testing.T) {
	ctx := testContext(t)
	hub := newHTTPNode(t, nil)
	part := newHTTPNode(t, nil)
	roomID, _, bob := joinedPair(t, hub, part)
	var lpduIDs []string
	for i := 0; i < 5; i++ {
		lpduIDs = append(lpduIDs, must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text(fmt.Sprint("hi ", i)), time.Time{})))
	}
	ids := logIDs(t, hub, roomID)
	for len(ids) < 5 {
		time.Sleep(10 * time.Millisecond)
		ids = logIDs(t, hub, roomID)
	}
	part.rec.waitFor(t, "the echoes of all five LPDUs", func() bool {
		evs := must(part.eng.Events(ctx, roomID, 0, 1000))
		echoed := 0
		for _, ev := range evs {
			if slices.Contains(lpduIDs, ev.LPDUID) {
				echoed++
			}
		}
		return echoed == len(lpduIDs)
	})
	for _, id := range lpduIDs {
		if _, ok := part.eng.sentLPDUs.Load(id); ok {
			t.Errorf("LPDU %s still remembered as sent after its echo", id)
		}
	}
}
