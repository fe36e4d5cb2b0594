package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/config"
)

// allRows counts the rows of every table in db.
func allRows(t *testing.T, db *dbutil.Database) map[string]int {
	t.Helper()
	ctx := context.Background()
	rows, err := db.Query(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\'`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var name string
		if err = rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	if err = rows.Close(); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, name := range names {
		var n int
		if err = db.QueryRow(ctx, `SELECT COUNT(*) FROM "`+name+`"`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		counts[name] = n
	}
	return counts
}

// Every route of the provisioning API, over HTTP, given bodies that are not JSON, JSON of the wrong shape or
// types, huge numbers, deep nesting, invalid UTF-8, missing or wrong secrets, wrong methods and unknown paths,
// answers 4xx with the Matrix error code that says what was wrong and a message, and stores nothing.
func TestMalformedInputOnEveryProvisioningRoute(t *testing.T) {
	tb := newTestBridge(t, nil, config.Bridge{Provisioning: config.Provisioning{SharedSecret: "s3cret"}})
	tb.seedDAGRoom()
	srv := httptest.NewServer(tb.ProvisioningHandler())
	t.Cleanup(srv.Close)
	const auth = "Bearer s3cret"
	links := ProvisioningPrefix + "/links"
	one := links + "/" + strings.NewReplacer("!", "%21", ":", "%3A").Replace(string(dagRoom))
	type provCase struct {
		name, method, path, auth, body string
		status                         int
		errcode                        string
	}
	bodies := []struct{ name, body, errcode string }{
		{"not JSON", "link please", "M_NOT_JSON"},
		{"empty body", "", "M_NOT_JSON"},
		{"truncated", `{"dag_room_id":`, "M_NOT_JSON"},
		{"trailing garbage", `{"dag_room_id":"` + string(dagRoom) + `"} x`, "M_NOT_JSON"},
		{"two objects", `{"dag_room_id":"` + string(dagRoom) + `"}{}`, "M_NOT_JSON"},
		{"invalid UTF-8", "{\"dag_room_id\":\"!\xff\xfe:hs.example\"}", "M_NOT_JSON"},
		{"deep nesting", `{"dag_room_id":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, "M_NOT_JSON"},
		{"array", `["` + string(dagRoom) + `"]`, "M_BAD_JSON"},
		{"null", `null`, "M_BAD_JSON"},
		{"dag_room_id a number", `{"dag_room_id":5}`, "M_BAD_JSON"},
		{"dag_room_id huge", `{"dag_room_id":1000000000000000000000000000000000000000}`, "M_BAD_JSON"},
		{"dag_room_id an object", `{"dag_room_id":{"id":"` + string(dagRoom) + `"}}`, "M_BAD_JSON"},
		{"user_id a list", `{"dag_room_id":"` + string(dagRoom) + `","user_id":["@alice:hs.example"]}`, "M_BAD_JSON"},
		{"hub_server a bool", `{"dag_room_id":"` + string(dagRoom) + `","lm_room_id":"!x:lm","hub_server":true,"user_id":"@alice:hs.example"}`, "M_BAD_JSON"},
		{"unknown field", `{"dag_room_id":"` + string(dagRoom) + `","hub":"x"}`, "M_BAD_JSON"},
		{"dag_room_id empty", `{"dag_room_id":""}`, "M_INVALID_PARAM"},
		{"dag_room_id an alias", `{"dag_room_id":"#a:hs.example"}`, "M_INVALID_PARAM"},
		{"lm_room_id not a room ID", `{"dag_room_id":"` + string(dagRoom) + `","lm_room_id":"x","hub_server":"lm.example","user_id":"@alice:hs.example"}`, "M_INVALID_PARAM"},
		{"user_id not a user ID", `{"dag_room_id":"` + string(dagRoom) + `","user_id":"alice"}`, "M_INVALID_PARAM"},
		{"protocol unknown", `{"dag_room_id":"` + string(dagRoom) + `","protocol":"xmpp"}`, "M_INVALID_PARAM"},
		{"protocol mimi on a bridge without MIMI", `{"dag_room_id":"` + string(dagRoom) + `","protocol":"mimi"}`, "M_INVALID_PARAM"},
		{"protocol a number", `{"dag_room_id":"` + string(dagRoom) + `","protocol":1}`, "M_BAD_JSON"},
	}
	var cases []provCase
	for _, b := range bodies {
		status := http.StatusBadRequest
		cases = append(cases, provCase{"POST links: " + b.name, http.MethodPost, links, auth, b.body, status, b.errcode})
	}
	cases = append(cases, provCase{"POST links: too large", http.MethodPost, links, auth, `{"dag_room_id":"` + strings.Repeat("!", 70<<10) + `"}`, 413, "M_TOO_LARGE"})
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, links}, {http.MethodPost, links}, {http.MethodGet, one}, {http.MethodDelete, one},
	} {
		name := r.method + " " + r.path
		cases = append(cases,
			provCase{name + ": no secret", r.method, r.path, "", `{}`, 401, "M_MISSING_TOKEN"},
			provCase{name + ": not Bearer", r.method, r.path, "Basic s3cret", `{}`, 401, "M_MISSING_TOKEN"},
			provCase{name + ": empty Bearer", r.method, r.path, "Bearer ", `{}`, 401, "M_MISSING_TOKEN"},
			provCase{name + ": wrong secret", r.method, r.path, "Bearer s3cret2", `{}`, 401, "M_UNKNOWN_TOKEN"},
			provCase{name + ": invalid UTF-8 secret", r.method, r.path, "Bearer \xff\xfe", `{}`, 401, "M_UNKNOWN_TOKEN"},
		)
	}
	cases = append(cases,
		provCase{"PUT links", http.MethodPut, links, auth, `{}`, 405, "M_UNRECOGNIZED"},
		provCase{"DELETE links", http.MethodDelete, links, auth, "", 405, "M_UNRECOGNIZED"},
		provCase{"PATCH one", http.MethodPatch, one, auth, `{}`, 405, "M_UNRECOGNIZED"},
		provCase{"POST one", http.MethodPost, one, auth, `{}`, 405, "M_UNRECOGNIZED"},
		provCase{"GET one: not linked", http.MethodGet, one, auth, "", 404, "M_NOT_FOUND"},
		provCase{"GET one: not a room ID", http.MethodGet, links + "/nothing", auth, "", 404, "M_NOT_FOUND"},
		provCase{"GET one: invalid UTF-8", http.MethodGet, links + "/%21%FF%FE%3Ahs.example", auth, "", 404, "M_NOT_FOUND"},
		provCase{"DELETE one: not linked", http.MethodDelete, one, auth, "", 404, "M_NOT_FOUND"},
		provCase{"GET one/extra", http.MethodGet, one + "/extra", auth, "", 404, "M_UNRECOGNIZED"},
		provCase{"unknown path", http.MethodGet, ProvisioningPrefix + "/rooms", auth, "", 404, "M_UNRECOGNIZED"},
		provCase{"unknown path without secret", http.MethodGet, ProvisioningPrefix + "/rooms", "", "", 401, "M_MISSING_TOKEN"},
	)
	before := allRows(t, tb.raw)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if c.auth != "" {
				req.Header["Authorization"] = []string{c.auth}
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e struct {
				ErrCode string `json:"errcode"`
				Error   string `json:"error"`
			}
			if err = json.Unmarshal(data, &e); err != nil {
				t.Errorf("answer is not JSON: %q", data)
			}
			if resp.StatusCode != c.status || e.ErrCode != c.errcode || e.Error == "" {
				t.Errorf("got %d %s %q, want %d %s and a message", resp.StatusCode, e.ErrCode, e.Error, c.status, c.errcode)
			}
		})
	}
	t.Logf("%d malformed requests to the provisioning API", len(cases))
	if after := allRows(t, tb.raw); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("tables changed: before %v, after %v", before, after)
	}
}
