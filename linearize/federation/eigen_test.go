package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const eigenDir = "../../../shared/interop/eigen"

func eigenPath(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(eigenDir, name)
	if _, err := os.Stat(p); err != nil {
		// The fixtures live beside the checkout; fall back to their absolute home.
		p = filepath.Join("/work/shared/interop/eigen", name)
	}
	return p
}

func readEigen(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(eigenPath(t, name))
	if err != nil {
		t.Fatalf("failed to read eigen capture %s: %v", name, err)
	}
	return data
}

// eigenTime is a moment inside the captures (November 2026), when every captured key answer was valid.
var eigenTime = time.UnixMilli(1795292900000)

type eigenExchange struct {
	Dir            string            `json:"dir"`
	From           string            `json:"from"`
	Method         string            `json:"method"`
	URL            string            `json:"url"`
	Path           string            `json:"path"`
	RequestHeaders map[string]string `json:"request_headers"`
	XMatrixCheck   string            `json:"x_matrix_check"`
	RequestBody    json.RawMessage   `json:"request_body"`
	Status         int               `json:"status"`
	ResponseBody   json.RawMessage   `json:"response_body"`
}

func (e *eigenExchange) uri() string {
	if e.Path != "" {
		return e.Path
	}
	u := strings.TrimPrefix(strings.TrimPrefix(e.URL, "http://"), "https://")
	return u[strings.IndexByte(u, '/'):]
}

func (e *eigenExchange) header(name string) string {
	for k, v := range e.RequestHeaders {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

func loadEigenExchanges(t testing.TB, name string) []eigenExchange {
	var capture struct {
		Exchanges []eigenExchange `json:"exchanges"`
	}
	if err := json.Unmarshal(readEigen(t, name), &capture); err != nil {
		t.Fatalf("failed to decode %s: %v", name, err)
	}
	return capture.Exchanges
}

// eigenKeyRing is a KeyRing that knows eigen A, eigen B and the independent peer from their captured key answers,
// and cannot fetch anything else.
func eigenKeyRing(t testing.TB) *KeyRing {
	t.Helper()
	kr := &KeyRing{Now: func() time.Time { return eigenTime }}
	httpA := readEigen(t, "01-key-v2-server-A.http.txt")
	_, bodyA, ok := bytes.Cut(httpA, []byte("\r\n\r\n"))
	if !ok {
		_, bodyA, _ = bytes.Cut(httpA, []byte("\n\n"))
	}
	if err := kr.AddServerKeys("127.0.0.1:3000", bytes.TrimSpace(bodyA)); err != nil {
		t.Fatalf("eigen A's key answer rejected: %v", err)
	}
	if err := kr.AddServerKeys("127.0.0.1:3001", readEigen(t, "01-key-v2-server-B.json")); err != nil {
		t.Fatalf("eigen B's key answer rejected: %v", err)
	}
	for _, ex := range loadEigenExchanges(t, "30-independent-peer-trace.json") {
		if ex.Path == "/_matrix/key/v2/server" && ex.Dir == "inbound" {
			if err := kr.AddServerKeys("127.0.0.1:3002", ex.ResponseBody); err != nil {
				t.Fatalf("independent peer's key answer rejected: %v", err)
			}
		}
	}
	return kr
}

func TestEigenKeyAnswers(t *testing.T) {
	kr := eigenKeyRing(t)
	for server, want := range map[string]string{
		"127.0.0.1:3000": "ijMZQuh2x9AjYh4KZUmB0r7OdrATRQ4wSlKVsBYG9xE",
		"127.0.0.1:3001": "NrewUHiGCu0x3TjVL+0lRptxOspARyO6OgyZslHSP3U",
	} {
		key, err := kr.VerifyKey(context.Background(), server, "ed25519:1")
		if err != nil {
			t.Fatalf("VerifyKey(%s): %v", server, err)
		}
		want, _ := decodeEd25519(want)
		if !bytes.Equal(key, want) {
			t.Errorf("key of %s = %x, want %x", server, key, want)
		}
	}
	if _, err := kr.VerifyKey(context.Background(), "127.0.0.1:3002", "ed25519:fake1"); err != nil {
		t.Errorf("independent peer's key: %v", err)
	}
	if _, err := kr.VerifyKey(context.Background(), "127.0.0.1:3000", "ed25519:2"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown key ID: got %v, want ErrUnknownKey", err)
	}

	// A tampered answer (m.linearized flipped: it is covered by the signature) and one for another name are refused.
	body := readEigen(t, "01-key-v2-server-B.json")
	tampered := bytes.Replace(body, []byte(`"m.linearized": true`), []byte(`"m.linearized": false`), 1)
	if bytes.Equal(tampered, body) {
		t.Fatal("fixture changed: m.linearized not found")
	}
	if err := kr.AddServerKeys("127.0.0.1:3001", tampered); !errors.Is(err, ErrKeyResponseUnsigned) {
		t.Errorf("tampered key answer: got %v, want ErrKeyResponseUnsigned", err)
	}
	if err := kr.AddServerKeys("127.0.0.1:3000", body); !errors.Is(err, ErrKeyResponseWrongName) {
		t.Errorf("key answer for another server: got %v, want ErrKeyResponseWrongName", err)
	}
	// After its valid_until_ts (1795299991456) the answer is no longer accepted.
	late := &KeyRing{Now: func() time.Time { return time.UnixMilli(1795299991456) }}
	if err := late.AddServerKeys("127.0.0.1:3001", body); !errors.Is(err, ErrKeyResponseInvalid) {
		t.Errorf("expired key answer: got %v, want ErrKeyResponseInvalid", err)
	}
}

func verifyEigenExchange(t *testing.T, kr *KeyRing, ex *eigenExchange, destination string, body []byte) error {
	var headers []string
	if h := ex.header("Authorization"); h != "" {
		headers = append(headers, h)
	}
	if ex.Method == http.MethodGet {
		body = nil
	}
	_, err := VerifyRequest(context.Background(), kr, destination, ex.Method, []string{ex.uri()}, headers, body)
	return err
}

func TestEigenXMatrixHeaders(t *testing.T) {
	kr := eigenKeyRing(t)
	verified := 0
	for _, file := range []string{"10-eigen-to-eigen-federation-trace.json", "30-independent-peer-trace.json"} {
		for i, ex := range loadEigenExchanges(t, file) {
			if strings.HasPrefix(ex.uri(), "/_matrix/key/") {
				continue
			}
			destination := "127.0.0.1:3002"
			if ex.URL != "" {
				destination = strings.SplitN(strings.TrimPrefix(ex.URL, "http://"), "/", 2)[0]
			} else if to, ok := strings.CutPrefix(ex.Dir, "fake->"); ok {
				destination = to
			}
			err := verifyEigenExchange(t, kr, &ex, destination, ex.RequestBody)
			if ex.header("Authorization") == "" {
				var fedErr *Error
				if !errors.As(err, &fedErr) || fedErr.Status != http.StatusUnauthorized || fedErr.ErrCode != ErrCodeForbidden {
					t.Errorf("%s #%d without auth: got %v, want 401 M_FORBIDDEN", file, i, err)
				}
				continue
			}
			if ex.XMatrixCheck != "" && ex.XMatrixCheck != "valid" {
				t.Fatalf("%s #%d: unexpected x_matrix_check %q", file, i, ex.XMatrixCheck)
			}
			if err != nil {
				t.Errorf("%s #%d %s %s: %v", file, i, ex.Method, ex.uri(), err)
				continue
			}
			verified++
			// The same header must not verify for another destination, another body or another path.
			if err := verifyEigenExchange(t, kr, &ex, "127.0.0.1:9999", ex.RequestBody); err == nil {
				t.Errorf("%s #%d verified for the wrong destination", file, i)
			}
			if ex.Method != http.MethodGet {
				if err := verifyEigenExchange(t, kr, &ex, destination, []byte(`{"pdus":[]}`)); err == nil {
					t.Errorf("%s #%d verified with another body", file, i)
				}
			}
			ex.Path = ex.uri() + "x"
			if err := verifyEigenExchange(t, kr, &ex, destination, ex.RequestBody); err == nil {
				t.Errorf("%s #%d verified with another path", file, i)
			}
		}
	}
	if verified < 20 {
		t.Errorf("only %d eigen headers verified", verified)
	}
	t.Logf("%d eigen X-Matrix headers verified", verified)
}

// TestEigenRequestsThroughServer replays every signed request that eigen and the independent peer sent, with their
// original headers and bodies, to our server under the destination's name: each must pass X-Matrix and reach the
// Handler with the right origin, and the unsigned one must be refused.
func TestEigenRequestsThroughServer(t *testing.T) {
	kr := eigenKeyRing(t)
	servers := map[string]*httptest.Server{}
	handlers := map[string]*recordingHandler{}
	serverFor := func(name string) (*httptest.Server, *recordingHandler) {
		if srv, ok := servers[name]; ok {
			return srv, handlers[name]
		}
		h := &recordingHandler{}
		srv := httptest.NewServer(NewServer(name, http.NotFoundHandler(), kr, h, 0))
		t.Cleanup(srv.Close)
		servers[name], handlers[name] = srv, h
		return srv, h
	}
	replayed := 0
	for _, file := range []string{"10-eigen-to-eigen-federation-trace.json", "30-independent-peer-trace.json"} {
		for i, ex := range loadEigenExchanges(t, file) {
			if strings.HasPrefix(ex.uri(), "/_matrix/key/") {
				continue
			}
			destination := "127.0.0.1:3002"
			if ex.URL != "" {
				destination = strings.SplitN(strings.TrimPrefix(ex.URL, "http://"), "/", 2)[0]
			} else if to, ok := strings.CutPrefix(ex.Dir, "fake->"); ok {
				destination = to
			}
			srv, handler := serverFor(destination)
			var body io.Reader
			if ex.Method != http.MethodGet {
				body = bytes.NewReader(ex.RequestBody)
			}
			req, err := http.NewRequest(ex.Method, srv.URL+ex.uri(), body)
			if err != nil {
				t.Fatal(err)
			}
			if auth := ex.header("Authorization"); auth != "" {
				req.Header.Set("Authorization", auth)
			}
			before := len(handler.Calls())
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			answer, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if ex.header("Authorization") == "" {
				if resp.StatusCode != http.StatusUnauthorized || len(handler.Calls()) != before {
					t.Errorf("%s #%d without auth: %d %s", file, i, resp.StatusCode, answer)
				}
				continue
			}
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s #%d %s %s: %d %s", file, i, ex.Method, ex.uri(), resp.StatusCode, answer)
				continue
			}
			calls := handler.Calls()
			auth, _ := ParseXMatrixAuth(ex.header("Authorization"))
			if len(calls) != before+1 || !strings.Contains(calls[len(calls)-1], " "+auth.Origin+" ") {
				t.Errorf("%s #%d: handler calls %q, want one from %s", file, i, calls[before:], auth.Origin)
			} else if strings.Contains(ex.uri(), "/make_join/") {
				// Path parameters reach the handler unescaped, and ver as a list.
				want := regexp.MustCompile(`^make_join \S+ ![^ ]+:127\.0\.0\.1:300\d @\w+:127\.0\.0\.1:300\d \[org\.matrix\.i-d\.ralston-mimi-linearized-matrix\.02\]$`)
				if !want.MatchString(calls[len(calls)-1]) {
					t.Errorf("%s #%d: make_join reached the handler as %q", file, i, calls[len(calls)-1])
				}
			}
			replayed++
		}
	}
	t.Logf("%d eigen requests replayed through the server", replayed)
	if replayed < 20 {
		t.Errorf("only %d requests replayed", replayed)
	}
}

type eigenGET struct {
	Server   string `json:"server"`
	Request  string `json:"request"`
	Response struct {
		Status      int             `json:"status"`
		ContentType string          `json:"content_type"`
		Body        json.RawMessage `json:"body"`
	} `json:"response"`
}

// TestEigenAnswersDecode points our client at a loopback peer that answers with eigen's captured bodies, and checks
// that every variant eigen uses decodes: invite {event}, make_join {event, room_version}, a bare make_* template,
// state_ids' pdus_ids, newest-first backfill, the v1 event wrapper, and HTML error pages.
func TestEigenAnswersDecode(t *testing.T) {
	trace := loadEigenExchanges(t, "10-eigen-to-eigen-federation-trace.json")
	var gets []eigenGET
	if err := json.Unmarshal(readEigen(t, "21-federation-GET-endpoints.json"), &gets); err != nil {
		t.Fatal(err)
	}
	findGET := func(server, contains string) eigenGET {
		for _, g := range gets {
			if g.Server == server && strings.Contains(g.Request, contains) {
				return g
			}
		}
		t.Fatalf("no captured %s answer of %s", contains, server)
		return eigenGET{}
	}
	var dump struct {
		Response struct {
			Body []json.RawMessage `json:"body"`
		} `json:"response"`
	}
	if err := json.Unmarshal(readEigen(t, "20-hub-dump-room.json"), &dump); err != nil {
		t.Fatal(err)
	}
	answers := map[string]struct {
		status      int
		contentType string
		body        []byte
	}{}
	set := func(path string, status int, ct string, body []byte) {
		answers[path] = struct {
			status      int
			contentType string
			body        []byte
		}{status, ct, body}
	}
	set("/invite/", 200, "application/json", trace[0].ResponseBody)
	set("/make_join/", 200, "application/json", trace[2].ResponseBody)
	set("/send_join/", 200, "application/json", trace[3].ResponseBody)
	var makeJoin MakeMembershipResponse
	_ = json.Unmarshal(trace[2].ResponseBody, &makeJoin)
	set("/make_knock/", 200, "application/json", makeJoin.Event)
	set("/state_ids/", 200, "application/json", findGET("hub A", "/state_ids/").Response.Body)
	set("/backfill/", 200, "application/json", findGET("hub A", "/backfill/").Response.Body)
	set("/event/", 200, "application/json", findGET("hub A", "/v1/event/").Response.Body)
	leave := findGET("hub A", "/make_leave/")
	var html string
	_ = json.Unmarshal(leave.Response.Body, &html)
	set("/make_leave/", leave.Response.Status, leave.Response.ContentType, []byte(html))
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for part, answer := range answers {
			if strings.Contains(r.URL.Path, part) {
				w.Header().Set("Content-Type", answer.contentType)
				w.WriteHeader(answer.status)
				_, _ = w.Write(answer.body)
				return
			}
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(peer.Close)
	dest := strings.TrimPrefix(peer.URL, "http://")
	ctx := context.Background()
	client := NewClient("127.0.0.1:3001", nil, ClientOptions{AllowHTTPPeers: true})
	client.Key = mustKey(t)

	invite, err := client.Invite(ctx, dest, "$x", &InviteRequest{Event: json.RawMessage(`{}`), RoomVersion: "I.1"})
	if err != nil || !strings.Contains(string(invite.PDU), `"127.0.0.1:3001"`) || !jsonEqual(invite.PDU, invite.Event) {
		t.Fatalf("invite {event}: %v", err)
	}
	mj, err := client.MakeJoin(ctx, dest, "!r:h", "@bob:127.0.0.1:3001", []string{"org.matrix.i-d.ralston-mimi-linearized-matrix.02"})
	if err != nil || mj.RoomVersion != "org.matrix.i-d.ralston-mimi-linearized-matrix.02" || !strings.Contains(string(mj.Event), `"join"`) {
		t.Fatalf("make_join {event, room_version}: %+v, %v", mj, err)
	}
	mk, err := client.MakeKnock(ctx, dest, "!r:h", "@bob:127.0.0.1:3001", nil)
	if err != nil || mk.RoomVersion != "" || !jsonEqual(mk.Event, makeJoin.Event) {
		t.Fatalf("bare make_knock: %+v, %v", mk, err)
	}
	sj, err := client.SendJoin(ctx, dest, "$j", json.RawMessage(`{}`))
	if err != nil || len(sj.State) == 0 || len(sj.Event) == 0 {
		t.Fatalf("send_join: %+v, %v", sj, err)
	}
	ids, err := client.StateIDs(ctx, dest, "!r:h", "")
	if err != nil || len(ids.PDUIDs) != 6 {
		t.Fatalf("state_ids pdus_ids: %+v, %v", ids, err)
	}
	ev, err := client.GetEvent(ctx, dest, "$q8XcROkMFrFpxzrorqxoSmyXBfzU-vFFTSgK6WL5kNo")
	if err != nil || !strings.Contains(string(ev), `"m.room.message"`) || strings.Contains(string(ev), `"pdus"`) {
		t.Fatalf("v1 event wrapper: %s, %v", ev, err)
	}
	_, err = client.MakeLeave(ctx, dest, "!r:h", "@bob:127.0.0.1:3001")
	var fedErr *Error
	if !errors.As(err, &fedErr) || fedErr.Status != 404 || fedErr.ErrCode != ErrCodeUnrecognized {
		t.Fatalf("HTML 404: got %v", err)
	}

	// Backfill: eigen answers newest first; we return oldest first, by origin_server_ts without an EventID hook...
	from := []string{"$q8XcROkMFrFpxzrorqxoSmyXBfzU-vFFTSgK6WL5kNo"}
	bf, err := client.Backfill(ctx, dest, "!r:h", from, 3)
	if err != nil || len(bf.PDUs) != 3 || !strings.Contains(string(bf.PDUs[0]), `"m.room.member"`) {
		t.Fatalf("backfill order: %v", err)
	}
	// ...and by event IDs with one, even when timestamps mislead.
	ids2 := map[string]string{}
	for _, e := range dump.Response.Body {
		var ev struct {
			EventID string `json:"event_id"`
			Hashes  struct {
				SHA256 string `json:"sha256"`
			} `json:"hashes"`
		}
		_ = json.Unmarshal(e, &ev)
		ids2[ev.Hashes.SHA256] = ev.EventID
	}
	client.EventID = func(e json.RawMessage) (string, error) {
		var ev struct {
			Hashes struct {
				SHA256 string `json:"sha256"`
			} `json:"hashes"`
		}
		_ = json.Unmarshal(e, &ev)
		if id, ok := ids2[ev.Hashes.SHA256]; ok {
			return id, nil
		}
		return "", errors.New("unknown event")
	}
	var captured BackfillResponse
	_ = json.Unmarshal(answers["/backfill/"].body, &captured)
	oldestFirst := []json.RawMessage{captured.PDUs[2], captured.PDUs[1], captured.PDUs[0]}
	// The oldest event claims the latest timestamp: ordering by time alone would flip this answer.
	oldestFirst[0] = regexp.MustCompile(`"origin_server_ts":\s*1795292808745`).ReplaceAll(oldestFirst[0], []byte(`"origin_server_ts":1895292808745`))
	if bytes.Equal(oldestFirst[0], captured.PDUs[2]) {
		t.Fatal("fixture changed: timestamp not found")
	}
	reordered, _ := json.Marshal(BackfillResponse{PDUs: oldestFirst})
	set("/backfill/", 200, "application/json", reordered)
	bf, err = client.Backfill(ctx, dest, "!r:h", from, 3)
	if err != nil || !strings.Contains(string(bf.PDUs[0]), `"m.room.member"`) || ids2Of(client, bf.PDUs[2]) != from[0] {
		t.Fatalf("backfill with EventID hook reordered an oldest-first answer: %v", err)
	}
}

func ids2Of(c *Client, e json.RawMessage) string {
	id, _ := c.EventID(e)
	return id
}

func mustKey(t *testing.T) *SigningKey {
	key, err := LoadOrGenerateSigningKey(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	return key
}
