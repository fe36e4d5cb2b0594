package linearize

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	mautrixfed "maunium.net/go/mautrix/federation"

	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// rawAnswer is a federation answer as the wire carried it.
type rawAnswer struct {
	status  int
	errcode string
	body    []byte
}

// rawRequest sends a request to nd's listener as origin, signed with key (unless key is nil), letting mutate change
// the request after signing.
func rawRequest(t *testing.T, nd *node, key *federation.SigningKey, origin, destination, method, path string, body []byte, mutate func(*http.Request)) rawAnswer {
	t.Helper()
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+nd.name+path, reader)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != nil {
		auth, err := federation.SignRequest(key, origin, destination, method, req.URL.RequestURI(), body)
		if err != nil && !json.Valid(body) {
			// A body that is not JSON has no canonical form to sign; the server refuses it before it looks at the
			// signature, so one over no content does.
			auth, err = federation.SignRequest(key, origin, destination, method, req.URL.RequestURI(), nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", auth)
	}
	if mutate != nil {
		mutate(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s failed: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(data, &e)
	return rawAnswer{status: resp.StatusCode, errcode: e.ErrCode, body: data}
}

func expect(t *testing.T, what string, got rawAnswer, status int, errcode string) {
	t.Helper()
	if got.status != status || got.errcode != errcode {
		t.Errorf("%s: got %d %s (%s), want %d %s", what, got.status, got.errcode, got.body, status, errcode)
	}
}

// lpduFrom makes a signed LPDU of a message from sender, whose server signs with key.
func lpduFrom(t *testing.T, key *federation.SigningKey, roomID, sender, hub, body string) (json.RawMessage, string) {
	t.Helper()
	p := &pdu.PDU{RoomID: roomID, Type: "m.room.message", Sender: sender, OriginServerTS: time.Now().UnixMilli(), HubServer: hub}
	if err := p.SetContent(text(body)); err != nil {
		t.Fatal(err)
	}
	if err := p.FillLPDUHash(); err != nil {
		t.Fatal(err)
	}
	if err := p.SignLPDU(pdu.ServerName(sender), string(key.ID), key.Priv); err != nil {
		t.Fatal(err)
	}
	raw := must(p.Canonical())
	return raw, must(p.EventID())
}

func sendBody(pdus ...json.RawMessage) []byte {
	return must(json.Marshal(federation.Transaction{PDUs: pdus}))
}

// TestHostileInput sends malformed, unauthenticated, forged and misdirected requests to a real hub and a real
// participant over HTTP: each gets its status and errcode, and nothing is stored or forwarded.
func TestHostileInput(t *testing.T) {
	var hold sync.Mutex
	var gate chan struct{}
	hub := newHTTPNode(t, func(string, time.Time) {
		hold.Lock()
		g := gate
		hold.Unlock()
		if g != nil {
			<-g
		}
	})
	part := newHTTPNode(t, nil)
	ctx := testContext(t)
	roomID, alice, bob := joinedPair(t, hub, part)
	hubLen, partLen := len(logIDs(t, hub, roomID)), len(logIDs(t, part, roomID))
	sendPath := func(txnID string) string { return federation.UnstablePrefix + "/send/" + txnID }
	good, _ := lpduFrom(t, part.key, roomID, bob, hub.name, "fine")

	expect(t, "no auth header", rawRequest(t, hub, nil, "", "", http.MethodPut, sendPath("a1"), sendBody(good), nil),
		http.StatusUnauthorized, federation.ErrCodeForbidden)
	expect(t, "bad request signature", rawRequest(t, hub, part.key, part.name, hub.name, http.MethodPut, sendPath("a2"), sendBody(good),
		func(r *http.Request) {
			auth := r.Header.Get("Authorization")
			i := strings.Index(auth, `sig="`) + 5
			r.Header.Set("Authorization", auth[:i]+"AAAA"+auth[i+4:])
		}), http.StatusUnauthorized, federation.ErrCodeForbidden)
	expect(t, "wrong destination", rawRequest(t, hub, part.key, part.name, "other.test", http.MethodPut, sendPath("a3"), sendBody(good), nil),
		http.StatusUnauthorized, federation.ErrCodeForbidden)
	expect(t, "malformed JSON", rawRequest(t, hub, part.key, part.name, hub.name, http.MethodPut, sendPath("a4"), []byte(`{"pdus": [`), nil),
		http.StatusBadRequest, federation.ErrCodeNotJSON)
	big := append([]byte(`{"pdus":[],"padding":"`), bytes.Repeat([]byte("x"), 2<<20)...)
	big = append(big, `"}`...)
	expect(t, "oversize body", rawRequest(t, hub, part.key, part.name, hub.name, http.MethodPut, sendPath("a5"), big, nil),
		http.StatusRequestEntityTooLarge, federation.ErrCodeTooLarge)

	// Forged event signature: a well-authenticated request carrying an LPDU signed with another key under bob's
	// server's key ID.
	forger := mautrixfed.GenerateSigningKey()
	forger.ID = part.key.ID
	forged, forgedID := lpduFrom(t, forger, roomID, bob, hub.name, "forged")
	ans := rawRequest(t, hub, part.key, part.name, hub.name, http.MethodPut, sendPath("b1"), sendBody(forged), nil)
	expect(t, "forged event signature", ans, http.StatusOK, "")
	var sr federation.SendResponse
	_ = json.Unmarshal(ans.body, &sr)
	if !strings.Contains(sr.FailedPDUs[forgedID].Error, "signature") {
		t.Errorf("forged LPDU not in failed_pdus with a signature error: %s", ans.body)
	}
	// Wrong hub_server.
	elsewhere, elsewhereID := lpduFrom(t, part.key, roomID, bob, "elsewhere.test", "misrouted")
	ans = rawRequest(t, hub, part.key, part.name, hub.name, http.MethodPut, sendPath("b2"), sendBody(elsewhere), nil)
	sr = federation.SendResponse{}
	_ = json.Unmarshal(ans.body, &sr)
	if ans.status != http.StatusOK || !strings.Contains(sr.FailedPDUs[elsewhereID].Error, "hub_server") {
		t.Errorf("wrong hub_server: got %d %s", ans.status, ans.body)
	}
	// An LPDU for a room nobody knows, and make_join for it.
	unknown, unknownID := lpduFrom(t, part.key, "!nowhere:"+hub.name, bob, hub.name, "lost")
	ans = rawRequest(t, hub, part.key, part.name, hub.name, http.MethodPut, sendPath("b3"), sendBody(unknown), nil)
	sr = federation.SendResponse{}
	_ = json.Unmarshal(ans.body, &sr)
	if !strings.Contains(sr.FailedPDUs[unknownID].Error, "unknown room") {
		t.Errorf("unknown room over /send: %s", ans.body)
	}
	expect(t, "make_join for an unknown room", rawRequest(t, hub, part.key, part.name, hub.name, http.MethodGet,
		"/_matrix/federation/v1/make_join/%21nowhere%3A"+hub.name+"/"+userAt("carol", part.name)+"?ver="+DefaultRoomVersion, nil, nil),
		http.StatusNotFound, federation.ErrCodeNotFound)
	// A participant is not the hub: make_join there is M_WRONG_SERVER.
	expect(t, "make_join at a participant", rawRequest(t, part, hub.key, hub.name, part.name, http.MethodGet,
		"/_matrix/federation/v1/make_join/"+roomID+"/"+userAt("dave", hub.name)+"?ver="+DefaultRoomVersion, nil, nil),
		http.StatusBadRequest, federation.ErrCodeWrongServer)
	// An LPDU sent to a participant, even by the hub, is dropped: no error, nothing stored.
	toPart, _ := lpduFrom(t, hub.key, roomID, alice, hub.name, "wrong way")
	ans = rawRequest(t, part, hub.key, hub.name, part.name, http.MethodPut, sendPath("c1"), sendBody(toPart), nil)
	if ans.status != http.StatusOK || !bytes.Contains(ans.body, []byte(`"failed_pdus":{}`)) {
		t.Errorf("LPDU to a participant: got %d %s, want 200 and nothing failed", ans.status, ans.body)
	}
	// A PDU for the room from a server that is not its hub is refused by the participant.
	notHub, notHubID := lpduFrom(t, part.key, roomID, bob, hub.name, "spoof")
	ans = rawRequest(t, part, part.key, part.name, part.name, http.MethodPut, sendPath("c2"), sendBody(notHub), nil)
	sr = federation.SendResponse{}
	_ = json.Unmarshal(ans.body, &sr)
	if !strings.Contains(sr.FailedPDUs[notHubID].Error, "not the hub") {
		t.Errorf("event from a non-hub at a participant: %d %s", ans.status, ans.body)
	}

	if got := len(logIDs(t, hub, roomID)); got != hubLen {
		t.Fatalf("hub log grew from %d to %d events on hostile input", hubLen, got)
	}
	if got := len(logIDs(t, part, roomID)); got != partLen {
		t.Fatalf("participant log grew from %d to %d events on hostile input", partLen, got)
	}

	// A second transaction while one is in flight: the first is held inside the hub until the second is refused.
	hold.Lock()
	gate = make(chan struct{})
	hold.Unlock()
	first := make(chan rawAnswer, 1)
	go func() {
		first <- rawRequest(t, hub, part.key, part.name, hub.name, http.MethodPut, sendPath("d1"), sendBody(good), nil)
	}()
	var second rawAnswer
	for i := 0; i < 100; i++ {
		time.Sleep(20 * time.Millisecond)
		other, _ := lpduFrom(t, part.key, roomID, bob, hub.name, fmt.Sprintf("second %d", i))
		second = rawRequest(t, hub, part.key, part.name, hub.name, http.MethodPut, sendPath(fmt.Sprintf("d2-%d", i)), sendBody(other), nil)
		if second.status != http.StatusOK {
			break
		}
	}
	expect(t, "second transaction in flight", second, http.StatusBadRequest, federation.ErrCodeBadState)
	hold.Lock()
	close(gate)
	gate = nil
	hold.Unlock()
	if ans := <-first; ans.status != http.StatusOK {
		t.Fatalf("held transaction: %d %s", ans.status, ans.body)
	}
	afterFirst := len(logIDs(t, hub, roomID))
	// The same txnId again is answered, not applied twice.
	again := rawRequest(t, hub, part.key, part.name, hub.name, http.MethodPut, sendPath("d1"), sendBody(good), nil)
	if again.status != http.StatusOK || len(logIDs(t, hub, roomID)) != afterFirst {
		t.Fatalf("repeated txnId: %d %s, log %d → %d", again.status, again.body, afterFirst, len(logIDs(t, hub, roomID)))
	}
	// The participant received what the hub accepted, and nothing of the hostile input.
	last := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("done"), time.Time{}))
	waitHead(t, part, roomID, last)
	checkMirror(t, hub, part, roomID, nil)
	for _, ev := range part.rec.roomEvents(roomID) {
		if b := string(ev.Content); strings.Contains(b, "forged") || strings.Contains(b, "misrouted") || strings.Contains(b, "wrong way") || strings.Contains(b, "spoof") {
			t.Fatalf("hostile event reached the participant: %s", ev.PDU)
		}
	}
}
