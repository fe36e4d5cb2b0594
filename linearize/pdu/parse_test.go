package pdu

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/lmbridge/lmbridge/linearize/canonicaljson"
)

func baseEvent() map[string]any {
	return map[string]any{
		"room_id":          "!r:hub.example",
		"type":             "m.room.message",
		"sender":           "@a:p.example",
		"origin_server_ts": 1700000000000,
		"content":          map[string]any{"body": "hi"},
		"hashes":           map[string]any{"sha256": "abc"},
		"signatures":       map[string]any{"p.example": map[string]any{"ed25519:1": "sig"}},
		"auth_events":      []any{"$a"},
		"prev_events":      []any{"$b"},
	}
}

func baseLPDU() map[string]any {
	ev := baseEvent()
	delete(ev, "auth_events")
	delete(ev, "prev_events")
	ev["hub_server"] = "hub.example"
	ev["hashes"] = map[string]any{"lpdu": map[string]any{"sha256": "abc"}}
	return ev
}

func encodeEvent(t *testing.T, ev map[string]any) []byte {
	t.Helper()
	raw, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestParseAccepts(t *testing.T) {
	p, err := Parse(encodeEvent(t, baseEvent()))
	if err != nil {
		t.Fatal(err)
	}
	if p.IsLPDU() || p.IsState() || p.OriginServerTS != 1700000000000 || string(p.Content) != `{"body":"hi"}` {
		t.Errorf("parsed wrongly: %+v", p)
	}
	l, err := Parse(encodeEvent(t, baseLPDU()))
	if err != nil {
		t.Fatal(err)
	}
	if !l.IsLPDU() {
		t.Error("LPDU is not IsLPDU")
	}
	wire, _ := l.Canonical()
	if strings.Contains(string(wire), "auth_events") || strings.Contains(string(wire), "prev_events") {
		t.Errorf("LPDU written with auth/prev events: %s", wire)
	}

	// unsigned and event_id are dropped; unknown fields kept and hashed; empty arrays kept as [].
	ev := baseEvent()
	ev["unsigned"] = map[string]any{"age": 5}
	ev["event_id"] = "$whatever"
	ev["depth"] = 12
	ev["type"] = "m.room.create"
	ev["state_key"] = ""
	ev["auth_events"] = []any{}
	ev["prev_events"] = []any{}
	p, err = Parse(encodeEvent(t, ev))
	if err != nil {
		t.Fatal(err)
	}
	wire, _ = p.Canonical()
	want := `{"auth_events":[],"content":{"body":"hi"},"depth":12,"hashes":{"sha256":"abc"},` +
		`"origin_server_ts":1700000000000,"prev_events":[],"room_id":"!r:hub.example","sender":"@a:p.example",` +
		`"signatures":{"p.example":{"ed25519:1":"sig"}},"state_key":"","type":"m.room.create"}`
	if string(wire) != want {
		t.Errorf("canonical\n got %s\nwant %s", wire, want)
	}
	red, _ := p.Redacted()
	if wire, _ := red.Canonical(); strings.Contains(string(wire), "depth") || !strings.Contains(string(wire), `"content":{"body":"hi"}`) {
		t.Errorf("redacted create: %s", wire)
	}

	// 255-byte type and state key are fine.
	ev = baseEvent()
	ev["type"] = strings.Repeat("t", 255)
	ev["state_key"] = strings.Repeat("s", 255)
	if _, err := Parse(encodeEvent(t, ev)); err != nil {
		t.Errorf("255-byte type/state_key: %v", err)
	}
}

func TestParseRejects(t *testing.T) {
	type edit func(map[string]any)
	del := func(k string) edit { return func(ev map[string]any) { delete(ev, k) } }
	set := func(k string, v any) edit { return func(ev map[string]any) { ev[k] = v } }
	cases := []struct {
		name  string
		lpdu  bool
		edit  edit
		want  error
		field string
	}{
		{"no room_id", false, del("room_id"), ErrInvalidEvent, "room_id"},
		{"no type", false, del("type"), ErrInvalidEvent, "type"},
		{"no sender", false, del("sender"), ErrInvalidEvent, "sender"},
		{"no origin_server_ts", false, del("origin_server_ts"), ErrInvalidEvent, "origin_server_ts"},
		{"no content", false, del("content"), ErrInvalidEvent, "content"},
		{"no hashes", false, del("hashes"), ErrInvalidEvent, "hashes"},
		{"no signatures", false, del("signatures"), ErrInvalidEvent, "signatures"},
		{"no auth_events", false, del("auth_events"), ErrInvalidEvent, "auth_events"},
		{"no prev_events", false, del("prev_events"), ErrInvalidEvent, "prev_events"},
		{"no hashes.sha256", false, set("hashes", map[string]any{}), ErrInvalidEvent, "hashes.sha256"},
		{"type not a string", false, set("type", 5), ErrInvalidEvent, "type"},
		{"type too long", false, set("type", strings.Repeat("t", 256)), ErrInvalidEvent, "type"},
		{"state_key too long", false, set("state_key", strings.Repeat("s", 256)), ErrInvalidEvent, "state_key"},
		{"state_key not a string", false, set("state_key", nil), ErrInvalidEvent, "state_key"},
		{"content not an object", false, set("content", "x"), ErrInvalidEvent, "content"},
		{"ts a string", false, set("origin_server_ts", "1"), ErrInvalidEvent, "origin_server_ts"},
		{"ts a float", false, set("origin_server_ts", 1.5), canonicaljson.ErrFloat, ""},
		{"ts out of range", false, set("origin_server_ts", json.Number("9007199254740992")), canonicaljson.ErrIntegerRange, ""},
		{"float in content", false, set("content", map[string]any{"x": 0.5}), canonicaljson.ErrFloat, ""},
		{"invalid UTF-8", false, set("content", map[string]any{"x": json.RawMessage("\"\xff\"")}), canonicaljson.ErrInvalidUTF8, ""},
		{"room_id without sigil", false, set("room_id", "r:hub.example"), ErrInvalidEvent, "room_id"},
		{"sender without server", false, set("sender", "@a"), ErrInvalidEvent, "sender"},
		{"auth_events not IDs", false, set("auth_events", []any{"a"}), ErrInvalidEvent, "auth_events"},
		{"prev_events not an array", false, set("prev_events", "$a"), ErrInvalidEvent, "prev_events"},
		{"signatures not nested", false, set("signatures", map[string]any{"p.example": "x"}), ErrInvalidEvent, "signatures"},
		{"unknown hash", false, set("hashes", map[string]any{"sha256": "a", "md5": "b"}), ErrInvalidEvent, "hashes"},
		{"lpdu hash without hub_server", false, set("hashes", map[string]any{"sha256": "a", "lpdu": map[string]any{"sha256": "b"}}), ErrInvalidEvent, "hashes.lpdu"},
		{"hub_server without lpdu hash", false, set("hub_server", "hub.example"), ErrInvalidEvent, "hashes.lpdu"},
		{"hub_server not a server", false, set("hub_server", "a b"), ErrInvalidEvent, "hub_server"},
		{"too large", false, set("content", map[string]any{"x": strings.Repeat("a", MaxEventBytes)}), ErrEventTooLarge, ""},
		{"LPDU with sha256", true, set("hashes", map[string]any{"sha256": "a", "lpdu": map[string]any{"sha256": "b"}}), ErrInvalidEvent, "hashes.sha256"},
		{"LPDU without hub_server", true, func(ev map[string]any) { delete(ev, "hub_server"); ev["hashes"] = map[string]any{} }, ErrInvalidEvent, "auth_events"},
		{"LPDU with only auth_events", true, set("auth_events", []any{}), ErrInvalidEvent, "prev_events"},
	}
	for _, c := range cases {
		ev := baseEvent()
		if c.lpdu {
			ev = baseLPDU()
		}
		c.edit(ev)
		_, err := Parse(encodeEvent(t, ev))
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
			continue
		}
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Errorf("%s: %v is not a FormatError", c.name, err)
			continue
		}
		if c.field != "" && fe.Field != c.field {
			t.Errorf("%s: error names field %q (%v), want %q", c.name, fe.Field, err, c.field)
		}
	}
	for _, bad := range []string{`[]`, `"x"`, `{"a":1,"a":2}`, `{`, ``} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("Parse(%q) = %v", bad, err)
		}
	}
}

func TestUnmarshalJSONIsStrict(t *testing.T) {
	var wrapper struct {
		PDUs []*PDU `json:"pdus"`
	}
	raw := `{"pdus":[` + string(encodeEvent(t, baseEvent())) + `]}`
	if err := json.Unmarshal([]byte(raw), &wrapper); err != nil || len(wrapper.PDUs) != 1 {
		t.Fatalf("%v %v", err, wrapper)
	}
	out, err := json.Marshal(wrapper)
	if err != nil || !strings.Contains(string(out), `"prev_events":["$b"]`) {
		t.Fatalf("marshal: %s %v", out, err)
	}
	bad := strings.Replace(raw, `"hashes":{"sha256":"abc"},`, "", 1)
	if err := json.Unmarshal([]byte(bad), &wrapper); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("missing hashes: %v", err)
	}
}

func TestRoomVersions(t *testing.T) {
	for _, id := range []string{RoomVersionLM02, RoomVersionI1} {
		rv, err := LookupRoomVersion(id)
		if err != nil || rv.ID != id || rv.Protocol != ProtocolLinearizedMatrix {
			t.Errorf("%s: %+v %v", id, rv, err)
		}
	}
	if _, err := LookupRoomVersion("11"); !errors.Is(err, ErrUnknownRoomVersion) {
		t.Errorf("room version 11: %v", err)
	}
	if n := len(RoomVersions()); n != 2 {
		t.Errorf("%d room versions", n)
	}
}
