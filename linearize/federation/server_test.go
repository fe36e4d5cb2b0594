package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation"
)

// recordingHandler is a small Handler for transport tests: it records what reached it and answers from fixed data.
type recordingHandler struct {
	lock  sync.Mutex
	calls []string
	// fail, when set, is returned by every method.
	fail error
}

func (h *recordingHandler) record(format string, args ...any) error {
	h.lock.Lock()
	defer h.lock.Unlock()
	h.calls = append(h.calls, fmt.Sprintf(format, args...))
	return h.fail
}

func (h *recordingHandler) Calls() []string {
	h.lock.Lock()
	defer h.lock.Unlock()
	return append([]string(nil), h.calls...)
}

var testEvent = json.RawMessage(`{"type":"m.room.message","room_id":"!r:hub","sender":"@a:b","content":{"body":"hi é ✓ <b>&amp; 😀 \\u0041"},"origin_server_ts":5}`)

func (h *recordingHandler) Send(ctx context.Context, origin, txnID string, txn *Transaction) (*SendResponse, error) {
	if at, ok := ReceivedAt(ctx); !ok || at.After(time.Now()) || time.Since(at) > time.Minute {
		return nil, fmt.Errorf("the request's arrival time is %v (set: %v)", at, ok)
	}
	if err := h.record("send %s %s %d %d", origin, txnID, len(txn.PDUs), len(txn.EDUs)); err != nil {
		return nil, err
	}
	return &SendResponse{FailedPDUs: map[string]FailedPDU{"$bad": {Error: "nope"}}}, nil
}

func (h *recordingHandler) GetEvent(_ context.Context, origin, eventID string) (json.RawMessage, error) {
	if err := h.record("event %s %s", origin, eventID); err != nil {
		return nil, err
	}
	return testEvent, nil
}

func (h *recordingHandler) State(_ context.Context, origin, roomID, eventID string) (*StateResponse, error) {
	if err := h.record("state %s %s %s", origin, roomID, eventID); err != nil {
		return nil, err
	}
	return &StateResponse{AuthChain: []json.RawMessage{testEvent}, PDUs: []json.RawMessage{testEvent, testEvent}}, nil
}

func (h *recordingHandler) StateIDs(_ context.Context, origin, roomID, eventID string) (*StateIDsResponse, error) {
	if err := h.record("state_ids %s %s %s", origin, roomID, eventID); err != nil {
		return nil, err
	}
	return &StateIDsResponse{AuthChainIDs: []string{"$a"}, PDUIDs: []string{"$b", "$c"}}, nil
}

func (h *recordingHandler) Backfill(_ context.Context, origin, roomID string, from []string, limit int) (*BackfillResponse, error) {
	if err := h.record("backfill %s %s %v %d", origin, roomID, from, limit); err != nil {
		return nil, err
	}
	return &BackfillResponse{PDUs: []json.RawMessage{
		json.RawMessage(`{"type":"a","origin_server_ts":1}`), json.RawMessage(`{"type":"b","origin_server_ts":2}`),
	}}, nil
}

func (h *recordingHandler) Invite(_ context.Context, origin, txnID string, req *InviteRequest) (*InviteResponse, error) {
	if err := h.record("invite %s %s %s %d", origin, txnID, req.RoomVersion, len(req.InviteRoomState)); err != nil {
		return nil, err
	}
	return &InviteResponse{PDU: req.Event}, nil
}

func (h *recordingHandler) MakeMembership(_ context.Context, origin, membership, roomID, userID string, versions []string) (*MakeMembershipResponse, error) {
	if err := h.record("make_%s %s %s %s %v", membership, origin, roomID, userID, versions); err != nil {
		return nil, err
	}
	return &MakeMembershipResponse{Event: json.RawMessage(`{"type":"m.room.member","content":{"membership":"` + membership + `"}}`), RoomVersion: "I.1"}, nil
}

func (h *recordingHandler) SendMembership(_ context.Context, origin, membership, txnID string, event json.RawMessage) (any, error) {
	if err := h.record("send_%s %s %s %s", membership, origin, txnID, event); err != nil {
		return nil, err
	}
	switch membership {
	case "join":
		return &SendJoinResponse{State: []json.RawMessage{testEvent}, AuthChain: []json.RawMessage{}, Event: event}, nil
	case "knock":
		return &SendKnockResponse{StrippedState: []json.RawMessage{testEvent}}, nil
	}
	return nil, nil
}

// countingListener counts accepted connections, to see that the client reuses them.
type countingListener struct {
	net.Listener
	accepted atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return conn, err
}

// testPeer is one LM server of ours on loopback, over plain HTTP, with its own key, key ring and client.
type testPeer struct {
	name     string
	key      *SigningKey
	client   *Client
	ring     *KeyRing
	handler  *recordingHandler
	server   *Server
	listener *countingListener
}

const testMaxRequestBytes = 4096

func newTestPeer(t testing.TB) *testPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &testPeer{name: ln.Addr().String(), key: federation.GenerateSigningKey(), handler: &recordingHandler{}}
	p.listener = &countingListener{Listener: ln}
	p.client = NewClient(p.name, p.key, ClientOptions{AllowHTTPPeers: true, Timeout: 10 * time.Second})
	p.ring = NewKeyRing(p.client)
	p.server = NewServer(p.name, NewKeyServer(p.name, p.key), p.ring, p.handler, testMaxRequestBytes)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, p.listener, ListenOptions{AllowPlainHTTP: true}, p.server) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return p
}

func TestClientServerRoundTrip(t *testing.T) {
	a, b := newTestPeer(t), newTestPeer(t)
	ctx := context.Background()
	expectCall := func(want string) {
		t.Helper()
		calls := b.handler.Calls()
		if len(calls) == 0 || calls[len(calls)-1] != want {
			t.Fatalf("last handler call %q, want %q", calls, want)
		}
	}

	sendResp, err := a.client.SendTransaction(ctx, b.name, "txn/1 ?", &Transaction{PDUs: []json.RawMessage{testEvent}})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	expectCall(fmt.Sprintf("send %s txn/1 ? 1 0", a.name))
	if sendResp.FailedPDUs["$bad"].Error != "nope" {
		t.Errorf("send answer %+v", sendResp)
	}

	event, err := a.client.GetEvent(ctx, b.name, "$ev/+=:x")
	if err != nil || !jsonEqual(event, testEvent) {
		t.Fatalf("event: %s, %v", event, err)
	}
	expectCall(fmt.Sprintf("event %s $ev/+=:x", a.name))

	state, err := a.client.State(ctx, b.name, "!room:hub", "$ev")
	if err != nil || len(state.PDUs) != 2 || len(state.AuthChain) != 1 {
		t.Fatalf("state: %+v, %v", state, err)
	}
	expectCall(fmt.Sprintf("state %s !room:hub $ev", a.name))

	ids, err := a.client.StateIDs(ctx, b.name, "!room:hub", "$ev")
	if err != nil || strings.Join(ids.PDUIDs, ",") != "$b,$c" || strings.Join(ids.AuthChainIDs, ",") != "$a" {
		t.Fatalf("state_ids: %+v, %v", ids, err)
	}

	backfill, err := a.client.Backfill(ctx, b.name, "!room:hub", []string{"$x", "$y"}, 5)
	if err != nil || len(backfill.PDUs) != 2 || !strings.Contains(string(backfill.PDUs[0]), `"a"`) {
		t.Fatalf("backfill: %+v, %v", backfill, err)
	}
	expectCall(fmt.Sprintf("backfill %s !room:hub [$x $y] 5", a.name))

	invite, err := a.client.Invite(ctx, b.name, "$inv", &InviteRequest{Event: testEvent, RoomVersion: "I.1", InviteRoomState: []json.RawMessage{testEvent}})
	if err != nil || !jsonEqual(invite.PDU, testEvent) || !jsonEqual(invite.Event, testEvent) {
		t.Fatalf("invite: %+v, %v", invite, err)
	}
	expectCall(fmt.Sprintf("invite %s $inv I.1 1", a.name))

	for _, membership := range []string{"join", "leave", "knock"} {
		var resp *MakeMembershipResponse
		switch membership {
		case "join":
			resp, err = a.client.MakeJoin(ctx, b.name, "!room:hub", "@u:"+a.name, []string{"I.1", "org.matrix.i-d.ralston-mimi-linearized-matrix.02"})
			expectCall(fmt.Sprintf("make_join %s !room:hub @u:%s [I.1 org.matrix.i-d.ralston-mimi-linearized-matrix.02]", a.name, a.name))
		case "leave":
			resp, err = a.client.MakeLeave(ctx, b.name, "!room:hub", "@u:"+a.name)
			expectCall(fmt.Sprintf("make_leave %s !room:hub @u:%s []", a.name, a.name))
		case "knock":
			resp, err = a.client.MakeKnock(ctx, b.name, "!room:hub", "@u:"+a.name, []string{"I.1"})
		}
		if err != nil || resp.RoomVersion != "I.1" || !strings.Contains(string(resp.Event), membership) {
			t.Fatalf("make_%s: %+v, %v", membership, resp, err)
		}
	}
	join, err := a.client.SendJoin(ctx, b.name, "$join", testEvent)
	if err != nil || !jsonEqual(join.Event, testEvent) || len(join.State) != 1 {
		t.Fatalf("send_join: %+v, %v", join, err)
	}
	expectCall(fmt.Sprintf("send_join %s $join %s", a.name, testEvent))
	if err = a.client.SendLeave(ctx, b.name, "$leave", testEvent); err != nil {
		t.Fatalf("send_leave: %v", err)
	}
	knock, err := a.client.SendKnock(ctx, b.name, "$knock", testEvent)
	if err != nil || len(knock.StrippedState) != 1 {
		t.Fatalf("send_knock: %+v, %v", knock, err)
	}

	keys, err := a.client.ServerKeys(ctx, b.name)
	if err != nil || !keys.Linearized || keys.VerifyKeys[string(b.key.ID)].Key != string(b.key.Pub) {
		t.Fatalf("server keys: %+v, %v", keys, err)
	}

	// The connection was reused: a's calls (and b's one key fetch back to a) used few connections.
	if n := b.listener.accepted.Load(); n > 2 {
		t.Errorf("b accepted %d connections for %d requests", n, len(b.handler.Calls()))
	}

	// A Handler's *Error reaches the client as itself; any other error is a 500 M_UNKNOWN that says nothing more.
	b.handler.fail = Errorf(http.StatusBadRequest, ErrCodeWrongServer, "not the hub")
	_, err = a.client.State(ctx, b.name, "!room:hub", "$ev")
	var fedErr *Error
	if !errors.As(err, &fedErr) || fedErr.Status != 400 || fedErr.ErrCode != ErrCodeWrongServer || fedErr.Message != "not the hub" {
		t.Fatalf("handler *Error: got %v", err)
	}
	b.handler.fail = errors.New("database is locked at /secret/path")
	_, err = a.client.GetEvent(ctx, b.name, "$ev")
	if !errors.As(err, &fedErr) || fedErr.Status != 500 || fedErr.ErrCode != ErrCodeUnknown || strings.Contains(fedErr.Message, "secret") {
		t.Fatalf("handler error: got %v", err)
	}
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// rawRequest sends a hand-made request to peer, signed by signer when it is not nil.
type rawRequest struct {
	method, uri string
	body        []byte
	headers     []string
}

func (p *testPeer) do(t *testing.T, req rawRequest) (int, *Error) {
	t.Helper()
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	httpReq, err := http.NewRequest(req.method, "http://"+p.name+req.uri, body)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range req.headers {
		httpReq.Header.Add("Authorization", h)
	}
	resp, err := http.DefaultClient.Do(httpReq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: content type %q, body %q", req.method, req.uri, ct, data)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, nil
	}
	var fedErr Error
	if err = json.Unmarshal(data, &fedErr); err != nil {
		t.Fatalf("%s %s: error answer is not JSON: %q", req.method, req.uri, data)
	}
	return resp.StatusCode, &fedErr
}

func sign(t *testing.T, key *SigningKey, origin, destination, method, uri string, content []byte) string {
	t.Helper()
	h, err := SignRequest(key, origin, destination, method, uri, content)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestServerRefusesHostileRequests(t *testing.T) {
	a, b := newTestPeer(t), newTestPeer(t)
	sendURI := UnstablePrefix + "/send/t1"
	eventURI := UnstablePrefix + "/event/%24ev"
	good := []byte(`{"pdus":[]}`)
	impostor := federation.GenerateSigningKey()
	impostor.ID = a.key.ID
	unknownKey := federation.GenerateSigningKey()
	wrongShape := []byte(`{"pdus":"not a list"}`)
	tooBig := []byte(`{"pdus":[],"x":"` + strings.Repeat("a", testMaxRequestBytes) + `"}`)
	tooMany := []byte(`{"pdus":[` + strings.TrimSuffix(strings.Repeat(`{},`, 51), ",") + `]}`)
	cases := []struct {
		name    string
		req     rawRequest
		status  int
		errcode string
	}{
		{"no auth header", rawRequest{http.MethodPut, sendURI, good, nil}, 401, ErrCodeForbidden},
		{"not X-Matrix", rawRequest{http.MethodPut, sendURI, good, []string{"Bearer abc"}}, 401, ErrCodeForbidden},
		{"bad signature", rawRequest{http.MethodPut, sendURI, good, []string{sign(t, impostor, a.name, b.name, http.MethodPut, sendURI, good)}}, 401, ErrCodeForbidden},
		{"signature over another body", rawRequest{http.MethodPut, sendURI, good, []string{sign(t, a.key, a.name, b.name, http.MethodPut, sendURI, []byte(`{"pdus":[{}]}`))}}, 401, ErrCodeForbidden},
		{"wrong destination", rawRequest{http.MethodPut, sendURI, good, []string{sign(t, a.key, a.name, "other.example", http.MethodPut, sendURI, good)}}, 401, ErrCodeForbidden},
		{"unknown key", rawRequest{http.MethodPut, sendURI, good, []string{sign(t, unknownKey, a.name, b.name, http.MethodPut, sendURI, good)}}, 401, ErrCodeForbidden},
		{"unreachable origin", rawRequest{http.MethodPut, sendURI, good, []string{sign(t, a.key, "127.0.0.1:1", b.name, http.MethodPut, sendURI, good)}}, 401, ErrCodeForbidden},
		{"one of two headers bad", rawRequest{http.MethodPut, sendURI, good, []string{
			sign(t, a.key, a.name, b.name, http.MethodPut, sendURI, good), sign(t, impostor, a.name, b.name, http.MethodPut, sendURI, good)}}, 401, ErrCodeForbidden},
		{"malformed JSON", rawRequest{http.MethodPut, sendURI, []byte(`{"pdus":[`), []string{sign(t, a.key, a.name, b.name, http.MethodPut, sendURI, good)}}, 400, ErrCodeNotJSON},
		{"empty body", rawRequest{http.MethodPut, sendURI, []byte{}, []string{sign(t, a.key, a.name, b.name, http.MethodPut, sendURI, nil)}}, 400, ErrCodeNotJSON},
		{"wrong shape", rawRequest{http.MethodPut, sendURI, wrongShape, []string{sign(t, a.key, a.name, b.name, http.MethodPut, sendURI, wrongShape)}}, 400, ErrCodeBadJSON},
		{"too many PDUs", rawRequest{http.MethodPut, sendURI, tooMany, []string{sign(t, a.key, a.name, b.name, http.MethodPut, sendURI, tooMany)}}, 400, ErrCodeBadJSON},
		{"oversize body", rawRequest{http.MethodPut, sendURI, tooBig, []string{sign(t, a.key, a.name, b.name, http.MethodPut, sendURI, tooBig)}}, 413, ErrCodeTooLarge},
		{"unknown path", rawRequest{http.MethodGet, "/_matrix/federation/v1/nothing", nil, nil}, 404, ErrCodeUnrecognized},
		{"trailing slash", rawRequest{http.MethodPut, sendURI + "/", good, nil}, 404, ErrCodeUnrecognized},
		{"unclean path", rawRequest{http.MethodGet, "/_matrix/federation//v1/state/x", nil, nil}, 404, ErrCodeUnrecognized},
		{"wrong method", rawRequest{http.MethodPost, sendURI, good, nil}, 405, ErrCodeUnrecognized},
		{"wrong method on key endpoint", rawRequest{http.MethodPut, "/_matrix/key/v2/server", good, nil}, 405, ErrCodeUnrecognized},
		{"backfill without v", rawRequest{http.MethodGet, UnstablePrefix + "/backfill/r", nil, []string{sign(t, a.key, a.name, b.name, http.MethodGet, UnstablePrefix+"/backfill/r", nil)}}, 400, ErrCodeMissingParam},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, fedErr := b.do(t, tc.req)
			if status != tc.status || fedErr == nil || fedErr.ErrCode != tc.errcode || fedErr.Message == "" {
				t.Errorf("got %d %+v, want %d %s", status, fedErr, tc.status, tc.errcode)
			} else if tc.name == "wrong destination" && !strings.Contains(fedErr.Message, "destination") {
				t.Errorf("wrong destination refused for another reason: %s", fedErr.Message)
			}
		})
	}
	if calls := b.handler.Calls(); len(calls) != 0 {
		t.Errorf("refused requests reached the handler: %q", calls)
	}

	// The accepted forms: content left out or {} on a GET, "signature" instead of "sig", several valid headers.
	accepted := []rawRequest{
		{http.MethodGet, eventURI, nil, []string{sign(t, a.key, a.name, b.name, http.MethodGet, eventURI, nil)}},
		{http.MethodGet, eventURI, nil, []string{sign(t, a.key, a.name, b.name, http.MethodGet, eventURI, []byte("{}"))}},
		{http.MethodGet, eventURI, nil, []string{strings.Replace(sign(t, a.key, a.name, b.name, http.MethodGet, eventURI, nil), ",sig=", ",signature=", 1)}},
		{http.MethodPut, sendURI, good, []string{sign(t, a.key, a.name, b.name, http.MethodPut, sendURI, good), sign(t, a.key, a.name, b.name, http.MethodPut, sendURI, good)}},
		{http.MethodGet, "/_matrix/key/v2/server", nil, nil},
	}
	for i, req := range accepted {
		if status, fedErr := b.do(t, req); status != http.StatusOK {
			t.Errorf("accepted form %d refused: %d %+v", i, status, fedErr)
		}
	}
	if calls := b.handler.Calls(); len(calls) != 4 {
		t.Errorf("handler calls %q, want 4", calls)
	}
}

type nilStateHandler struct{ recordingHandler }

func (*nilStateHandler) State(context.Context, string, string, string) (*StateResponse, error) {
	return nil, nil
}

func TestServerRefusesEmptyHandlerAnswer(t *testing.T) {
	key := federation.GenerateSigningKey()
	keys := staticKeys{"a.example " + string(key.ID): key.Priv.Public().(ed25519.PublicKey)}
	srv := httptest.NewServer(NewServer("b.example", http.NotFoundHandler(), keys, &nilStateHandler{}, 0))
	t.Cleanup(srv.Close)
	uri := "/_matrix/federation/v1/state/%21r%3Ab.example?event_id=%24e"
	req, _ := http.NewRequest(http.MethodGet, srv.URL+uri, nil)
	req.Header.Set("Authorization", sign(t, key, "a.example", "b.example", http.MethodGet, uri, nil))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var fedErr Error
	if err = json.NewDecoder(resp.Body).Decode(&fedErr); err != nil || resp.StatusCode != 500 || fedErr.ErrCode != ErrCodeUnknown {
		t.Errorf("nil answer: %d %+v %v", resp.StatusCode, fedErr, err)
	}
}
