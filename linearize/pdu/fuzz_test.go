package pdu

import (
	"bytes"
	"context"
	"testing"
)

// FuzzParse: no input panics; every event that parses encodes, parses again and encodes to the same bytes, and
// every derived form (ID, hashes, redaction, LPDU view) can be computed.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"room_id":"!r:hub.example","type":"m.room.message","sender":"@a:p.example","origin_server_ts":1,` +
		`"content":{"body":"hi"},"hub_server":"hub.example","hashes":{"lpdu":{"sha256":"x"}},"signatures":{}}`))
	f.Add([]byte(`{"room_id":"!r:hub.example","type":"m.room.create","state_key":"","sender":"@a:hub.example",` +
		`"origin_server_ts":1,"content":{"room_version":"I.1"},"hashes":{"sha256":"x"},"signatures":{},` +
		`"auth_events":[],"prev_events":[],"unsigned":{"age":1},"event_id":"$x","depth":3}`))
	f.Add([]byte(`{"room_id":"!r:h","type":"m.room.member","state_key":"@a:h","sender":"@a:h","origin_server_ts":-5,` +
		`"content":{"membership":"join","x":[1,{"y":null}]},"hashes":{"sha256":"x"},"signatures":{"h":{"ed25519:1":"AA"}},` +
		`"auth_events":["$a"],"prev_events":["$b"]}`))
	f.Add([]byte(`{"type":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		wire, err := p.Canonical()
		if err != nil {
			t.Fatalf("parsed event does not encode: %v", err)
		}
		if len(wire) > MaxEventBytes {
			t.Fatalf("parsed event is %d bytes", len(wire))
		}
		again, err := Parse(wire)
		if err != nil {
			t.Fatalf("own encoding %q does not parse: %v", wire, err)
		}
		wire2, err := again.Canonical()
		if err != nil || !bytes.Equal(wire, wire2) {
			t.Fatalf("encode→parse→encode differs:\n%q\n%q (%v)", wire, wire2, err)
		}
		if _, err := p.EventID(); err != nil {
			t.Fatalf("EventID: %v", err)
		}
		if _, err := p.ComputeContentHash(); err != nil {
			t.Fatalf("ComputeContentHash: %v", err)
		}
		if _, err := p.ComputeLPDUHash(); err != nil {
			t.Fatalf("ComputeLPDUHash: %v", err)
		}
		red, err := p.Redacted()
		if err != nil {
			t.Fatalf("Redacted: %v", err)
		}
		id1, _ := p.EventID()
		id2, _ := red.EventID()
		if id1 != id2 {
			t.Fatalf("redaction changed the event ID")
		}
		_ = p.LPDUView()
		_, _ = VerifyReceived(context.Background(), StaticKeys{}, p)
	})
}
