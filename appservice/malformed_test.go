package appservice

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// asCase is one hostile request to the application-service listener.
type asCase struct {
	name, method, path string
	body               []byte
	// auth is the Authorization header: "" for none, "hs" for the homeserver's token, anything else as it is.
	auth    string
	status  int
	errcode string
}

func (tas *testAS) do(t *testing.T, c asCase) (int, string, string) {
	t.Helper()
	var reader io.Reader
	if c.body != nil {
		reader = bytes.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method, tas.url+c.path, reader)
	if err != nil {
		t.Fatal(err)
	}
	switch c.auth {
	case "":
	case "hs":
		req.Header.Set("Authorization", "Bearer "+testHSToken)
	default:
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e struct {
		ErrCode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if err = json.Unmarshal(data, &e); err != nil {
		t.Errorf("answer is not JSON: %q", data)
	}
	return resp.StatusCode, e.ErrCode, e.Error
}

// Every route of the application-service listener, given bodies that are not JSON, JSON of the wrong shape or
// types, huge numbers, deep nesting, invalid UTF-8, missing or wrong tokens, wrong methods and unknown paths,
// answers 4xx with the Matrix error code that says what was wrong and a message, and stores nothing.
func TestMalformedInputOnEveryAppServiceRoute(t *testing.T) {
	rec := newRecorder()
	tas := startTestAS(t, filepath.Join(t.TempDir(), "as.db"), rec, 1<<20)
	const hugeNumber = "1000000000000000000000000000000000000000000"
	evt := `{"event_id":"$e1","room_id":"!r:hs.test","type":"m.room.message","sender":"@alice:hs.test","content":{"body":"hi"},"origin_server_ts":`
	txnBodies := []struct {
		name, body, errcode string
	}{
		{"not JSON", "not JSON at all", "M_NOT_JSON"},
		{"empty body", "", "M_NOT_JSON"},
		{"truncated JSON", `{"events":[{"type":`, "M_NOT_JSON"},
		{"invalid UTF-8", "{\"events\":[" + evt + "1,\"unsigned\":{\"x\":\"\xff\xfe\"}}]}", "M_NOT_JSON"},
		{"deep nesting", `{"events":[],"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, "M_NOT_JSON"},
		{"not an object", `["events"]`, "M_BAD_JSON"},
		{"null", `null`, "M_BAD_JSON"},
		{"events null", `{"events":null}`, "M_BAD_JSON"},
		{"events a string", `{"events":"x"}`, "M_BAD_JSON"},
		{"event a number", `{"events":[5]}`, "M_BAD_JSON"},
		{"event_id a number", `{"events":[{"event_id":5,"room_id":"!r:hs.test","type":"m.room.message","sender":"@alice:hs.test","content":{},"origin_server_ts":1}]}`, "M_BAD_JSON"},
		{"origin_server_ts huge", `{"events":[` + evt + hugeNumber + `}]}`, "M_BAD_JSON"},
		{"origin_server_ts 1e400", `{"events":[` + evt + `1e400}]}`, "M_BAD_JSON"},
		{"origin_server_ts fractional", `{"events":[` + evt + `1.5}]}`, "M_BAD_JSON"},
		{"ephemeral not an array", `{"events":[],"ephemeral":{}}`, "M_BAD_JSON"},
	}
	var cases []asCase
	for _, prefix := range []string{"/_matrix/app/v1/transactions/", "/transactions/"} {
		for _, b := range txnBodies {
			cases = append(cases, asCase{"PUT " + prefix + ": " + b.name, http.MethodPut, prefix + "m-" + b.name, []byte(b.body), "hs", 400, b.errcode})
		}
		cases = append(cases,
			asCase{"PUT " + prefix + ": no token", http.MethodPut, prefix + "m1", []byte(`{"events":[]}`), "", 401, "M_MISSING_TOKEN"},
			asCase{"PUT " + prefix + ": not a Bearer token", http.MethodPut, prefix + "m1", []byte(`{"events":[]}`), "Basic abc", 401, "M_MISSING_TOKEN"},
			asCase{"PUT " + prefix + ": wrong token", http.MethodPut, prefix + "m1", []byte(`{"events":[]}`), "Bearer nope", 403, "M_FORBIDDEN"},
			asCase{"PUT " + prefix + ": wrong access_token", http.MethodPut, prefix + "m1?access_token=nope", []byte(`{"events":[]}`), "hs", 403, "M_FORBIDDEN"},
			asCase{"POST " + prefix, http.MethodPost, prefix + "m1", []byte(`{"events":[]}`), "hs", 405, "M_UNRECOGNIZED"},
			asCase{"GET " + prefix, http.MethodGet, prefix + "m1", nil, "hs", 405, "M_UNRECOGNIZED"},
		)
	}
	for _, path := range []string{"/_matrix/app/v1/users/", "/users/"} {
		cases = append(cases,
			asCase{"GET " + path + ": no token", http.MethodGet, path + "%40lm_x%3Ahs.test", nil, "", 401, "M_MISSING_TOKEN"},
			asCase{"GET " + path + ": wrong token", http.MethodGet, path + "%40lm_x%3Ahs.test", nil, "Bearer nope", 403, "M_FORBIDDEN"},
			asCase{"GET " + path + ": not a user ID", http.MethodGet, path + "nobody", nil, "hs", 404, "M_NOT_FOUND"},
			asCase{"GET " + path + ": invalid UTF-8", http.MethodGet, path + "%40lm_%FF%FE%3Ahs.test", nil, "hs", 404, "M_NOT_FOUND"},
			asCase{"GET " + path + ": outside the namespace", http.MethodGet, path + "%40alice%3Ahs.test", nil, "hs", 404, "M_NOT_FOUND"},
			asCase{"PUT " + path, http.MethodPut, path + "%40lm_x%3Ahs.test", []byte(`{}`), "hs", 405, "M_UNRECOGNIZED"},
		)
	}
	for _, path := range []string{"/_matrix/app/v1/rooms/", "/rooms/"} {
		cases = append(cases,
			asCase{"GET " + path + ": no token", http.MethodGet, path + "%23lm_x%3Ahs.test", nil, "", 401, "M_MISSING_TOKEN"},
			asCase{"GET " + path + ": wrong token", http.MethodGet, path + "%23lm_x%3Ahs.test", nil, "Bearer nope", 403, "M_FORBIDDEN"},
			asCase{"GET " + path + ": not an alias", http.MethodGet, path + "nothing", nil, "hs", 404, "M_NOT_FOUND"},
			asCase{"GET " + path + ": invalid UTF-8", http.MethodGet, path + "%23%FF%FE%3Ahs.test", nil, "hs", 404, "M_NOT_FOUND"},
			asCase{"DELETE " + path, http.MethodDelete, path + "%23lm_x%3Ahs.test", nil, "hs", 405, "M_UNRECOGNIZED"},
		)
	}
	ping := "/_matrix/app/v1/ping"
	cases = append(cases,
		asCase{"ping: no token", http.MethodPost, ping, []byte(`{}`), "", 401, "M_MISSING_TOKEN"},
		asCase{"ping: wrong token", http.MethodPost, ping, []byte(`{}`), "Bearer nope", 403, "M_FORBIDDEN"},
		asCase{"ping: not JSON", http.MethodPost, ping, []byte("ping"), "hs", 400, "M_NOT_JSON"},
		asCase{"ping: empty body", http.MethodPost, ping, []byte{}, "hs", 400, "M_NOT_JSON"},
		asCase{"ping: invalid UTF-8", http.MethodPost, ping, []byte("{\"transaction_id\":\"\xff\"}"), "hs", 400, "M_NOT_JSON"},
		asCase{"ping: deep nesting", http.MethodPost, ping, []byte(strings.Repeat("[", 20000) + strings.Repeat("]", 20000)), "hs", 400, "M_NOT_JSON"},
		asCase{"ping: not an object", http.MethodPost, ping, []byte(`[1]`), "hs", 400, "M_BAD_JSON"},
		asCase{"ping: transaction_id a number", http.MethodPost, ping, []byte(`{"transaction_id":` + hugeNumber + `}`), "hs", 400, "M_BAD_JSON"},
		asCase{"ping: too large", http.MethodPost, ping, []byte(`{"transaction_id":"` + strings.Repeat("x", 70<<10) + `"}`), "hs", 413, "M_TOO_LARGE"},
		asCase{"ping: GET", http.MethodGet, ping, nil, "hs", 405, "M_UNRECOGNIZED"},
		asCase{"live: POST", http.MethodPost, "/_matrix/mau/live", []byte("x"), "", 405, "M_UNRECOGNIZED"},
		asCase{"ready: PUT", http.MethodPut, "/_matrix/mau/ready", []byte("x"), "", 405, "M_UNRECOGNIZED"},
		asCase{"mau: unknown path", http.MethodGet, "/_matrix/mau/other", nil, "", 404, "M_UNRECOGNIZED"},
		asCase{"unknown app path", http.MethodGet, "/_matrix/app/v1/other", nil, "hs", 404, "M_UNRECOGNIZED"},
		asCase{"unknown app version", http.MethodPut, "/_matrix/app/v2/transactions/x", []byte(`{"events":[]}`), "hs", 404, "M_UNRECOGNIZED"},
		asCase{"unknown path", http.MethodGet, "/nothing", nil, "", 404, "M_UNRECOGNIZED"},
		asCase{"root", http.MethodGet, "/", nil, "", 404, "M_UNRECOGNIZED"},
		asCase{"client API path", http.MethodGet, "/_matrix/client/v3/sync", nil, "hs", 404, "M_UNRECOGNIZED"},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, errcode, msg := tas.do(t, c)
			if status != c.status || errcode != c.errcode || msg == "" {
				t.Errorf("got %d %s %q, want %d %s and a message", status, errcode, msg, c.status, c.errcode)
			}
		})
	}
	t.Logf("%d malformed requests to the application-service listener", len(cases))
	for _, table := range []string{"appservice_transaction", "appservice_event", "appservice_send"} {
		if n := tas.count(t, table); n != 0 {
			t.Errorf("%d rows in %s after malformed requests", n, table)
		}
	}
	// Routes other packages mount (the provisioning API) get every method and path under their prefix: the
	// answers for unknown paths and wrong methods are the listener's only where nothing is mounted.
	tas.Router().Handle("/_lmbridge/provision/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte(`{"errcode":"M_MOUNTED","error":"` + r.Method + `"}`))
	}))
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPatch} {
		if status, errcode, _ := tas.do(t, asCase{method: method, path: "/_lmbridge/provision/v1/anything"}); status != http.StatusTeapot || errcode != "M_MOUNTED" {
			t.Errorf("%s under a mounted prefix answered %d %s, not by the mounted handler", method, status, errcode)
		}
	}
	// Still serving: a good transaction is stored and handled.
	if resp := tas.put(t, "good", txnBody(msgEvent("!r:hs.test", "$good", "hi")), testHSToken, ""); resp.status != http.StatusOK {
		t.Fatalf("good transaction after the malformed ones: %d %s %s", resp.status, resp.errcode, resp.message)
	}
	waitFor(t, "the good event", func() bool { return rec.callCount("$good") == 1 })
}
