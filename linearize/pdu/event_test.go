package pdu

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"testing"
)

func testKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:])
}

func TestRedactionKeepsTheDraftsAllowList(t *testing.T) {
	cases := []struct{ typ, content, want string }{
		{"m.room.message", `{"body":"x","msgtype":"m.text"}`, `{}`},
		{"m.room.create", `{"room_version":"I.1","m.federate":false,"x":1}`, `{"m.federate":false,"room_version":"I.1","x":1}`},
		{"m.room.member", `{"membership":"join","displayname":"A","join_authorised_via_users_server":"@x:y"}`, `{"membership":"join"}`},
		{"m.room.join_rules", `{"join_rule":"restricted","allow":[]}`, `{"join_rule":"restricted"}`},
		{"m.room.history_visibility", `{"history_visibility":"shared","x":1}`, `{"history_visibility":"shared"}`},
		{"m.room.power_levels", `{"ban":1,"events":{},"events_default":2,"invite":3,"kick":4,"notifications":{"room":5},"redact":6,"state_default":7,"users":{},"users_default":8,"x":9}`,
			`{"ban":1,"events":{},"events_default":2,"invite":3,"kick":4,"redact":6,"state_default":7,"users":{},"users_default":8}`},
		{"m.room.redaction", `{"redacts":"$x","reason":"r"}`, `{}`},
	}
	for _, c := range cases {
		p := &PDU{RoomID: "!r:h", Type: c.typ, StateKey: StringPtr(""), Sender: "@a:h", Content: json.RawMessage(c.content),
			Hashes: Hashes{SHA256: "h"}, Signatures: map[string]map[string]string{"h": {"ed25519:1": "s"}},
			AuthEvents: []string{"$a"}, PrevEvents: []string{"$p"}, Extra: map[string]json.RawMessage{"depth": json.RawMessage("3")}}
		r, err := p.Redacted()
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Content) != c.want {
			t.Errorf("%s: redacted content %s, want %s", c.typ, r.Content, c.want)
		}
		if r.Extra != nil || r.Hashes.SHA256 != "h" || r.Signatures["h"]["ed25519:1"] != "s" || len(r.AuthEvents) != 1 {
			t.Errorf("%s: redaction dropped the wrong fields: %+v", c.typ, r)
		}
		id1, _ := p.EventID()
		id2, _ := r.EventID()
		if id1 != id2 {
			t.Errorf("%s: redaction changed the event ID", c.typ)
		}
	}
}

func TestHubLocalEvent(t *testing.T) {
	hubKey := testKey("hub")
	p := &PDU{RoomID: "!r:hub", Type: "m.room.message", Sender: "@alice:hub", OriginServerTS: 5}
	if err := p.SetContent(map[string]any{"body": "hi"}); err != nil {
		t.Fatal(err)
	}
	id, err := p.Complete([]string{"$c", "$p", "$m"}, "$prev", "hub", "ed25519:1", hubKey)
	if err != nil {
		t.Fatal(err)
	}
	if p.Hashes.LPDU != nil || p.HubServer != "" || len(p.Signatures) != 1 {
		t.Fatalf("hub-local event grew LPDU parts: %+v", p)
	}
	raw, _ := p.Canonical()
	got, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	keys := StaticKeys{"hub": {"ed25519:1": hubKey.Public().(ed25519.PublicKey)}}
	if res, err := VerifyReceived(context.Background(), keys, got); err != nil || res.Redacted {
		t.Fatalf("hub-local event does not verify: %v %+v", err, res)
	}
	if id2, _ := got.EventID(); id2 != id {
		t.Fatalf("Complete said %s, EventID says %s", id, id2)
	}
	// A create event: prev_events [] and auth_events [] on the wire.
	c := &PDU{RoomID: "!r:hub", Type: "m.room.create", StateKey: StringPtr(""), Sender: "@alice:hub", OriginServerTS: 1}
	if err := c.SetContent(map[string]string{"room_version": RoomVersionLM02}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Complete(nil, "", "hub", "ed25519:1", hubKey); err != nil {
		t.Fatal(err)
	}
	raw, _ = c.Canonical()
	if _, err := Parse(raw); err != nil {
		t.Fatalf("create %s: %v", raw, err)
	}
	if c.AuthEvents == nil || c.PrevEvents == nil || len(c.AuthEvents)+len(c.PrevEvents) != 0 {
		t.Fatalf("create completed with %v %v", c.AuthEvents, c.PrevEvents)
	}
}

func TestSigningErrors(t *testing.T) {
	key := testKey("p")
	p := &PDU{RoomID: "!r:hub", Type: "m.room.message", Sender: "@a:p", HubServer: "hub"}
	if err := p.SignLPDU("p", "ed25519:1", key); !errors.Is(err, ErrNotLPDU) {
		t.Errorf("signing an LPDU without hashes.lpdu: %v", err)
	}
	if err := p.FillLPDUHash(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Complete(nil, "$p", "other-hub", "ed25519:1", key); !errors.Is(err, ErrWrongHub) {
		t.Errorf("completing another hub's LPDU: %v", err)
	}
	// A participant signature that is missing altogether is a bad signature, not a pass.
	keys := StaticKeys{"p": {"ed25519:1": key.Public().(ed25519.PublicKey)}}
	if err := p.VerifySignatures(context.Background(), keys); !errors.Is(err, ErrBadSignature) {
		t.Errorf("unsigned LPDU: %v", err)
	}
	if err := p.SignLPDU("p", "ed25519:1", key); err != nil {
		t.Fatal(err)
	}
	if err := p.VerifySignatures(context.Background(), keys); err != nil {
		t.Errorf("signed LPDU: %v", err)
	}
	// Unknown key: dropped as a bad signature, with the lookup's reason.
	if err := p.VerifySignatures(context.Background(), StaticKeys{}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("unknown key: %v", err)
	}
	// Garbage in the signature string.
	p.Signatures["p"]["ed25519:1"] = "!!"
	if err := p.VerifySignatures(context.Background(), keys); !errors.Is(err, ErrBadSignature) {
		t.Errorf("garbage signature: %v", err)
	}
}

func TestContentHashMismatchOnLPDU(t *testing.T) {
	key := testKey("p")
	p := &PDU{RoomID: "!r:hub", Type: "m.room.message", Sender: "@a:p", HubServer: "hub", Content: json.RawMessage(`{"body":"a"}`)}
	if err := p.FillLPDUHash(); err != nil {
		t.Fatal(err)
	}
	if err := p.SignLPDU("p", "ed25519:1", key); err != nil {
		t.Fatal(err)
	}
	p.Content = json.RawMessage(`{"body":"b"}`)
	keys := StaticKeys{"p": {"ed25519:1": key.Public().(ed25519.PublicKey)}}
	res, err := VerifyReceived(context.Background(), keys, p)
	if err != nil || !res.Redacted || !errors.Is(res.HashErr, ErrContentHashMismatch) || string(res.Event.Content) != "{}" {
		t.Fatalf("got %v %+v", err, res)
	}
}

func TestSizeLimitOnTheWayOut(t *testing.T) {
	key := testKey("p")
	big := make([]byte, MaxEventBytes)
	for i := range big {
		big[i] = 'a'
	}
	p := &PDU{RoomID: "!r:hub", Type: "m.room.message", Sender: "@a:p", HubServer: "hub"}
	if err := p.SetContent(map[string]string{"body": string(big[:MaxEventBytes-400])}); err != nil {
		t.Fatal(err)
	}
	if err := p.FillLPDUHash(); err != nil {
		t.Fatal(err)
	}
	if err := p.SignLPDU("p", "ed25519:1", key); err != nil {
		t.Fatalf("an LPDU just under the limit: %v", err)
	}
	// The hub's additions push it over.
	auth := []string{"$" + string(big[:100]), "$" + string(big[:100]), "$" + string(big[:100])}
	if _, err := p.Complete(auth, "$prev", "hub", "ed25519:1", key); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("oversized completion: %v", err)
	}
	q := &PDU{RoomID: "!r:hub", Type: "m.room.message", Sender: "@a:p", HubServer: "hub"}
	if err := q.SetContent(map[string]string{"body": string(big)}); err != nil {
		t.Fatal(err)
	}
	_ = q.FillLPDUHash()
	if err := q.SignLPDU("p", "ed25519:1", key); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("oversized LPDU signed: %v", err)
	}
}
