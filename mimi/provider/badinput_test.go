package provider

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/lmbridge/lmbridge/mimi/protocol"
	"github.com/lmbridge/lmbridge/mls/group"
	"github.com/lmbridge/lmbridge/mls/treemath"
)

// bundle makes a HandshakeBundle for a commit from a local client without sending it or changing the client.
func (nd *node) bundle(room, client string, opts func(g *group.Group) group.CommitOptions) *protocol.UpdateRequest {
	t := nd.t
	t.Helper()
	g, err := nd.p.loadGroup(testContext(t), room, client)
	if err != nil {
		t.Fatal(err)
	}
	o := opts(g)
	o.RatchetTreeInWelcome = true
	res, err := g.Commit(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.MergePendingCommit(); err != nil {
		t.Fatal(err)
	}
	gi, err := g.GroupInfo(false)
	if err != nil {
		t.Fatal(err)
	}
	return &protocol.UpdateRequest{ProposalOrCommit: *res.Commit, Welcome: res.Welcome,
		GroupInfoOption:   protocol.GroupInfoOption{Representation: protocol.GroupInfoFull, GroupInfo: gi},
		RatchetTreeOption: protocol.RatchetTreeOption{Representation: protocol.TreeFull, Tree: g.Tree().RatchetTree()}}
}

type hubSnapshot struct{ log, outbox, inbox int }

func snapshot(hub, other *node) hubSnapshot {
	return hubSnapshot{hub.count("mimi_hub_log"), hub.count("mimi_outbox"), other.count("mimi_inbox") + hub.count("mimi_inbox")}
}

// TestBadInput sends every endpoint malformed bodies, wrong epochs, commits from non-members and policy violations:
// each is refused with the draft's answer (or an HTTP error where the draft has none) and nothing is stored.
func TestBadInput(t *testing.T) {
	n := newNet(t)
	a, b, c := n.start(t, "a.example"), n.start(t, "b.example"), n.start(t, "c.example")
	ctx := testContext(t)
	alice, alice1 := a.register("alice", "phone")
	bob, bob1 := b.register("bob", "laptop")
	dave, _ := b.register("dave", "desk")
	room, err := a.p.CreateRoom(ctx, "strict", alice, RoomMetadata{Name: "Strict"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.p.AddUser(ctx, room, alice, bob, RoleParticipant); err != nil {
		t.Fatal(err)
	}
	if err := a.p.AddUser(ctx, room, alice, dave, RoleObserver); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "dave to join", func() bool { return b.rec.has(LocalJoined, dave) })
	b.waitEpoch(room, bob1, 2)
	// Let the membership events drain so that the snapshots below only see what the bad requests might add.
	waitFor(t, "events to drain", func() bool { return a.count("mimi_inbox")+b.count("mimi_inbox") == 0 && a.count("mimi_outbox") == 0 })

	post := func(from *node, endpoint func(*protocol.Directory) string, vars map[string]string, body []byte) (int, []byte) {
		t.Helper()
		status, resp, _, err := from.p.peers.post(ctx, "a.example", endpoint, vars, body)
		if err != nil {
			t.Fatal(err)
		}
		return status, resp
	}
	update := func(d *protocol.Directory) string { return d.Update }
	submit := func(d *protocol.Directory) string { return d.SubmitMessage }
	notify := func(d *protocol.Directory) string { return d.Notify }
	roomVars := map[string]string{"roomId": room}
	updateAnswer := func(from *node, req *protocol.UpdateRequest) *protocol.UpdateRoomResponse {
		t.Helper()
		body, err := req.Encode()
		if err != nil {
			t.Fatal(err)
		}
		status, resp := post(from, update, roomVars, body)
		if status != http.StatusOK {
			t.Fatalf("update answered HTTP %d: %s", status, resp)
		}
		r, err := protocol.DecodeUpdateRoomResponse(resp)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	before := snapshot(a, b)
	epochBefore, _ := a.epochAuth(room, alice1)
	unchanged := func(what string) {
		t.Helper()
		if s := snapshot(a, b); s != before {
			t.Fatalf("%s stored something: %+v, was %+v", what, s, before)
		}
		if e, _ := a.epochAuth(room, alice1); e != epochBefore {
			t.Fatalf("%s moved the epoch to %d", what, e)
		}
	}

	// Malformed bodies, on every endpoint.
	for _, ep := range []struct {
		name string
		url  func(*protocol.Directory) string
		vars map[string]string
	}{
		{"update", update, roomVars}, {"submitMessage", submit, roomVars}, {"notify", notify, roomVars},
		{"groupInfo", func(d *protocol.Directory) string { return d.GroupInfo }, roomVars},
		{"keyMaterial", func(d *protocol.Directory) string { return d.KeyMaterial }, map[string]string{"targetUser": alice}},
		{"requestConsent", func(d *protocol.Directory) string { return d.RequestConsent }, map[string]string{"targetDomain": "a.example"}},
		{"updateConsent", func(d *protocol.Directory) string { return d.UpdateConsent }, map[string]string{"requesterDomain": "a.example"}},
		{"identifierQuery", func(d *protocol.Directory) string { return d.IdentifierQuery }, map[string]string{"domain": "a.example"}},
	} {
		for _, body := range [][]byte{nil, {0xff}, []byte("not a TLS structure at all"), {0x00, 0x01, 0x00, 0x02, 0x40}} {
			status, resp := post(b, ep.url, ep.vars, body)
			want := http.StatusBadRequest
			if ep.name == "notify" {
				want = http.StatusForbidden // only the hub notifies; b is not a's hub
			}
			if status != want {
				t.Fatalf("%s with %x: HTTP %d %s, want %d", ep.name, body, status, resp, want)
			}
		}
		unchanged(ep.name + " garbage")
	}
	// Garbage notify from the right hub: c's rooms are hubbed by nobody here, so a notifies c about a's room.
	if status, _, _, err := a.p.peers.post(ctx, "c.example", notify, roomVars, []byte{1, 2, 3}); err != nil || status != http.StatusBadRequest {
		t.Fatalf("garbage notify from the hub: %d %v", status, err)
	}

	// A commit for an old epoch: wrongEpoch with the hub's epoch.
	stale := b.bundle(room, bob1, func(*group.Group) group.CommitOptions { return group.CommitOptions{} })
	if err := a.p.commitAs(ctx, room, alice1, func(*group.Group) (group.CommitOptions, error) { return group.CommitOptions{}, nil }); err != nil {
		t.Fatal(err)
	}
	b.waitEpoch(room, bob1, epochBefore+1)
	waitFor(t, "fan-out to drain", func() bool { return a.count("mimi_outbox") == 0 })
	before, epochBefore = snapshot(a, b), epochBefore+1
	if r := updateAnswer(b, stale); r.Code != protocol.UpdateWrongEpoch || r.CurrentEpoch != epochBefore {
		t.Fatalf("stale commit: %+v", r)
	}
	unchanged("stale commit")

	// A commit from a leaf that is not in the group.
	forged := b.bundle(room, bob1, func(*group.Group) group.CommitOptions { return group.CommitOptions{} })
	forged.ProposalOrCommit.PublicMessage.Content.Sender.LeafIndex = 9
	if r := updateAnswer(b, forged); r.Code != protocol.UpdateNotAllowed {
		t.Fatalf("commit from a non-member: %+v", r)
	}
	unchanged("non-member commit")

	// A valid commit of bob's, sent by a provider that is not bob's.
	if r := updateAnswer(c, b.bundle(room, bob1, func(*group.Group) group.CommitOptions { return group.CommitOptions{} })); r.Code != protocol.UpdateNotAllowed {
		t.Fatalf("bob's commit from c: %+v", r)
	}
	unchanged("commit from the wrong provider")

	// A commit with a broken signature.
	broken := b.bundle(room, bob1, func(*group.Group) group.CommitOptions { return group.CommitOptions{} })
	broken.ProposalOrCommit.PublicMessage.Auth.Signature[3] ^= 1
	if r := updateAnswer(b, broken); r.Code != protocol.UpdateInvalidProposal {
		t.Fatalf("badly signed commit: %+v", r)
	}
	unchanged("badly signed commit")

	// A commit whose GroupInfo is not of the new epoch.
	oldInfo := b.bundle(room, bob1, func(*group.Group) group.CommitOptions { return group.CommitOptions{} })
	g, _ := b.p.loadGroup(ctx, room, bob1)
	oldInfo.GroupInfoOption.GroupInfo, _ = g.GroupInfo(false)
	if r := updateAnswer(b, oldInfo); r.Code != protocol.UpdateInvalidProposal {
		t.Fatalf("commit with the old GroupInfo: %+v", r)
	}
	unchanged("commit with a stale GroupInfo")

	// Policy: a participant may not remove the admin, nor promote the observer.
	for name, change := range map[string]func(g *group.Group) group.CommitOptions{
		"remove the admin": func(g *group.Group) group.CommitOptions {
			st, _ := DecodeRoomState(g.Context().Extensions)
			exts := st.WithParticipant(alice, RoleNone).Extensions(g.Context().Extensions)
			return group.CommitOptions{Remove: []treemath.LeafIndex{0}, Extensions: &exts}
		},
		"promote the observer": func(g *group.Group) group.CommitOptions {
			st, _ := DecodeRoomState(g.Context().Extensions)
			exts := st.WithParticipant(dave, RoleAdmin).Extensions(g.Context().Extensions)
			return group.CommitOptions{Extensions: &exts}
		},
		"drop the hub from external_senders": func(g *group.Group) group.CommitOptions {
			st, _ := DecodeRoomState(g.Context().Extensions)
			exts := st.Extensions(nil)
			return group.CommitOptions{Extensions: &exts}
		},
	} {
		if r := updateAnswer(b, b.bundle(room, bob1, change)); r.Code != protocol.UpdateNotAllowed || !strings.Contains(r.ErrorDescription, "not allowed") {
			t.Fatalf("%s: %+v", name, r)
		}
		unchanged(name)
	}
	// The same through the API: the error is the sentinel.
	if err := b.p.RemoveUser(ctx, room, bob, alice); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("bob removing alice: %v", err)
	}
	unchanged("RemoveUser by a participant")
	if _, err := b.p.Send(ctx, room, dave, text(t, dave, room, "observers cannot send")); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("observer sending: %v", err)
	}
	unchanged("observer's message")

	// submitMessage: an old epoch, and a sender URI of another provider.
	g, _ = b.p.loadGroup(ctx, room, bob1)
	pm, err := g.Protect(text(t, bob, room, "x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	submitAnswer := func(req *protocol.SubmitMessageRequest) *protocol.SubmitMessageResponse {
		t.Helper()
		body, _ := req.Encode()
		status, resp := post(b, submit, roomVars, body)
		if status != http.StatusOK {
			t.Fatalf("submitMessage: HTTP %d %s", status, resp)
		}
		r, err := protocol.DecodeSubmitMessageResponse(resp)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := submitAnswer(&protocol.SubmitMessageRequest{AppMessage: *pm, SendingURI: alice}); r.Code != protocol.SubmitNotAllowed {
		t.Fatalf("message sent as another provider's user: %+v", r)
	}
	oldEpoch := *pm
	old := *pm.PrivateMessage
	old.Epoch--
	oldEpoch.PrivateMessage = &old
	if r := submitAnswer(&protocol.SubmitMessageRequest{AppMessage: oldEpoch, SendingURI: bob}); r.Code != protocol.SubmitEpochTooOld || r.CurrentEpoch != epochBefore {
		t.Fatalf("message for an old epoch: %+v", r)
	}
	// A message sent as a user that is not in the room, and as one listed but with no client in the group.
	erin, _ := b.register("erin", "phone")
	if r := submitAnswer(&protocol.SubmitMessageRequest{AppMessage: *pm, SendingURI: erin}); r.Code != protocol.SubmitNotAllowed {
		t.Fatalf("message sent as a non-member: %+v", r)
	}
	unchanged("bad submitMessage")

	// groupInfo: a requester that is not in the room, one of another provider than the sender, and an unknown room.
	groupInfoAnswer := func(from *node, id *group.Identity, roomID string) protocol.GroupInfoCode {
		t.Helper()
		_, pub, _ := from.p.suite.GenerateKeyPair()
		req := &protocol.GroupInfoRequest{CipherSuite: 1, RequestingSignatureKey: id.SigPub, RequestingCredential: id.Credential, GroupInfoPublicKey: pub}
		if err := req.Sign(from.p.suite, id.SigPriv); err != nil {
			t.Fatal(err)
		}
		body, _ := req.Encode()
		status, resp := post(from, func(d *protocol.Directory) string { return d.GroupInfo }, map[string]string{"roomId": roomID}, body)
		if status != http.StatusOK {
			t.Fatalf("groupInfo: HTTP %d %s", status, resp)
		}
		r, err := protocol.DecodeGroupInfoResponse(resp)
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}
	erin1, _ := b.p.RegisterUser(ctx, "erin", "laptop")
	identity := func(nd *node, client string) *group.Identity {
		t.Helper()
		id, _, err := nd.p.identity(ctx, client)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	if st := groupInfoAnswer(b, identity(b, erin1), room); st != protocol.GroupInfoNotAuthorized {
		t.Fatalf("groupInfo for a non-member: status %d", st)
	}
	// b asks with the credential and key of cathy (of c): a provider may only ask for its own users.
	_, cathy1 := c.register("cathy", "tablet")
	if st := groupInfoAnswer(b, identity(c, cathy1), room); st != protocol.GroupInfoNotAuthorized {
		t.Fatalf("groupInfo for another provider's user: status %d", st)
	}
	if st := groupInfoAnswer(b, identity(b, bob1), RoomURI("a.example", "nowhere")); st != protocol.GroupInfoNoSuchRoom {
		t.Fatalf("groupInfo for an unknown room: status %d", st)
	}
	unchanged("bad groupInfo")

	// keyMaterial through the hub: the room's policy does not let the observer add participants, and a provider may
	// not ask in another provider's user's name.
	kmStatus := func(from *node, requesterClient, requester, target string) int {
		t.Helper()
		id, _, err := from.p.identity(ctx, requesterClient)
		if err != nil {
			t.Fatal(err)
		}
		req := &protocol.KeyMaterialRequest{RequestingUser: requester, TargetUser: target, RoomID: room, AcceptableCiphersuites: []uint16{1},
			RequesterSignatureKey: id.SigPub, RequesterCredential: id.Credential}
		if err := req.Sign(from.p.suite, id.SigPriv); err != nil {
			t.Fatal(err)
		}
		body, _ := req.Encode()
		status, _ := post(from, func(d *protocol.Directory) string { return d.KeyMaterial }, map[string]string{"targetUser": target}, body)
		return status
	}
	dave1, _ := b.p.clientIn(ctx, room, dave)
	if st := kmStatus(b, dave1, dave, alice); st != http.StatusForbidden {
		t.Fatalf("key material for the observer: HTTP %d", st)
	}
	if st := kmStatus(b, erin1, erin, alice); st != http.StatusForbidden {
		t.Fatalf("key material for a non-member: HTTP %d", st)
	}
	if st := kmStatus(c, cathy1, bob, alice); st != http.StatusForbidden {
		t.Fatalf("key material asked by c in bob's name: HTTP %d", st)
	}
	if n := a.count("mimi_key_package WHERE claimed"); n != 0 {
		t.Fatalf("%d key packages claimed by refused requests", n)
	}

	// notify from the hub with a message of an old epoch: answered 201 (a message the followers cannot use must not
	// block the room's queue), and no event, group state or epoch change at the follower.
	ag, _ := a.p.loadGroup(ctx, room, alice1)
	am, err := ag.Protect(text(t, alice, room, "from an old epoch"), nil)
	if err != nil {
		t.Fatal(err)
	}
	oldMsg := *am.PrivateMessage
	oldMsg.Epoch--
	am.PrivateMessage = &oldMsg
	nb, err := protocol.EncodeFanout([]protocol.FanoutMessage{{Timestamp: nowMillis(), Message: *am}})
	if err != nil {
		t.Fatal(err)
	}
	bobState := func() string {
		var st []byte
		if err := b.db.QueryRow(ctx, "SELECT state FROM mimi_client_group WHERE client_uri=$1", bob1).Scan(&st); err != nil {
			t.Fatal(err)
		}
		return string(st)
	}
	stateBefore, bobEpoch := bobState(), epochBefore
	if status, _, _, err := a.p.peers.post(ctx, "b.example", notify, roomVars, nb); err != nil || status != http.StatusCreated {
		t.Fatalf("stale notify: %d %v", status, err)
	}
	if e, _ := b.epochAuth(room, bob1); e != bobEpoch || bobState() != stateBefore || b.count("mimi_inbox") != 0 {
		t.Fatalf("stale notify changed bob's group (epoch %d) or queued %d events", e, b.count("mimi_inbox"))
	}

	// keyMaterial with a broken signature.
	id, _, _ := b.p.identity(ctx, bob1)
	kmr := &protocol.KeyMaterialRequest{RequestingUser: bob, TargetUser: alice, RoomID: room, AcceptableCiphersuites: []uint16{1},
		RequesterSignatureKey: id.SigPub, RequesterCredential: id.Credential}
	if err := kmr.Sign(b.p.suite, id.SigPriv); err != nil {
		t.Fatal(err)
	}
	kmr.Signature[0] ^= 1
	body, _ := kmr.Encode()
	if status, _ := post(b, func(d *protocol.Directory) string { return d.KeyMaterial }, map[string]string{"targetUser": alice}, body); status != http.StatusBadRequest {
		t.Fatalf("badly signed keyMaterial: HTTP %d", status)
	}
	if n := a.count("mimi_key_package WHERE claimed"); n != 0 {
		t.Fatalf("%d key packages claimed by bad requests", n)
	}

	// Transport: a From header the certificate does not match, a wrong Host, no client certificate.
	raw := func(cert *tls.Certificate, from, host string) (int, error) {
		cfg := &tls.Config{RootCAs: n.ca.pool, ServerName: "a.example"}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		cl := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DialContext: n.dial}}
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, n.locate("a.example")+"/v1/update/x", strings.NewReader("x"))
		req.Header.Set("From", from)
		if host != "" {
			req.Host = host
		}
		resp, err := cl.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if s, err := raw(&b.cert, "mimi@a.example", ""); err != nil || s != http.StatusForbidden {
		t.Fatalf("b's certificate claiming to be a: %d %v", s, err)
	}
	if s, err := raw(&b.cert, "mimi@b.example", "z.example"); err != nil || s != http.StatusMisdirectedRequest {
		t.Fatalf("request for another host: %d %v", s, err)
	}
	if _, err := raw(nil, "mimi@b.example", ""); err == nil {
		t.Fatal("a request without a client certificate got an answer")
	}
	unchanged("transport checks")

	// The room still works.
	if _, err := b.p.Send(ctx, room, bob, text(t, bob, room, "still fine")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice to get bob's message", func() bool { return len(a.rec.messages()) == 1 })
}
