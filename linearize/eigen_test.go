package linearize

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mautrixfed "maunium.net/go/mautrix/federation"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// The eigen-server captures (shared/interop/eigen): eigen A is the hub at 127.0.0.1:3000, eigen B a participant at
// 127.0.0.1:3001. Their public keys are in shared/interop/README.md.
// eigenDir is the copy of shared/interop/eigen kept with package pdu, so the test runs on a bare checkout.
var eigenDir = filepath.Join("pdu", "testdata", "interop", "eigen")

const (
	eigenA    = "127.0.0.1:3000"
	eigenB    = "127.0.0.1:3001"
	eigenPeer = "127.0.0.1:3002"
	eigenAKey = "ijMZQuh2x9AjYh4KZUmB0r7OdrATRQ4wSlKVsBYG9xE"
	eigenBKey = "NrewUHiGCu0x3TjVL+0lRptxOspARyO6OgyZslHSP3U"
)

type capturedExchange struct {
	Method         string            `json:"method"`
	URL            string            `json:"url"`
	Path           string            `json:"path"`
	RequestHeaders map[string]string `json:"request_headers"`
	RequestBody    json.RawMessage   `json:"request_body"`
	Status         json.RawMessage   `json:"status"`
	ResponseBody   json.RawMessage   `json:"response_body"`
}

func loadCapture(t *testing.T, name string) []capturedExchange {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(eigenDir, name))
	if err != nil {
		t.Fatalf("failed to read the eigen captures: %v", err)
	}
	var f struct {
		Exchanges []capturedExchange `json:"exchanges"`
	}
	if err = json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return f.Exchanges
}

func eigenKeys(t *testing.T) pdu.StaticKeys {
	t.Helper()
	decode := func(s string) ed25519.PublicKey {
		return ed25519.PublicKey(must(base64.RawStdEncoding.DecodeString(s)))
	}
	return pdu.StaticKeys{
		eigenA: {"ed25519:1": decode(eigenAKey)},
		eigenB: {"ed25519:1": decode(eigenBKey)},
	}
}

// replay sends a captured request to nd's listener as it was sent to the eigen server, X-Matrix header included.
func replay(t *testing.T, nd *node, ex capturedExchange) rawAnswer {
	t.Helper()
	path := ex.Path
	if path == "" {
		u := must(url.Parse(ex.URL))
		path = u.RequestURI()
	}
	var body io.Reader
	if len(ex.RequestBody) > 0 {
		body = bytes.NewReader(ex.RequestBody)
	}
	req := must(http.NewRequest(ex.Method, "http://"+nd.ln.Addr().String()+path, body))
	for k, v := range ex.RequestHeaders {
		if http.CanonicalHeaderKey(k) == "Authorization" || http.CanonicalHeaderKey(k) == "Content-Type" {
			req.Header.Set(k, v)
		}
	}
	resp := must(http.DefaultClient.Do(req))
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(data, &e)
	return rawAnswer{status: resp.StatusCode, errcode: e.ErrCode, body: data}
}

// startAs starts an engine under a recorded server name, listening on a free loopback port, verifying with the
// recorded keys.
func startAs(t *testing.T, name string, keys pdu.KeyLookup, remote Remote, now func() time.Time) *node {
	t.Helper()
	ln := must(net.Listen("tcp", "127.0.0.1:0"))
	nd := &node{name: name, dbPath: filepath.Join(t.TempDir(), "lm.db"), key: mautrixfed.GenerateSigningKey(), ln: ln}
	ctx := testContext(t)
	nd.db = openTestDB(t, nd.dbPath)
	cfg := config.LM{ServerName: name, AllowPlainHTTP: true}
	nd.eng = must(New(ctx, cfg, nd.db, Options{SigningKey: nd.key, Keys: keys, Remote: remote, Now: now, Listener: ln}))
	nd.rec = newRecorder()
	nd.eng.AddListener("test", nd.rec)
	if err := nd.eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { httpNet{}.stop(t, nd) })
	return nd
}

// replayRemote answers make_join and send_join with what eigen A answered eigen B, and fails everything else.
type replayRemote struct {
	Remote
	makeJoin *federation.MakeMembershipResponse
	sendJoin *federation.SendJoinResponse
	sentLPDU json.RawMessage
}

func (r *replayRemote) MakeMembership(context.Context, string, string, string, string, []string) (*federation.MakeMembershipResponse, error) {
	return r.makeJoin, nil
}

func (r *replayRemote) SendJoin(_ context.Context, _, _ string, event json.RawMessage) (*federation.SendJoinResponse, error) {
	r.sentLPDU = event
	return r.sendJoin, nil
}

// TestEigenParticipant puts our engine in eigen B's place (127.0.0.1:3001) in eigen A's room: eigen A's invite,
// make_join and send_join answers, and its /send transactions are replayed to it over HTTP, and its mirror must end
// up holding exactly eigen A's timeline from the join on.
func TestEigenParticipant(t *testing.T) {
	trace := loadCapture(t, "10-eigen-to-eigen-federation-trace.json")
	invite, makeJoin, sendJoin := trace[0], trace[2], trace[3]
	var joinLPDU pdu.PDU
	if err := json.Unmarshal(sendJoin.RequestBody, &joinLPDU); err != nil {
		t.Fatal(err)
	}
	remote := &replayRemote{Remote: unreachable{}}
	_ = json.Unmarshal(makeJoin.ResponseBody, &remote.makeJoin)
	_ = json.Unmarshal(sendJoin.ResponseBody, &remote.sendJoin)
	// Our clock shows the moment eigen B signed its join, so our LPDU (signed with our key) has eigen B's LPDU ID.
	part := startAs(t, eigenB, eigenKeys(t), remote, func() time.Time { return time.UnixMilli(joinLPDU.OriginServerTS) })
	ctx := testContext(t)

	// The invite: we answer with the same event, countersigned by us, as eigen B did.
	ans := replay(t, part, invite)
	if ans.status != http.StatusOK {
		t.Fatalf("invite: %d %s", ans.status, ans.body)
	}
	var ours, theirs federation.InviteResponse
	_ = json.Unmarshal(ans.body, &ours)
	_ = json.Unmarshal(invite.ResponseBody, &theirs)
	ourEvent, theirEvent := must(pdu.Parse(ours.Event)), must(pdu.Parse(theirs.Event))
	if must(ourEvent.EventID()) != must(theirEvent.EventID()) {
		t.Fatalf("our countersigned invite is another event than eigen B's")
	}
	if len(ourEvent.Signatures[eigenB]) != 1 || len(ourEvent.Signatures[eigenA]) != 1 {
		t.Fatalf("invite answer signatures: %v", ourEvent.Signatures)
	}
	bob := *ourEvent.StateKey
	part.rec.waitFor(t, "invite at the listener", func() bool { return lastInvite(part, ourEvent.RoomID, bob) != nil })

	// The join, with eigen A's answers: the returned state and auth chain verify with eigen A's key.
	joinID := must(part.eng.Join(ctx, ourEvent.RoomID, bob, eigenA))
	sent := must(pdu.Parse(remote.sentLPDU))
	if must(sent.EventID()) != must(joinLPDU.EventID()) {
		t.Fatalf("our join LPDU's ID differs from eigen B's: %s", remote.sentLPDU)
	}
	// The hub's /send transactions: the echo of the join, alice's message, bob's message.
	for _, i := range []int{5, 6, 8} {
		ans := replay(t, part, trace[i])
		if ans.status != http.StatusOK || !bytes.Contains(ans.body, []byte(`"failed_pdus":{}`)) {
			t.Fatalf("replayed /send %d: %d %s", i, ans.status, ans.body)
		}
	}
	// A transaction replayed again is answered and not applied twice.
	if ans := replay(t, part, trace[6]); ans.status != http.StatusOK {
		t.Fatalf("repeated /send: %d %s", ans.status, ans.body)
	}
	var dump struct {
		Response struct {
			Body []struct {
				EventID string `json:"event_id"`
			} `json:"body"`
		} `json:"response"`
	}
	_ = json.Unmarshal(must(os.ReadFile(filepath.Join(eigenDir, "20-hub-dump-room.json"))), &dump)
	var want []string
	for _, ev := range dump.Response.Body {
		want = append(want, ev.EventID)
	}
	got := logIDs(t, part, ourEvent.RoomID)
	if i := slices.Index(want, joinID); i < 0 || !slices.Equal(got, want[i:]) {
		t.Fatalf("our mirror:\n%v\neigen A's timeline:\n%v", got, want)
	}
	// Our current state names bob as joined.
	joined := false
	for _, st := range must(part.eng.CurrentState(ctx, ourEvent.RoomID)) {
		joined = joined || st.Type == "m.room.member" && st.StateKey == bob && st.Membership == "join"
	}
	if !joined {
		t.Fatalf("bob is not joined in our state")
	}
}

// countersigningRemote plays the invitee's server for invites our hub sends; it signs with a throwaway key, since
// the draft never checks the invitee's signature.
type countersigningRemote struct {
	Remote
	key *federation.SigningKey
}

func (r countersigningRemote) Invite(_ context.Context, destination, _ string, req *federation.InviteRequest) (*federation.InviteResponse, error) {
	p, err := pdu.Parse(req.Event)
	if err != nil {
		return nil, err
	}
	if err = p.SignPDU(destination, string(r.key.ID), r.key.Priv); err != nil {
		return nil, err
	}
	raw, err := p.Canonical()
	return &federation.InviteResponse{Event: raw}, err
}

// TestEigenHub puts our engine in the independent peer's place (the hub at 127.0.0.1:3002) and replays eigen B's
// make_join, send_join and LPDU /send to it over HTTP: eigen B's LPDUs must be accepted, completed and appended.
func TestEigenHub(t *testing.T) {
	trace := loadCapture(t, "30-independent-peer-trace.json")
	makeJoin, sendJoin, send := trace[16], trace[17], trace[18]
	var joinLPDU, msgLPDU pdu.PDU
	_ = json.Unmarshal(sendJoin.RequestBody, &joinLPDU)
	var txn federation.Transaction
	_ = json.Unmarshal(send.RequestBody, &txn)
	_ = json.Unmarshal(txn.PDUs[0], &msgLPDU)
	hub := startAs(t, eigenPeer, eigenKeys(t), countersigningRemote{Remote: unreachable{}, key: mautrixfed.GenerateSigningKey()}, nil)
	ctx := testContext(t)
	roomID, dave := joinLPDU.RoomID, joinLPDU.Sender
	if err := hub.eng.createRoom(ctx, roomID, "@carol:"+eigenPeer, nil); err != nil {
		t.Fatal(err)
	}
	must(hub.eng.InviteUser(ctx, roomID, "@carol:"+eigenPeer, dave))

	ans := replay(t, hub, makeJoin)
	if ans.status != http.StatusOK {
		t.Fatalf("make_join: %d %s", ans.status, ans.body)
	}
	var made federation.MakeMembershipResponse
	_ = json.Unmarshal(ans.body, &made)
	tmpl := must(pdu.ParseTemplate(made.Event))
	if made.RoomVersion != DefaultRoomVersion || tmpl.Sender != dave || membershipOf(tmpl) != "join" {
		t.Fatalf("make_join answer: %s", ans.body)
	}

	ans = replay(t, hub, sendJoin)
	if ans.status != http.StatusOK {
		t.Fatalf("send_join: %d %s", ans.status, ans.body)
	}
	var joined federation.SendJoinResponse
	_ = json.Unmarshal(ans.body, &joined)
	join := must(pdu.Parse(joined.Event))
	// eigen B named the LPDU by its ID in the path; the completed event must carry that LPDU, B's signature intact.
	pathID := must(url.PathUnescape(sendJoin.Path[strings.LastIndexByte(sendJoin.Path, '/')+1:]))
	if id := must(join.LPDUID()); id != pathID {
		t.Fatalf("completed join's LPDU ID %s does not match the path %s", id, sendJoin.Path)
	}
	if join.Signatures[eigenB]["ed25519:1"] != joinLPDU.Signatures[eigenB]["ed25519:1"] || len(join.Signatures[eigenPeer]) != 1 {
		t.Fatalf("completed join signatures: %v", join.Signatures)
	}
	if err := join.VerifySignatures(ctx, pdu.StaticKeys{eigenB: eigenKeys(t)[eigenB], eigenPeer: {string(hub.key.ID): hub.key.Priv.Public().(ed25519.PublicKey)}}); err != nil {
		t.Fatalf("completed join does not verify: %v", err)
	}
	if len(joined.State) < 4 || len(joined.AuthChain) == 0 {
		t.Fatalf("send_join answered %d state and %d auth chain events", len(joined.State), len(joined.AuthChain))
	}

	ans = replay(t, hub, send)
	if ans.status != http.StatusOK || !bytes.Contains(ans.body, []byte(`"failed_pdus":{}`)) {
		t.Fatalf("/send of eigen B's LPDU: %d %s", ans.status, ans.body)
	}
	log := must(hub.eng.Events(ctx, roomID, 0, 100))
	head := log[len(log)-1]
	if head.LPDUID != must(msgLPDU.EventID()) {
		t.Fatalf("hub head %s is not eigen B's message", head.PDU)
	}
	// A tampered copy of the same LPDU (eigen rejected one like it) is refused and not appended.
	var tampered map[string]any
	_ = json.Unmarshal(txn.PDUs[0], &tampered)
	tampered["content"] = map[string]any{"msgtype": "m.text", "body": "tampered"}
	// eigen B's key is not ours to sign a request with, so this goes to the handler as if B's X-Matrix had verified.
	tamperedTxn := &federation.Transaction{PDUs: []json.RawMessage{must(json.Marshal(tampered))}}
	resp := must(hub.eng.Federation().Send(ctx, eigenB, "tampered", tamperedTxn))
	if len(resp.FailedPDUs) != 1 {
		t.Fatalf("tampered LPDU not refused: %+v", resp)
	}
	// The signature covers the redacted event, which has no message content: the content hash is what catches it.
	for _, f := range resp.FailedPDUs {
		if !strings.Contains(f.Error, "content hash mismatch") {
			t.Fatalf("tampered LPDU refused for another reason: %s", f.Error)
		}
	}
	if n := len(must(hub.eng.Events(ctx, roomID, 0, 100))); n != len(log) {
		t.Fatalf("log grew to %d on a tampered LPDU", n)
	}
}

// unreachable is a Remote for servers that are not running: every call fails, as a refused connection would.
type unreachable struct{}

var errUnreachable = errors.New("connection refused")

func (unreachable) SendTransaction(context.Context, string, string, *federation.Transaction) (*federation.SendResponse, error) {
	return nil, errUnreachable
}
func (unreachable) Invite(context.Context, string, string, *federation.InviteRequest) (*federation.InviteResponse, error) {
	return nil, errUnreachable
}
func (unreachable) MakeMembership(context.Context, string, string, string, string, []string) (*federation.MakeMembershipResponse, error) {
	return nil, errUnreachable
}
func (unreachable) SendJoin(context.Context, string, string, json.RawMessage) (*federation.SendJoinResponse, error) {
	return nil, errUnreachable
}
func (unreachable) SendLeave(context.Context, string, string, json.RawMessage) error {
	return errUnreachable
}
func (unreachable) SendKnock(context.Context, string, string, json.RawMessage) (*federation.SendKnockResponse, error) {
	return nil, errUnreachable
}
func (unreachable) Backfill(context.Context, string, string, []string, int) (*federation.BackfillResponse, error) {
	return nil, errUnreachable
}
