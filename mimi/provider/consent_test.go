package provider

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"

	"github.com/lmbridge/lmbridge/internal/testpg"
	"github.com/lmbridge/lmbridge/mimi/protocol"
)

// TestConsentFlow adds a user of a provider that requires consent, over HTTPS: Alice finds Bob's URI by his handle
// (identifierQuery), cannot fetch his key material before he consents, asks for his consent (requestConsent), and can
// add him once he granted it for the room (updateConsent); the grant covers that room only, and a revoke ends it.
func TestConsentFlow(t *testing.T) { runConsentFlow(t, newNet(t)) }

// TestConsentFlowPostgres runs the consent flow with both providers on PostgreSQL.
func TestConsentFlowPostgres(t *testing.T) {
	testpg.RequireT(t)
	n := newNet(t)
	n.postgres = true
	runConsentFlow(t, n)
}

func runConsentFlow(t *testing.T, n *testNet) {
	a := n.start(t, "a.example")
	b := n.startWith(t, "b.example", func(c *Config) {
		c.RequireConsent = true
		c.Findable = func(_ context.Context, user string) bool { return user != UserURI("b.example", "zach") }
	})
	ctx := testContext(t)
	alice, _ := a.register("alice", "phone")
	bob, _ := b.register("bob", "laptop")
	b.register("zach", "phone")
	room, err := a.p.CreateRoom(ctx, "consent", alice, RoomMetadata{Name: "Consent"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := a.p.CreateRoom(ctx, "other", alice, RoomMetadata{Name: "Other"})
	if err != nil {
		t.Fatal(err)
	}

	// Identifier query: by nick and by handle; Zach does not want to be found, nobody is not there.
	for _, h := range []string{"bob", "im:bob@b.example"} {
		if got, err := a.p.LookupUser(ctx, "b.example", h); err != nil || got != bob {
			t.Fatalf("looking up %q: %q %v", h, got, err)
		}
	}
	for _, h := range []string{"zach", "nobody", "im:bob@a.example", "im:bob"} {
		if got, err := a.p.LookupUser(ctx, "b.example", h); !errors.Is(err, ErrUnknownUser) {
			t.Fatalf("looking up %q: %q %v, want ErrUnknownUser", h, got, err)
		}
	}

	// Without consent the key material fetch is refused and nothing is claimed or committed.
	claimed := func() int { return b.count("mimi_key_package WHERE claimed") }
	logBefore := a.count("mimi_hub_log")
	if err := a.p.AddUser(ctx, room, alice, bob, RoleParticipant); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("adding bob without consent: %v", err)
	}
	if claimed() != 0 || a.count("mimi_hub_log") != logBefore {
		t.Fatalf("a refused add claimed %d key packages, logged %d messages", claimed(), a.count("mimi_hub_log")-logBefore)
	}

	// Alice asks; Bob's provider stores the request and tells its application.
	if err := a.p.RequestConsent(ctx, alice, bob, room); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's provider to hear the request", func() bool {
		return slices.ContainsFunc(b.rec.consentOps(), func(c Consent) bool {
			return c.Operation == protocol.ConsentRequest && c.Requester == alice && c.Target == bob && c.Room == room
		})
	})
	if reqs, err := b.p.ConsentRequests(ctx, bob); err != nil || len(reqs) != 1 || reqs[0].Requester != alice || reqs[0].Room != room {
		t.Fatalf("bob's pending requests: %+v %v", reqs, err)
	}
	// A cancel and a second request.
	if err := a.p.CancelConsentRequest(ctx, alice, bob, room); err != nil {
		t.Fatal(err)
	}
	if reqs, _ := b.p.ConsentRequests(ctx, bob); len(reqs) != 0 {
		t.Fatalf("requests after the cancel: %+v", reqs)
	}
	if err := a.p.RequestConsent(ctx, alice, bob, room); err != nil {
		t.Fatal(err)
	}

	// Bob grants it for this room: Alice's provider hears it, and the add goes through.
	if err := b.p.GrantConsent(ctx, bob, alice, room); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's provider to hear the grant", func() bool {
		return slices.ContainsFunc(a.rec.consentOps(), func(c Consent) bool {
			return c.Operation == protocol.ConsentGrant && c.Requester == alice && c.Target == bob && c.Room == room
		})
	})
	if ok, err := a.p.HasConsent(ctx, alice, bob, room); err != nil || !ok {
		t.Fatalf("alice's provider after the grant: %v %v", ok, err)
	}
	if reqs, _ := b.p.ConsentRequests(ctx, bob); len(reqs) != 0 {
		t.Fatalf("requests left after the grant: %+v", reqs)
	}
	if err := a.p.AddUser(ctx, room, alice, bob, RoleParticipant); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to join", func() bool { return b.rec.has(LocalJoined, bob) })

	// The grant was for that room only: the key material request for another is noConsentForThisRoom.
	if status := keyMaterialStatus(t, a, b, alice, bob, other); status != protocol.UserNoConsentForThisRoom {
		t.Fatalf("key material for another room: status %d", status)
	}
	if err := a.p.AddUser(ctx, other, alice, bob, RoleParticipant); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("adding bob to another room: %v", err)
	}

	// A grant for every room covers the other room; a revoke for it, stored after, ends it.
	if err := b.p.GrantConsent(ctx, bob, alice, ""); err != nil {
		t.Fatal(err)
	}
	if status := keyMaterialStatus(t, a, b, alice, bob, other); status != protocol.UserSuccess {
		t.Fatalf("key material after a grant for every room: status %d", status)
	}
	if err := b.p.RevokeConsent(ctx, bob, alice, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's provider to hear the revoke", func() bool {
		return slices.ContainsFunc(a.rec.consentOps(), func(c Consent) bool { return c.Operation == protocol.ConsentRevoke && c.Room == "" })
	})
	if status := keyMaterialStatus(t, a, b, alice, bob, other); status != protocol.UserNoConsentForThisRoom {
		t.Fatalf("key material after the revoke: status %d", status)
	}
}

// keyMaterialStatus is the user status b answers a's keyMaterial request (as requester, for target, in room) with.
func keyMaterialStatus(t *testing.T, a, b *node, requester, target, room string) protocol.KeyMaterialUserCode {
	t.Helper()
	ctx := testContext(t)
	clients, _ := a.p.clientsOf(ctx, requester)
	id, _, err := a.p.identity(ctx, clients[0])
	if err != nil {
		t.Fatal(err)
	}
	req := &protocol.KeyMaterialRequest{RequestingUser: requester, TargetUser: target, RoomID: room, AcceptableCiphersuites: []uint16{1},
		RequesterSignatureKey: id.SigPub, RequesterCredential: id.Credential}
	if err := req.Sign(a.p.suite, id.SigPriv); err != nil {
		t.Fatal(err)
	}
	resp, err := a.p.postKeyMaterial(ctx, b.domain, req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.UserStatus
}

// TestConsentBadInput sends the consent and identifier-query endpoints what they must refuse: a requester of
// another provider than the sender (403), an operation on the wrong endpoint or a user of another provider as the
// local one (400), an unknown local user (404), a query for another domain (400) or of an unsupported field
// (unsupportedField). Nothing is stored.
func TestConsentBadInput(t *testing.T) {
	n := newNet(t)
	a, b, c := n.start(t, "a.example"), n.start(t, "b.example"), n.start(t, "c.example")
	ctx := testContext(t)
	alice, _ := a.register("alice", "phone")
	bob, _ := b.register("bob", "laptop")
	cathy, _ := c.register("cathy", "tablet")
	requestConsent := func(d *protocol.Directory) string { return d.RequestConsent }
	updateConsent := func(d *protocol.Directory) string { return d.UpdateConsent }
	post := func(from *node, endpoint func(*protocol.Directory) string, vars map[string]string, e *protocol.ConsentEntry) int {
		t.Helper()
		body, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		status, _, _, err := from.p.peers.post(ctx, "b.example", endpoint, vars, body)
		if err != nil {
			t.Fatal(err)
		}
		return status
	}
	toB := map[string]string{"targetDomain": "b.example", "requesterDomain": "b.example"}
	for name, tc := range map[string]struct {
		from     *node
		endpoint func(*protocol.Directory) string
		vars     map[string]string
		entry    protocol.ConsentEntry
		want     int
	}{
		"request for a requester of another provider":  {c, requestConsent, toB, protocol.ConsentEntry{Operation: protocol.ConsentRequest, RequesterURI: alice, TargetURI: bob}, http.StatusForbidden},
		"grant sent to requestConsent":                 {a, requestConsent, toB, protocol.ConsentEntry{Operation: protocol.ConsentGrant, RequesterURI: alice, TargetURI: bob}, http.StatusBadRequest},
		"request sent to updateConsent":                {a, updateConsent, toB, protocol.ConsentEntry{Operation: protocol.ConsentRequest, RequesterURI: alice, TargetURI: bob}, http.StatusBadRequest},
		"request for a target of another provider":     {a, requestConsent, toB, protocol.ConsentEntry{Operation: protocol.ConsentRequest, RequesterURI: alice, TargetURI: cathy}, http.StatusBadRequest},
		"request for an unknown user":                  {a, requestConsent, toB, protocol.ConsentEntry{Operation: protocol.ConsentRequest, RequesterURI: alice, TargetURI: UserURI("b.example", "nobody")}, http.StatusNotFound},
		"grant from a target of another provider":      {c, updateConsent, toB, protocol.ConsentEntry{Operation: protocol.ConsentGrant, RequesterURI: bob, TargetURI: alice}, http.StatusForbidden},
		"request naming another domain in the path":    {a, requestConsent, map[string]string{"targetDomain": "c.example"}, protocol.ConsentEntry{Operation: protocol.ConsentRequest, RequesterURI: alice, TargetURI: bob}, http.StatusBadRequest},
		"request with a malformed room":                {a, requestConsent, toB, protocol.ConsentEntry{Operation: protocol.ConsentRequest, RequesterURI: alice, TargetURI: bob, RoomID: "mimi://a.example/u/x"}, http.StatusBadRequest},
		"request with a requester that is no user URI": {a, requestConsent, toB, protocol.ConsentEntry{Operation: protocol.ConsentRequest, RequesterURI: "mimi://a.example/r/x", TargetURI: bob}, http.StatusBadRequest},
	} {
		if got := post(tc.from, tc.endpoint, tc.vars, &tc.entry); got != tc.want {
			t.Errorf("%s: HTTP %d, want %d", name, got, tc.want)
		}
	}
	if n := b.count("mimi_consent") + b.count("mimi_consent_request") + b.count("mimi_inbox"); n != 0 {
		t.Fatalf("refused consent operations stored %d rows", n)
	}

	query := func(domain string, q *protocol.IdentifierRequest) (int, *protocol.IdentifierResponse) {
		t.Helper()
		body, err := q.Encode()
		if err != nil {
			t.Fatal(err)
		}
		status, resp, _, err := a.p.peers.post(ctx, "b.example", func(d *protocol.Directory) string { return d.IdentifierQuery }, map[string]string{"domain": domain}, body)
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusOK {
			return status, nil
		}
		r, err := protocol.DecodeIdentifierResponse(resp)
		if err != nil {
			t.Fatal(err)
		}
		return status, r
	}
	nick := &protocol.IdentifierRequest{Elements: []protocol.QueryElement{{Type: protocol.SearchNick, Value: "bob"}}}
	if status, _ := query("c.example", nick); status != http.StatusBadRequest {
		t.Fatalf("identifier query for another domain: HTTP %d", status)
	}
	if _, r := query("b.example", &protocol.IdentifierRequest{Elements: []protocol.QueryElement{{Type: protocol.SearchEmail, Value: "bob@b.example"}}}); r.Code != protocol.IdentifierUnsupportedField {
		t.Fatalf("query by email: %+v", r)
	}
	// Both elements must match the same user.
	if _, r := query("b.example", &protocol.IdentifierRequest{Elements: []protocol.QueryElement{{Type: protocol.SearchNick, Value: "bob"}, {Type: protocol.SearchHandle, Value: "im:alice@b.example"}}}); r.Code != protocol.IdentifierNotFound {
		t.Fatalf("query matching two users: %+v", r)
	}
	if _, r := query("b.example", nick); r.Code != protocol.IdentifierSuccess || !slices.Equal(r.URIs, []string{bob}) {
		t.Fatalf("query by nick: %+v", r)
	}
}
