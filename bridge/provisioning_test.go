package bridge

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/lmbridge/lmbridge/config"
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
