package bridge

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/linearize"
)

func provRequest(t *testing.T, h http.Handler, method, path, auth, body string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req = req.WithContext(testContext(t))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s answered non-JSON %q", method, path, rec.Body.String())
	}
	return rec.Code, out
}

func TestProvisioningAuth(t *testing.T) {
	disabled := newTestBridge(t, nil, config.Bridge{}).ProvisioningHandler()
	if code, body := provRequest(t, disabled, http.MethodGet, ProvisioningPrefix+"/links", "Bearer anything", ""); code != http.StatusNotFound || body["errcode"] != "M_UNRECOGNIZED" {
		t.Errorf("disabled API = %d %v", code, body)
	}
	h := newTestBridge(t, nil, config.Bridge{Provisioning: config.Provisioning{SharedSecret: "s3cret"}}).ProvisioningHandler()
	for _, tc := range []struct {
		auth    string
		code    int
		errcode string
	}{
		{"", http.StatusUnauthorized, "M_MISSING_TOKEN"},
		{"Basic s3cret", http.StatusUnauthorized, "M_MISSING_TOKEN"},
		{"Bearer wrong", http.StatusUnauthorized, "M_UNKNOWN_TOKEN"},
		{"Bearer s3cre", http.StatusUnauthorized, "M_UNKNOWN_TOKEN"},
	} {
		code, body := provRequest(t, h, http.MethodGet, ProvisioningPrefix+"/links", tc.auth, "")
		if code != tc.code || body["errcode"] != tc.errcode {
			t.Errorf("auth %q = %d %v, want %d %s", tc.auth, code, body, tc.code, tc.errcode)
		}
	}
	if code, body := provRequest(t, h, http.MethodGet, ProvisioningPrefix+"/links", "Bearer s3cret", ""); code != http.StatusOK || len(body["links"].([]any)) != 0 {
		t.Errorf("list = %d %v", code, body)
	}
}

func TestProvisioningLinks(t *testing.T) {
	tb := newTestBridge(t, nil, config.Bridge{Provisioning: config.Provisioning{SharedSecret: "s3cret"}})
	tb.seedDAGRoom()
	h := tb.ProvisioningHandler()
	const auth = "Bearer s3cret"
	links := ProvisioningPrefix + "/links"
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		errcode                  string
	}{
		{"not JSON", http.MethodPost, links, "{nope", http.StatusBadRequest, "M_NOT_JSON"},
		{"wrong shape", http.MethodPost, links, `{"dag_room_id": 5}`, http.StatusBadRequest, "M_BAD_JSON"},
		{"unknown field", http.MethodPost, links, `{"dag_room_id": "!a:b", "colour": "red"}`, http.StatusBadRequest, "M_BAD_JSON"},
		{"no room", http.MethodPost, links, `{}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"not a room ID", http.MethodPost, links, `{"dag_room_id": "#alias:hs.example"}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"LM room without hub", http.MethodPost, links, `{"dag_room_id": "!dag:hs.example", "lm_room_id": "!x:remote", "user_id": "@alice:hs.example"}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"bad user", http.MethodPost, links, `{"dag_room_id": "!dag:hs.example", "user_id": "alice"}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"unknown room", http.MethodPost, links, `{"dag_room_id": "!unknown:hs.example"}`, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"too large", http.MethodPost, links, `{"dag_room_id": "` + strings.Repeat("a", 70_000) + `"}`, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{"delete unlinked", http.MethodDelete, links + "/!dag:hs.example", "", http.StatusNotFound, "M_NOT_FOUND"},
		{"get unlinked", http.MethodGet, links + "/!dag:hs.example", "", http.StatusNotFound, "M_NOT_FOUND"},
		{"wrong method", http.MethodPut, links, "", http.StatusMethodNotAllowed, "M_UNRECOGNIZED"},
		{"unknown path", http.MethodGet, ProvisioningPrefix + "/nothing", "", http.StatusNotFound, "M_UNRECOGNIZED"},
	} {
		code, body := provRequest(t, h, tc.method, tc.path, auth, tc.body)
		if code != tc.code || body["errcode"] != tc.errcode {
			t.Errorf("%s: %d %v, want %d %s", tc.name, code, body, tc.code, tc.errcode)
		}
	}
	if l, _ := tb.DB().ListLinks(testContext(t)); len(l) != 0 {
		t.Fatalf("bad requests left links: %v", l)
	}
	code, body := provRequest(t, h, http.MethodPost, links, auth, `{"dag_room_id": "!dag:hs.example", "user_id": "@alice:hs.example"}`)
	if code != http.StatusCreated || body["role"] != "hub" || body["created_by"] != "@alice:hs.example" {
		t.Fatalf("create = %d %v", code, body)
	}
	lmRoom := body["lm_room_id"].(string)
	if code, body := provRequest(t, h, http.MethodPost, links, auth, `{"dag_room_id": "!dag:hs.example"}`); code != http.StatusConflict || body["errcode"] != "M_ROOM_IN_USE" {
		t.Errorf("second create = %d %v", code, body)
	}
	if code, body := provRequest(t, h, http.MethodGet, links, auth, ""); code != http.StatusOK || len(body["links"].([]any)) != 1 {
		t.Errorf("list = %d %v", code, body)
	}
	if code, body := provRequest(t, h, http.MethodGet, links+"/!dag:hs.example", auth, ""); code != http.StatusOK || body["lm_room_id"] != lmRoom ||
		len(body["lm_members"].([]any)) != 3 {
		t.Errorf("get = %d %v", code, body)
	}
	if code, body := provRequest(t, h, http.MethodDelete, links+"/!dag:hs.example", auth, ""); code != http.StatusOK || body["lm_room_id"] != lmRoom {
		t.Errorf("delete = %d %v", code, body)
	}
	if l, _ := tb.DB().ListLinks(testContext(t)); len(l) != 0 {
		t.Fatalf("delete left links: %v", l)
	}
}

// TestProvisioningLinkErrors: a link to an existing LM room that cannot be made is answered as the caller's mistake
// (4xx, with the Matrix error code that names it) when the request, the hub's address or the hub's refusal is the
// reason, and as the hub's failure (502) when the hub cannot be reached; nothing is linked either way. The engines
// are real, on loopback.
func TestProvisioningLinkErrors(t *testing.T) {
	ctx := testContext(t)
	links := ProvisioningPrefix + "/links"
	const auth = "Bearer s3cret"
	request := func(lmRoom, hub string, user id.UserID) string {
		return string(mustJSON(map[string]any{"dag_room_id": dagRoom, "lm_room_id": lmRoom, "hub_server": hub, "user_id": user}))
	}
	check := func(t *testing.T, ts *twoServers, name, body string, code int, errcode string, says ...string) {
		t.Helper()
		got, answer := provRequest(t, ts.br.ProvisioningHandler(), http.MethodPost, links, auth, body)
		msg, _ := answer["error"].(string)
		if got != code || answer["errcode"] != errcode {
			t.Errorf("%s: %d %v, want %d %s", name, got, answer, code, errcode)
		}
		for _, s := range says {
			if !strings.Contains(msg, s) {
				t.Errorf("%s: message %q does not say %q", name, msg, s)
			}
		}
		if l, _ := ts.br.DB().ListLinks(ctx); len(l) != 0 {
			t.Errorf("%s left links: %v", name, l)
		}
	}
	setup := func(t *testing.T, blocked []string) (*twoServers, string) {
		ts := newTwoServersBlocking(t, ctx, blocked)
		ts.br.cfg.Provisioning.SharedSecret = "s3cret"
		(&testBridge{Bridge: ts.br, mx: ts.mx}).seedDAGRoom()
		public, err := ts.remote.CreateRoom(ctx, ts.bob, []linearize.InitialState{{Type: "m.room.join_rules", Content: map[string]any{"join_rule": "public"}}})
		if err != nil {
			t.Fatal(err)
		}
		return ts, public
	}

	t.Run("blocked hub", func(t *testing.T) {
		ts, public := setup(t, []string{"127.0.0.0/8"})
		check(t, ts, "hub on a blocked address", request(public, ts.remote.ServerName(), alice), http.StatusForbidden, "M_FORBIDDEN",
			"blocked", "lm.ip_range_blocklist", ts.remote.ServerName())
		// The bot's answer to the command says the same.
		tb := &testBridge{Bridge: ts.br, mx: ts.mx}
		if a := command(t, tb, alice, "$blocked", "!lm link "+public+" via "+ts.remote.ServerName()); !strings.Contains(a, "Could not link") ||
			!strings.Contains(a, "is blocked by this bridge's lm.ip_range_blocklist") {
			t.Errorf("answer to a link through a blocked hub = %q", a)
		}
	})
	t.Run("hub refuses or fails", func(t *testing.T) {
		ts, public := setup(t, nil)
		inviteOnly, err := ts.remote.CreateRoom(ctx, ts.bob, nil)
		if err != nil {
			t.Fatal(err)
		}
		hub := ts.remote.ServerName()
		check(t, ts, "not invited", request(inviteOnly, hub, alice), http.StatusForbidden, "M_FORBIDDEN", "refused the join")
		check(t, ts, "unknown room", request("!nothing:"+hub, hub, alice), http.StatusNotFound, "M_NOT_FOUND", "refused the join")
		check(t, ts, "user not in the room", request(public, hub, "@zed:hs.example"), http.StatusBadRequest, "M_INVALID_PARAM", "@zed:hs.example")
		check(t, ts, "a ghost as user", request(public, hub, bobGhost), http.StatusBadRequest, "M_INVALID_PARAM")
		// A port nobody listens on: the hub cannot be reached, which is not the caller's to fix.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := ln.Addr().String()
		_ = ln.Close()
		check(t, ts, "unreachable hub", request("!x:"+closed, closed, alice), http.StatusBadGateway, "M_UNKNOWN", closed)
	})
}
