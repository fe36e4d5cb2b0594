package provider

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/mimi/protocol"
	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/interop"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// tsFollower is a follower provider whose one user's client is ts-mls (an independent RFC 9420 implementation): it
// serves keyMaterial with ts-mls KeyPackages and hands what the hub notifies to ts-mls, over the same mutual TLS.
type tsFollower struct {
	t            testing.TB
	h            *interop.Harness
	domain, user string
	client       string
	peers        *peers
	mu           sync.Mutex
	plaintexts   [][]byte
	errs         []error
}

func startTSFollower(t *testing.T, n *testNet, h *interop.Harness) *tsFollower {
	domain := "t.example"
	f := &tsFollower{t: t, h: h, domain: domain, user: UserURI(domain, "tom"), client: ClientURI(domain, "tom", "ts")}
	cert := n.ca.issue(t, domain)
	tc := &TLSConfig{Certificate: cert, Roots: n.ca.pool}
	f.peers = newPeers(domain, tc, n.locate, n.dial)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	n.mu.Lock()
	n.ports[domain] = port
	n.mu.Unlock()
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+protocol.WellKnownDirectory, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(directoryFor("https://" + domain + ":" + port))
	})
	mux.HandleFunc("POST /v1/keyMaterial/{targetUser}", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req, err := protocol.DecodeKeyMaterialRequest(body)
		if err != nil || req.Verify(f.suite()) != nil || req.TargetUser != f.user {
			http.Error(w, "bad key material request", http.StatusBadRequest)
			return
		}
		// The room's GroupContext carries app_data_dictionary, which every member must list in its capabilities.
		kp, err := h.KeyPackageWith(r.Context(), "tom", 1, []byte(f.client), interop.KeyPackageOptions{Extensions: []uint16{uint16(ExtensionAppDataDictionary)}})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		var m wire.MLSMessage
		if err := codec.Unmarshal(kp.Message, &m); err != nil || m.KeyPackage == nil {
			http.Error(w, "ts-mls key package does not decode", http.StatusInternalServerError)
			return
		}
		resp := &protocol.KeyMaterialResponse{UserStatus: protocol.UserSuccess, UserURI: f.user,
			Clients: []protocol.ClientKeyMaterial{{Status: protocol.ClientSuccess, ClientURI: f.client, KeyPackage: m.KeyPackage}}}
		b, _ := resp.Encode()
		_, _ = w.Write(b)
	})
	mux.HandleFunc("POST /v1/notify/{roomId}", func(w http.ResponseWriter, r *http.Request) {
		if from, err := peerDomain(r); err != nil || from != "a.example" {
			http.Error(w, "not the hub", http.StatusForbidden)
			return
		}
		body, _ := io.ReadAll(r.Body)
		msgs, err := protocol.DecodeFanout(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for i := range msgs {
			f.handle(r.Context(), &msgs[i])
		}
		w.WriteHeader(http.StatusCreated)
	})
	srv := &http.Server{Handler: mux, TLSConfig: tc.server(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return f
}

func (f *tsFollower) suite() *ciphersuite.Suite { s, _ := ciphersuite.Lookup(Suite); return s }

func (f *tsFollower) handle(ctx context.Context, fm *protocol.FanoutMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := codec.Marshal(&fm.Message)
	if fm.Message.Welcome != nil {
		if _, err := f.h.Join(ctx, "tom", b, nil); err != nil {
			f.errs = append(f.errs, err)
		}
		return
	}
	res, err := f.h.Process(ctx, "tom", b)
	if err != nil {
		f.errs = append(f.errs, err)
		return
	}
	if res.Kind == "application" {
		f.plaintexts = append(f.plaintexts, res.Plaintext)
	}
}

func (f *tsFollower) received() ([][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.plaintexts...), errors.Join(f.errs...)
}

// send has ts-mls encrypt content and submits it to the hub as this provider.
func (f *tsFollower) send(ctx context.Context, room string, content []byte) *protocol.SubmitMessageResponse {
	f.t.Helper()
	f.mu.Lock()
	b, err := f.h.Send(ctx, "tom", content)
	f.mu.Unlock()
	if err != nil {
		f.t.Fatal(err)
	}
	var m wire.MLSMessage
	if err := codec.Unmarshal(b, &m); err != nil {
		f.t.Fatal(err)
	}
	body, err := (&protocol.SubmitMessageRequest{AppMessage: m, SendingURI: f.user}).Encode()
	if err != nil {
		f.t.Fatal(err)
	}
	status, out, _, err := f.peers.post(ctx, "a.example", func(d *protocol.Directory) string { return d.SubmitMessage }, map[string]string{"roomId": room}, body)
	if err != nil || status != http.StatusOK {
		f.t.Fatalf("submitMessage from ts-mls: %d %s %v", status, out, err)
	}
	resp, err := protocol.DecodeSubmitMessageResponse(out)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp
}

// TestTSMLSFollower has a ts-mls client stand for the user of a follower provider in a room our hub runs, beside a
// follower of ours: it is added (its KeyPackage through keyMaterial, its Welcome through notify), agrees on the
// epoch's authenticator, and exchanges MIMI content both ways with both Go providers.
func TestTSMLSFollower(t *testing.T) {
	h := interop.StartT(t)
	n := newNet(t)
	a, b := n.start(t, "a.example"), n.start(t, "b.example")
	ts := startTSFollower(t, n, h)
	ctx := testContext(t)
	alice, alice1 := a.register("alice", "phone")
	bob, bob1 := b.register("bob", "laptop")
	room, err := a.p.CreateRoom(ctx, "interop", alice, RoomMetadata{Name: "Interop"})
	if err != nil {
		t.Fatal(err)
	}
	agree := func(what string) {
		t.Helper()
		waitFor(t, "ts-mls to follow "+what, func() bool {
			if _, err := ts.received(); err != nil {
				t.Fatalf("ts-mls: %v", err)
			}
			st, err := h.State(ctx, "tom")
			e, _ := a.epochAuth(room, alice1)
			return err == nil && st.Epoch == e
		})
		st, _ := h.State(ctx, "tom")
		g, _ := a.p.loadGroup(ctx, room, alice1)
		if !bytes.Equal(st.EpochAuthenticator, g.EpochAuthenticator()) {
			t.Fatalf("after %s: ts-mls and Go disagree on epoch %d's authenticator", what, st.Epoch)
		}
		if _, err := ts.received(); err != nil {
			t.Fatalf("ts-mls: %v", err)
		}
	}
	// Bob first: ts-mls 1.6.4 reads the external_senders extension of a GroupContextExtensions proposal as one
	// ExternalSender rather than the vector RFC 9420 §12.1.8.1 defines ("Could not decode external_senders"), so it
	// cannot follow our room-state commits; it joins last, from the Welcome, whose GroupContext it accepts.
	if err := a.p.AddUser(ctx, room, alice, bob, RoleParticipant); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to join", func() bool { return b.rec.has(LocalJoined, bob) })
	if err := a.p.AddUser(ctx, room, alice, ts.user, RoleParticipant); err != nil {
		t.Fatal(err)
	}
	agree("its add")
	b.waitEpoch(room, bob1, 2)
	sameEpoch(t, room, map[*node][]string{a: {alice1}, b: {bob1}})

	hello := text(t, alice, room, "hello ts-mls")
	if _, err := a.p.Send(ctx, room, alice, hello); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ts-mls to decrypt", func() bool { got, _ := ts.received(); return len(got) == 1 })
	if got, _ := ts.received(); !bytes.Equal(got[0], hello) {
		t.Fatalf("ts-mls decrypted %x, want %x", got[0], hello)
	}

	reply := text(t, ts.user, room, "hello from ts-mls")
	if r := ts.send(ctx, room, reply); r.Code != protocol.SubmitAccepted {
		t.Fatalf("hub refused the ts-mls message: %+v", r)
	}
	for nd, want := range map[*node]int{a: 1, b: 2} { // b also has alice's
		waitFor(t, nd.domain+" to get the ts-mls message", func() bool { return len(nd.rec.messages()) == want })
		m := nd.rec.messages()[want-1]
		if m.Sender != ts.user || !bytes.Equal(m.Content, reply) || bodyOf(t, m.Content) != "hello from ts-mls" {
			t.Fatalf("%s received %+v", nd.domain, m)
		}
	}
	if _, err := b.p.Send(ctx, room, bob, text(t, bob, room, "and from bob")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ts-mls to decrypt bob's", func() bool { got, _ := ts.received(); return len(got) == 2 })
	if got, _ := ts.received(); bodyOf(t, got[1]) != "and from bob" {
		t.Fatalf("ts-mls decrypted %q", got[1])
	}
}
