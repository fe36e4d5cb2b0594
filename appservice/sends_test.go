package appservice

import (
	"testing"

	"maunium.net/go/mautrix/event"
)

// TestWithTxnMarker puts the transaction ID into every kind of content an intent is given, without touching the
// caller's map.
func TestWithTxnMarker(t *testing.T) {
	type namedContent map[string]any
	plain := map[string]any{"msgtype": "m.text", "body": "map"}
	for name, content := range map[string]any{
		"map":    plain,
		"named":  namedContent{"msgtype": "m.text", "body": "named"},
		"struct": &event.MessageEventContent{MsgType: event.MsgText, Body: "struct"},
		"nil":    nil,
	} {
		got, err := withTxnMarker(content, "lmb.txn")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got[TxnMarkerKey] != "lmb.txn" {
			t.Errorf("%s: marker %v, want lmb.txn", name, got[TxnMarkerKey])
		}
		if content != nil && got["body"] != name {
			t.Errorf("%s: body %v lost", name, got["body"])
		}
	}
	if _, ok := plain[TxnMarkerKey]; ok {
		t.Error("the caller's map was changed")
	}
	if _, err := withTxnMarker([]int{1}, "lmb.txn"); err == nil {
		t.Error("content that is not a JSON object was accepted")
	}
}

// TestTxnMarkerReadsBothForms finds the marker in parsed and in raw content.
func TestTxnMarkerReadsBothForms(t *testing.T) {
	raw := &event.Event{Content: event.Content{VeryRaw: []byte(`{"body":"x","` + TxnMarkerKey + `":"lmb.a"}`)}}
	if got := txnMarker(raw); got != "lmb.a" {
		t.Errorf("raw content: %q", got)
	}
	parsed := &event.Event{Content: event.Content{Raw: map[string]any{TxnMarkerKey: "lmb.b"}}}
	if got := txnMarker(parsed); got != "lmb.b" {
		t.Errorf("parsed content: %q", got)
	}
	if got := txnMarker(&event.Event{}); got != "" {
		t.Errorf("no content: %q", got)
	}
}
