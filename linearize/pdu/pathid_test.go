package pdu

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// TestIDsInRequestPaths: eigen and the independent peer put the event ID of an invite PDU, and the LPDU ID of a
// send_join LPDU, into the request path. Our IDs must be theirs; for LPDUs this is the same computation as the
// failed_pdus key.
func TestIDsInRequestPaths(t *testing.T) {
	type exchange struct {
		URL         string          `json:"url"`
		Path        string          `json:"path"`
		RequestBody json.RawMessage `json:"request_body"`
	}
	var checked, lpdus int
	for _, name := range []string{"10-eigen-to-eigen-federation-trace.json", "30-independent-peer-trace.json"} {
		var trace struct {
			Exchanges []exchange `json:"exchanges"`
		}
		readJSON(t, name, &trace)
		for i, ex := range trace.Exchanges {
			path := ex.Path
			if path == "" {
				u, err := url.Parse(ex.URL)
				if err != nil {
					t.Fatal(err)
				}
				path = u.EscapedPath()
			}
			var kind string
			switch {
			case strings.Contains(path, "/send_join/"):
				kind = "send_join"
			case strings.Contains(path, "/invite/"):
				kind = "invite"
			default:
				continue
			}
			want, err := url.PathUnescape(path[strings.LastIndexByte(path, '/')+1:])
			if err != nil {
				t.Fatal(err)
			}
			body := ex.RequestBody
			if kind == "invite" {
				var inv struct {
					Event json.RawMessage `json:"event"`
				}
				if err := json.Unmarshal(body, &inv); err != nil {
					t.Fatal(err)
				}
				body = inv.Event
			}
			p, err := Parse(body)
			if err != nil {
				t.Fatalf("%s exchange %d: %v", name, i, err)
			}
			if p.IsLPDU() {
				lpdus++
			}
			got, err := p.EventID()
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s exchange %d (%s): ID %s, path says %s", name, i, kind, got, want)
			}
			checked++
		}
	}
	if checked < 6 || lpdus < 3 {
		t.Fatalf("checked only %d paths (%d LPDUs)", checked, lpdus)
	}
	t.Logf("%d path IDs, %d of them LPDU IDs", checked, lpdus)
}
