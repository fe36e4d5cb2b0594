package interop_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/mls/interop"
)

// suites are RFC 9420's seven ciphersuites; issue 10 requires 1 and 3, and ts-mls has all of them.
var suites = []uint16{1, 2, 3, 4, 5, 6, 7}

// group follows one group's members through the harness; every member is a ts-mls client, and the test carries the
// bytes between them as a delivery service would, so every value has crossed the wire encoding.
type group struct {
	t       *testing.T
	ctx     context.Context
	h       *interop.Harness
	suite   uint16
	prefix  string
	members []string // client names of the current members
	epoch   uint64
}

func (g *group) name(n string) string { return g.prefix + n }

// agree checks that every member is in epoch want and that all agree on everything a member can compare: the epoch
// authenticator, an exporter value, the tree hash, the confirmed transcript hash and the member list. It returns
// the epoch authenticator.
func (g *group) agree(want uint64) []byte {
	g.t.Helper()
	var first interop.State
	ctx := []byte(fmt.Sprintf("epoch %d", want))
	for i, m := range g.members {
		st, err := g.h.Export(g.ctx, g.name(m), "lmbridge interop", ctx, 32)
		if err != nil {
			g.t.Fatal(err)
		}
		if st.Epoch != want {
			g.t.Fatalf("%s is in epoch %d, want %d", m, st.Epoch, want)
		}
		if st.Active != "active" {
			g.t.Fatalf("%s is %q, want active", m, st.Active)
		}
		if len(st.EpochAuthenticator) == 0 || len(st.Exporter) != 32 {
			g.t.Fatalf("%s reports an epoch authenticator of %d bytes and an exporter value of %d", m, len(st.EpochAuthenticator), len(st.Exporter))
		}
		if i == 0 {
			first = st
			continue
		}
		for _, c := range []struct {
			what string
			a, b []byte
		}{
			{"epoch_authenticator", first.EpochAuthenticator, st.EpochAuthenticator},
			{"exporter value", first.Exporter, st.Exporter},
			{"tree hash", first.TreeHash, st.TreeHash},
			{"confirmed transcript hash", first.ConfirmedTranscriptHash, st.ConfirmedTranscriptHash},
			{"group id", first.GroupID, st.GroupID},
		} {
			if !bytes.Equal(c.a, c.b) {
				g.t.Fatalf("epoch %d: %s has %s %x, %s has %x", want, g.members[0], c.what, c.a, m, c.b)
			}
		}
		if !slices.EqualFunc(first.Members, st.Members, func(a, b interop.Member) bool {
			return a.Leaf == b.Leaf && bytes.Equal(a.Identity, b.Identity)
		}) {
			g.t.Fatalf("epoch %d: %s sees members %v, %s sees %v", want, g.members[0], first.Members, m, st.Members)
		}
	}
	if len(first.Members) != len(g.members) {
		g.t.Fatalf("epoch %d: the tree holds %d members, want %d", want, len(first.Members), len(g.members))
	}
	g.epoch = want
	return first.EpochAuthenticator
}

// deliver hands a handshake message to every member but the sender and those in skip, checking that each moves to
// the next epoch (a commit) or stays (a proposal).
func (g *group) deliver(sender string, msg []byte, kind string, skip ...string) {
	g.t.Helper()
	for _, m := range g.members {
		if m == sender || slices.Contains(skip, m) {
			continue
		}
		p, err := g.h.Process(g.ctx, g.name(m), msg)
		if err != nil {
			g.t.Fatal(err)
		}
		if p.Kind != kind {
			g.t.Fatalf("%s processed a %s as a %s", m, kind, p.Kind)
		}
	}
}

// chat has every member send a message that every other member decrypts.
func (g *group) chat() {
	g.t.Helper()
	for _, from := range g.members {
		text := []byte(fmt.Sprintf("%s says hello in epoch %d", from, g.epoch))
		msg, err := g.h.Send(g.ctx, g.name(from), text)
		if err != nil {
			g.t.Fatal(err)
		}
		for _, to := range g.members {
			if to == from {
				continue
			}
			p, err := g.h.Process(g.ctx, g.name(to), msg)
			if err != nil {
				g.t.Fatal(err)
			}
			if p.Kind != "application" || !bytes.Equal(p.Plaintext, text) {
				g.t.Fatalf("%s got %s %q from %s, want application %q", to, p.Kind, p.Plaintext, from, text)
			}
		}
	}
}

func (g *group) keyPackage(member string, opts interop.KeyPackageOptions) []byte {
	g.t.Helper()
	kp, err := g.h.KeyPackageWith(g.ctx, g.name(member), g.suite, []byte(member), opts)
	if err != nil {
		g.t.Fatal(err)
	}
	if len(kp.Ref) == 0 {
		g.t.Fatalf("no KeyPackageRef for %s", member)
	}
	return kp.Message
}

func (g *group) join(member string, welcome, tree []byte) {
	g.t.Helper()
	st, err := g.h.Join(g.ctx, g.name(member), welcome, tree)
	if err != nil {
		g.t.Fatal(err)
	}
	if st.Epoch != g.epoch+1 {
		g.t.Fatalf("%s joined in epoch %d, want %d", member, st.Epoch, g.epoch+1)
	}
	g.members = append(g.members, member)
}

func wantRefused(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want a refusal", what)
	}
	if !errors.Is(err, interop.ErrRequest) {
		t.Fatalf("%s: %v, want an error wrapping ErrRequest", what, err)
	}
}

// TestSelfInterop runs ts-mls against itself through the harness for every suite: the scenario issue 10 requires
// between ts-mls and the Go library, with both sides ts-mls, so that the harness is proven before the Go library
// takes one side. The members compare epoch_authenticator (and more) after every epoch.
func TestSelfInterop(t *testing.T) {
	t.Parallel()
	h := interop.StartT(t)
	for _, suite := range suites {
		t.Run(fmt.Sprintf("suite%d", suite), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			selfInterop(t, ctx, h, suite)
		})
	}
}

func selfInterop(t *testing.T, ctx context.Context, h *interop.Harness, suite uint16) {
	g := &group{t: t, ctx: ctx, h: h, suite: suite, prefix: fmt.Sprintf("s%d-", suite)}
	groupID := make([]byte, 16)
	_, _ = rand.Read(groupID)

	// Epoch 0: alice creates the group.
	st, err := h.Create(ctx, g.name("alice"), suite, groupID, []byte("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Suite != suite || !bytes.Equal(st.GroupID, groupID) || st.Leaf != 0 {
		t.Fatalf("created group reports suite %d, group id %x, leaf %d", st.Suite, st.GroupID, st.Leaf)
	}
	g.members = []string{"alice"}
	g.agree(0)

	// Epoch 1: alice adds bob (whose leaf advertises every GREASE value) with the tree in the Welcome.
	c, err := h.Add(ctx, g.name("alice"), [][]byte{g.keyPackage("bob", interop.KeyPackageOptions{Grease: true})}, interop.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Welcome == nil || c.Epoch != 1 {
		t.Fatalf("add commit: epoch %d, welcome of %d bytes", c.Epoch, len(c.Welcome))
	}
	g.join("bob", c.Welcome, nil)
	auth1 := g.agree(1)
	g.chat()

	// Epoch 2: bob adds carol and dave in one commit, the tree out of band.
	kps := [][]byte{g.keyPackage("carol", interop.KeyPackageOptions{}), g.keyPackage("dave", interop.KeyPackageOptions{})}
	c, err = h.Add(ctx, g.name("bob"), kps, interop.CommitOptions{NoRatchetTree: true})
	if err != nil {
		t.Fatal(err)
	}
	g.deliver("bob", c.Message, "commit")
	if _, err = h.Join(ctx, g.name("carol"), c.Welcome, nil); err == nil {
		t.Fatal("carol joined from a Welcome without a ratchet tree and was given none")
	}
	g.join("carol", c.Welcome, c.Tree)
	g.join("dave", c.Welcome, c.Tree)
	if auth2 := g.agree(2); bytes.Equal(auth1, auth2) {
		t.Fatal("the epoch authenticator did not change from epoch 1 to 2")
	}
	g.chat()

	// Epoch 3: carol updates her leaf (an empty commit with a path).
	c, err = h.Commit(ctx, g.name("carol"), nil, interop.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Welcome != nil {
		t.Fatal("an empty commit produced a Welcome")
	}
	g.deliver("carol", c.Message, "commit")
	g.agree(3)
	// The same commit again is for an epoch that has passed.
	_, err = h.Process(ctx, g.name("alice"), c.Message)
	wantRefused(t, "processing a commit twice", err)
	g.agree(3)

	// Epoch 4: a commit framed as a PrivateMessage.
	c, err = h.Commit(ctx, g.name("dave"), nil, interop.CommitOptions{Private: true})
	if err != nil {
		t.Fatal(err)
	}
	g.deliver("dave", c.Message, "commit")
	g.agree(4)

	// Epoch 5: alice proposes adding erin; carol commits the proposal by reference.
	prop, err := h.Propose(ctx, g.name("alice"), interop.AddProposal(g.keyPackage("erin", interop.KeyPackageOptions{})), false)
	if err != nil {
		t.Fatal(err)
	}
	g.deliver("alice", prop, "proposal")
	c, err = h.Commit(ctx, g.name("carol"), nil, interop.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Welcome == nil {
		t.Fatal("committing an add proposal by reference produced no Welcome")
	}
	g.deliver("carol", c.Message, "commit")
	g.join("erin", c.Welcome, nil)
	g.agree(5)

	// Epoch 6: alice removes carol (leaf 2); carol learns she is out and can read nothing more.
	c, err = h.Commit(ctx, g.name("alice"), []interop.Proposal{interop.RemoveProposal(2)}, interop.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g.deliver("alice", c.Message, "commit", "carol")
	p, err := h.Process(ctx, g.name("carol"), c.Message)
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != "commit" || p.Active == "active" {
		t.Fatalf("carol processed her removal as a %s and reports %q", p.Kind, p.Active)
	}
	g.members = slices.DeleteFunc(g.members, func(m string) bool { return m == "carol" })
	g.agree(6)
	secret, err := h.Send(ctx, g.name("bob"), []byte("not for carol"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Process(ctx, g.name("carol"), secret)
	wantRefused(t, "a removed member decrypting a new epoch's message", err)
	for _, m := range g.members {
		if m == "bob" {
			continue
		}
		if p, err = h.Process(ctx, g.name(m), secret); err != nil || !bytes.Equal(p.Plaintext, []byte("not for carol")) {
			t.Fatalf("%s could not read bob's message after carol left: %v", m, err)
		}
	}

	// Epoch 7: frank joins by an external commit from bob's GroupInfo.
	gi, _, err := h.GroupInfo(ctx, g.name("bob"), false)
	if err != nil {
		t.Fatal(err)
	}
	ext, st, err := h.ExternalJoin(ctx, g.name("frank"), gi, nil, []byte("frank"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Epoch != 7 {
		t.Fatalf("frank joined externally in epoch %d, want 7", st.Epoch)
	}
	g.deliver("frank", ext, "commit")
	g.members = append(g.members, "frank")
	g.agree(7)

	// Epoch 8: george joins externally from a GroupInfo without the tree, given the tree out of band.
	gi, tree, err := h.GroupInfo(ctx, g.name("erin"), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err = h.ExternalJoin(ctx, g.name("george-no-tree"), gi, nil, []byte("george")); err == nil {
		t.Fatal("an external join from a GroupInfo without a tree, given none, succeeded")
	}
	ext, _, err = h.ExternalJoin(ctx, g.name("george"), gi, tree, []byte("george"))
	if err != nil {
		t.Fatal(err)
	}
	g.deliver("george", ext, "commit")
	g.members = append(g.members, "george")
	g.agree(8)
	g.chat()

	// Epoch 9: an external PSK that every member holds.
	pskID, pskSecret := []byte("lmbridge-psk"), bytes.Repeat([]byte{0x42}, 32)
	for _, m := range g.members {
		if err = h.PSK(ctx, g.name(m), pskID, pskSecret); err != nil {
			t.Fatal(err)
		}
	}
	c, err = h.Commit(ctx, g.name("frank"), []interop.Proposal{interop.PSKProposal(pskID, nil)}, interop.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g.deliver("frank", c.Message, "commit")
	g.agree(9)

	// Epoch 10: alice and dave both commit in epoch 9, as a delivery service would see it; the service sequences
	// dave's, so alice discards hers and processes his.
	ca, err := h.Commit(ctx, g.name("alice"), nil, interop.CommitOptions{Pending: true})
	if err != nil {
		t.Fatal(err)
	}
	cd, err := h.Commit(ctx, g.name("dave"), nil, interop.CommitOptions{Pending: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = h.Commit(ctx, g.name("dave"), nil, interop.CommitOptions{}); err == nil {
		t.Fatal("dave made a second commit while one was pending")
	}
	g.agree(9) // both are still in epoch 9
	if _, err = h.Merge(ctx, g.name("dave")); err != nil {
		t.Fatal(err)
	}
	g.deliver("dave", cd.Message, "commit", "alice")
	if p, err = h.Process(ctx, g.name("alice"), cd.Message); err != nil {
		t.Fatal(err)
	}
	if !p.PendingDiscarded {
		t.Fatal("alice processed dave's commit but kept her own pending one")
	}
	_, err = h.Process(ctx, g.name("bob"), ca.Message)
	wantRefused(t, "processing the losing commit of the same epoch", err)
	g.agree(10)
	g.chat()
	t.Logf("suite %d: %d epochs, members %v agree after each", suite, g.epoch, g.members)
}

// TestHarnessRefusesBadRequests checks that bad requests are answered with errors and leave the harness working.
func TestHarnessRefusesBadRequests(t *testing.T) {
	h := interop.StartT(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	wantRefused(t, "unknown op", h.Call(ctx, "no-such-op", nil, nil))
	_, err := h.State(ctx, "nobody")
	wantRefused(t, "state of an unknown client", err)
	_, err = h.KeyPackage(ctx, "bad", 99, []byte("x"))
	wantRefused(t, "KeyPackage of an unknown suite", err)
	if _, err = h.Create(ctx, "alice", 1, []byte("g"), nil); err != nil {
		t.Fatal(err)
	}
	_, err = h.Process(ctx, "alice", []byte{0x00, 0x01, 0x00})
	wantRefused(t, "processing bytes that are no MLSMessage", err)
	kp, err := h.KeyPackage(ctx, "bob", 1, []byte("bob"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Process(ctx, "alice", kp)
	wantRefused(t, "processing a KeyPackage as a message", err)
	_, err = h.Process(ctx, "alice", append(slices.Clone(kp), 0))
	wantRefused(t, "processing an MLSMessage with a trailing byte", err)
	_, err = h.Join(ctx, "alice", kp, nil)
	wantRefused(t, "joining from a KeyPackage", err)
	_, err = h.Commit(ctx, "alice", []interop.Proposal{interop.RemoveProposal(5)}, interop.CommitOptions{})
	wantRefused(t, "removing a leaf that does not exist", err)
	err = h.Call(ctx, "process", map[string]any{"client": "alice", "message": "not hex"}, nil)
	wantRefused(t, "a message that is not hex", err)

	// A commit is refused after its bytes are changed anywhere in its signed content.
	c, err := h.Add(ctx, "alice", [][]byte{kp}, interop.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = h.Join(ctx, "bob", c.Welcome, nil); err != nil {
		t.Fatal(err)
	}
	c, err = h.Commit(ctx, "alice", nil, interop.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bad := slices.Clone(c.Message)
	bad[len(bad)/2] ^= 0x01
	_, err = h.Process(ctx, "bob", bad)
	wantRefused(t, "processing a commit with a flipped bit", err)
	if _, err = h.Process(ctx, "bob", c.Message); err != nil {
		t.Fatalf("bob could not process the commit after refusing a corrupt copy: %v", err)
	}

	if _, err = h.Ping(ctx); err != nil {
		t.Fatalf("the harness stopped answering after bad requests: %v", err)
	}
}

// TestHarnessClose checks that Close ends the harness process and that later calls fail with ErrExited.
func TestHarnessClose(t *testing.T) {
	h := interop.StartT(t)
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := h.Ping(context.Background())
	if !errors.Is(err, interop.ErrExited) {
		t.Fatalf("ping after Close: %v, want ErrExited", err)
	}
}
