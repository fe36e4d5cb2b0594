package pdu

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// eigenKeys are the servers' keys as the fixtures publish them: eigen A and B in 01-*, the independent peer in its
// key exchange inside 30-*.
func eigenKeys(t testing.TB) StaticKeys {
	t.Helper()
	keys := StaticKeys{}
	addKeyResponse := func(raw []byte) {
		var resp struct {
			ServerName string `json:"server_name"`
			VerifyKeys map[string]struct {
				Key string `json:"key"`
			} `json:"verify_keys"`
		}
		if err := json.Unmarshal(raw, &resp); err != nil {
			t.Fatal(err)
		}
		for id, k := range resp.VerifyKeys {
			pub, err := base64.RawStdEncoding.DecodeString(k.Key)
			if err != nil {
				t.Fatal(err)
			}
			if keys[resp.ServerName] == nil {
				keys[resp.ServerName] = map[string]ed25519.PublicKey{}
			}
			keys[resp.ServerName][id] = pub
		}
	}
	rawA, err := os.ReadFile(filepath.Join(interopDir, "eigen", "01-key-v2-server-A.http.txt"))
	if err != nil {
		t.Fatal(err)
	}
	_, body, ok := bytes.Cut(rawA, []byte("\r\n\r\n"))
	if !ok {
		_, body, ok = bytes.Cut(rawA, []byte("\n\n"))
	}
	if !ok {
		t.Fatal("no body in 01-key-v2-server-A.http.txt")
	}
	addKeyResponse(body)
	rawB, err := os.ReadFile(filepath.Join(interopDir, "eigen", "01-key-v2-server-B.json"))
	if err != nil {
		t.Fatal(err)
	}
	addKeyResponse(rawB)
	var trace struct {
		Exchanges []struct {
			Path         string          `json:"path"`
			ResponseBody json.RawMessage `json:"response_body"`
		} `json:"exchanges"`
	}
	readJSON(t, "30-independent-peer-trace.json", &trace)
	for _, ex := range trace.Exchanges {
		if ex.Path == "/_matrix/key/v2/server" && bytes.Contains(ex.ResponseBody, []byte(`"127.0.0.1:3002"`)) {
			addKeyResponse(ex.ResponseBody)
			break
		}
	}
	for _, server := range []string{"127.0.0.1:3000", "127.0.0.1:3001", "127.0.0.1:3002"} {
		if len(keys[server]) == 0 {
			t.Fatalf("no key for %s in the fixtures", server)
		}
	}
	return keys
}

func readJSON(t testing.TB, name string, v any) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(interopDir, "eigen", name))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

type fixtureEvent struct {
	where string
	raw   []byte
	id    string // event_id as the fixture states it, if any
}

// fixtureEvents finds every event object in a fixture file.
func fixtureEvents(t testing.TB, name string) []fixtureEvent {
	var doc any
	readJSON(t, name, &doc)
	var out []fixtureEvent
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch x := v.(type) {
		case map[string]any:
			_, hasType := x["type"]
			_, hasSender := x["sender"]
			_, hasSigs := x["signatures"]
			if hasType && hasSender && hasSigs {
				raw, err := json.Marshal(x)
				if err != nil {
					t.Fatal(err)
				}
				id, _ := x["event_id"].(string)
				out = append(out, fixtureEvent{where: name + path, raw: raw, id: id})
			}
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				walk(x[k], path+"/"+k)
			}
		case []any:
			for i, item := range x {
				walk(item, fmt.Sprintf("%s/%d", path, i))
			}
		}
	}
	walk(doc, "")
	return out
}

// tamperedInFixtures are the events the independent peer corrupted on purpose (new content and LPDU hash under
// the old signature); eigen refused them with "Signature error from origin (LPDU)", and so must we.
var tamperedInFixtures = map[string]bool{
	"30-independent-peer-trace.json/exchanges/8/request_body/pdus/0": true,
}

// TestEigenEvents checks every event in the eigen exchanges: it parses, its ID is what eigen says, and its
// signatures and content hashes verify with the published keys.
func TestEigenEvents(t *testing.T) {
	keys := eigenKeys(t)
	files := []string{
		"10-eigen-to-eigen-federation-trace.json", "20-hub-dump-room.json", "21-federation-GET-endpoints.json",
		"30-independent-peer-trace.json", "31-independent-peer-check-results.json",
		"32-independent-hub-room-timeline.json",
	}
	total, withID := 0, 0
	for _, f := range files {
		for _, ev := range fixtureEvents(t, f) {
			total++
			p, err := Parse(ev.raw)
			if err != nil {
				t.Errorf("%s: %v", ev.where, err)
				continue
			}
			id, err := p.EventID()
			if err != nil {
				t.Errorf("%s: %v", ev.where, err)
				continue
			}
			if ev.id != "" {
				withID++
				if id != ev.id {
					t.Errorf("%s: event ID %s, eigen says %s", ev.where, id, ev.id)
				}
			}
			res, err := VerifyReceived(context.Background(), keys, p)
			if tamperedInFixtures[ev.where] {
				if !errors.Is(err, ErrBadSignature) {
					t.Errorf("%s: tampered event gave %v %+v, want ErrBadSignature", ev.where, err, res)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", ev.where, err)
				continue
			}
			if res.Redacted {
				t.Errorf("%s: content hash: %v", ev.where, res.HashErr)
			}
			// Re-encoding what we parsed is stable.
			wire, err := p.Canonical()
			if err != nil {
				t.Fatal(err)
			}
			again, err := Parse(wire)
			if err != nil {
				t.Errorf("%s: own encoding does not parse: %v", ev.where, err)
				continue
			}
			if wire2, _ := again.Canonical(); !bytes.Equal(wire, wire2) {
				t.Errorf("%s: encode→parse→encode differs", ev.where)
			}
		}
	}
	if total < 100 || withID < 40 {
		t.Fatalf("found only %d events (%d with IDs) in the fixtures", total, withID)
	}
	t.Logf("checked %d events, %d against eigen's event IDs", total, withID)
}

// TestEigenTampered changes one byte of each event in the hub's dump and checks that §5.1 does the right thing: a
// change under a signature drops the event, a change only under the content hash gives the redacted copy.
func TestEigenTampered(t *testing.T) {
	keys := eigenKeys(t)
	events := fixtureEvents(t, "20-hub-dump-room.json")
	if len(events) != 9 {
		t.Fatalf("expected 9 events in the dump, found %d", len(events))
	}
	for _, ev := range events {
		orig, err := Parse(ev.raw)
		if err != nil {
			t.Fatal(err)
		}
		name := orig.Type + " " + ev.id

		// origin_server_ts is covered by every signature: one digit changed drops the event.
		ts := fmt.Sprintf(`"origin_server_ts":%d`, orig.OriginServerTS)
		changed := fmt.Sprintf(`"origin_server_ts":%d`, orig.OriginServerTS+1)
		if len(changed) != len(ts) {
			t.Fatal("timestamp length changed")
		}
		mustDrop(t, name+" (timestamp)", keys, bytes.Replace(ev.raw, []byte(ts), []byte(changed), 1))

		// One byte of the signature of the sender's server.
		sig := orig.Signatures[orig.SenderServer()]["ed25519:1"]
		mustDrop(t, name+" (signature)", keys, bytes.Replace(ev.raw, []byte(sig), []byte(flipBase64(sig)), 1))

		// One byte of content that redaction removes: only the content hash notices.
		var victim string
		switch orig.Type {
		case "m.room.message":
			victim = "hello"
		case "m.room.power_levels":
			victim = `"notifications":{"room":50}`
		}
		if victim == "" {
			continue
		}
		i := bytes.Index(ev.raw, []byte(victim))
		if i < 0 {
			t.Fatalf("%s: %q not found", name, victim)
		}
		raw := bytes.Clone(ev.raw)
		if orig.Type == "m.room.message" {
			raw[i] = 'j'
		} else {
			raw[i+len(`"notifications":{"room":5`)] = '1'
		}
		p, err := Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		res, err := VerifyReceived(context.Background(), keys, p)
		if err != nil {
			t.Errorf("%s (content): %v, want the redacted copy", name, err)
			continue
		}
		if !res.Redacted || !errors.Is(res.HashErr, ErrContentHashMismatch) {
			t.Errorf("%s (content): not redacted: %+v", name, res)
			continue
		}
		if id, _ := res.Event.EventID(); id != ev.id {
			t.Errorf("%s: redacted copy has ID %s", name, id)
		}
		if strings.Contains(string(res.Event.Content), "hello") || strings.Contains(string(res.Event.Content), "notifications") {
			t.Errorf("%s: redacted copy keeps content %s", name, res.Event.Content)
		}
	}
}

func mustDrop(t *testing.T, name string, keys KeyLookup, raw []byte) {
	t.Helper()
	p, err := Parse(raw)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if _, err := VerifyReceived(context.Background(), keys, p); !errors.Is(err, ErrBadSignature) {
		t.Errorf("%s: got %v, want ErrBadSignature", name, err)
	}
}

// flipBase64 changes one character in the middle of a base64 string to another valid one.
func flipBase64(s string) string {
	b := []byte(s)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}
