package interop_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/interop"
	"github.com/lmbridge/lmbridge/mls/tree"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// TestGoDecodesTSMLS reads what ts-mls writes with the Go library's decoders, for every suite: each MLSMessage
// decodes and re-encodes to the same bytes, KeyPackage and GroupInfo signatures verify, KeyPackageRefs match, and
// ts-mls's ratchet tree passes the Go tree's joiner checks with the tree hash ts-mls has in its group context.
func TestGoDecodesTSMLS(t *testing.T) {
	t.Parallel()
	h := interop.StartT(t)
	for _, id := range suites {
		t.Run(fmt.Sprintf("suite%d", id), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			s, err := ciphersuite.Lookup(ciphersuite.ID(id))
			if err != nil {
				t.Fatal(err)
			}
			goDecodesTSMLS(t, ctx, h, s)
		})
	}
}

// decodeMessage decodes MLSMessage bytes strictly and checks that they re-encode to themselves.
func decodeMessage(t *testing.T, what string, b []byte) *wire.MLSMessage {
	t.Helper()
	var m wire.MLSMessage
	if err := codec.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s from ts-mls does not decode: %v", what, err)
	}
	if again := codec.Marshal(&m); !bytes.Equal(again, b) {
		t.Fatalf("%s from ts-mls re-encodes differently:\n ts-mls %x\n Go     %x", what, b, again)
	}
	return &m
}

// checkTree decodes a ratchet tree from ts-mls, runs a joiner's checks on it and compares its hash with treeHash.
func checkTree(t *testing.T, s *ciphersuite.Suite, what string, b, groupID, treeHash []byte) *tree.Tree {
	t.Helper()
	tr, err := tree.Decode(s, b)
	if err != nil {
		t.Fatalf("%s: ts-mls's ratchet tree does not decode: %v", what, err)
	}
	if err = tr.Verify(groupID); err != nil {
		t.Fatalf("%s: ts-mls's ratchet tree fails verification: %v", what, err)
	}
	if got := tr.Hash(); !bytes.Equal(got, treeHash) {
		t.Fatalf("%s: tree hash %x, ts-mls's group context has %x", what, got, treeHash)
	}
	if again := tr.Encode(); !bytes.Equal(again, b) {
		t.Fatalf("%s: ratchet tree re-encodes differently", what)
	}
	return tr
}

func goDecodesTSMLS(t *testing.T, ctx context.Context, h *interop.Harness, s *ciphersuite.Suite) {
	id := uint16(s.ID())
	name := func(n string) string { return fmt.Sprintf("w%d-%s", id, n) }
	groupID := []byte(fmt.Sprintf("wire-%d", id))

	// KeyPackages, plain and with every GREASE value.
	var kps [][]byte
	for _, c := range []struct {
		who    string
		grease bool
	}{{"bob", false}, {"carol", true}} {
		life := &interop.Lifetime{NotBefore: time.Now().Unix() - 3600, NotAfter: time.Now().Unix() + 7*24*3600}
		kp, err := h.KeyPackageWith(ctx, name(c.who), id, []byte(c.who), interop.KeyPackageOptions{Grease: c.grease, Lifetime: life})
		if err != nil {
			t.Fatal(err)
		}
		m := decodeMessage(t, "KeyPackage", kp.Message)
		if m.KeyPackage == nil {
			t.Fatal("the KeyPackage MLSMessage holds no KeyPackage")
		}
		if uint16(m.KeyPackage.CipherSuite) != id {
			t.Fatalf("KeyPackage of suite %d, want %d", m.KeyPackage.CipherSuite, id)
		}
		if err = m.KeyPackage.Verify(s); err != nil {
			t.Fatalf("%s's KeyPackage (grease %v) does not verify: %v", c.who, c.grease, err)
		}
		if lt := m.KeyPackage.LeafNode.Lifetime; lt.NotBefore != uint64(life.NotBefore) || lt.NotAfter != uint64(life.NotAfter) {
			t.Fatalf("KeyPackage lifetime %+v, want %+v", lt, *life)
		}
		if ref := m.KeyPackage.Ref(s); !bytes.Equal(ref, kp.Ref) {
			t.Fatalf("KeyPackageRef %x, ts-mls computes %x", ref, kp.Ref)
		}
		kps = append(kps, kp.Message)
	}

	// An add-only commit (no path) and its Welcome.
	if _, err := h.Create(ctx, name("alice"), id, groupID, []byte("alice")); err != nil {
		t.Fatal(err)
	}
	c, err := h.Add(ctx, name("alice"), kps, interop.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := decodeMessage(t, "add commit", c.Message)
	if m.PublicMessage == nil || m.PublicMessage.Content.ContentType != wire.ContentCommit {
		t.Fatal("the add commit is not a PublicMessage commit")
	}
	if cm := m.PublicMessage.Content.Commit; len(cm.Proposals) != 2 || cm.Path != nil {
		t.Fatalf("the add commit has %d proposals and path %v, want 2 and none", len(cm.Proposals), cm.Path != nil)
	}
	w := decodeMessage(t, "Welcome", c.Welcome)
	if w.Welcome == nil || uint16(w.Welcome.CipherSuite) != id || len(w.Welcome.Secrets) != 2 {
		t.Fatal("the Welcome is not a Welcome of the suite for two members")
	}
	if _, err = h.Join(ctx, name("bob"), c.Welcome, nil); err != nil {
		t.Fatal(err)
	}
	st, err := h.State(ctx, name("bob"))
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, s, "after the add", c.Tree, groupID, st.TreeHash)

	// A commit with a path, then the tree with parent hashes to check.
	c, err = h.Commit(ctx, name("bob"), nil, interop.CommitOptions{GroupInfo: true})
	if err != nil {
		t.Fatal(err)
	}
	if m = decodeMessage(t, "the commit's GroupInfo", c.GroupInfo); m.GroupInfo == nil || m.GroupInfo.GroupContext.Epoch != c.Epoch {
		t.Fatalf("the GroupInfo asked for with the commit is not one of epoch %d", c.Epoch)
	}
	m = decodeMessage(t, "commit with a path", c.Message)
	if m.PublicMessage == nil || m.PublicMessage.Content.Commit == nil || m.PublicMessage.Content.Commit.Path == nil {
		t.Fatal("the empty commit has no path")
	}
	if snd := m.PublicMessage.Content.Sender; snd.Type != wire.SenderMember || snd.LeafIndex != 1 {
		t.Fatalf("the commit's sender is %+v, want member 1", snd)
	}
	if _, err = h.Process(ctx, name("alice"), c.Message); err != nil {
		t.Fatal(err)
	}
	st, err = h.State(ctx, name("alice"))
	if err != nil {
		t.Fatal(err)
	}
	tr := checkTree(t, s, "after bob's path", c.Tree, groupID, st.TreeHash)

	// A GroupInfo for external joiners: signed by alice, with external_pub and the tree.
	gi, treeBytes, err := h.GroupInfo(ctx, name("alice"), false)
	if err != nil {
		t.Fatal(err)
	}
	m = decodeMessage(t, "GroupInfo", gi)
	g := m.GroupInfo
	if g == nil || g.GroupContext.Epoch != st.Epoch || !bytes.Equal(g.GroupContext.TreeHash, st.TreeHash) ||
		!bytes.Equal(g.GroupContext.GroupID, groupID) {
		t.Fatalf("the GroupInfo's group context does not match alice's state %+v", st)
	}
	signer := tr.Leaf(g.Signer)
	if signer == nil {
		t.Fatalf("the GroupInfo's signer %d is no member", g.Signer)
	}
	if err = g.Verify(s, signer.SignatureKey); err != nil {
		t.Fatalf("the GroupInfo's signature does not verify: %v", err)
	}
	if _, ok := g.Extensions.Find(wire.ExtensionExternalPub); !ok {
		t.Fatal("the GroupInfo has no external_pub")
	}
	inline, ok := g.Extensions.Find(wire.ExtensionRatchetTree)
	if !ok {
		t.Fatal("the GroupInfo has no ratchet_tree")
	}
	if !bytes.Equal(inline, treeBytes) {
		t.Fatal("the GroupInfo's ratchet_tree differs from alice's tree")
	}

	// Application messages and a PrivateMessage commit are PrivateMessages for the epoch.
	for _, what := range []string{"application message", "PrivateMessage commit"} {
		var b []byte
		if what == "application message" {
			b, err = h.Send(ctx, name("alice"), []byte("hello"))
		} else {
			var pc interop.Commit
			pc, err = h.Commit(ctx, name("alice"), nil, interop.CommitOptions{Private: true, Pending: true})
			b = pc.Message
		}
		if err != nil {
			t.Fatal(err)
		}
		m = decodeMessage(t, what, b)
		if m.PrivateMessage == nil || m.PrivateMessage.Epoch != st.Epoch || !bytes.Equal(m.PrivateMessage.GroupID, groupID) {
			t.Fatalf("the %s is not a PrivateMessage of the group's epoch %d", what, st.Epoch)
		}
	}
	if _, err = h.Discard(ctx, name("alice")); err != nil {
		t.Fatal(err)
	}

	// An external commit: its sender is a new member.
	ext, _, err := h.ExternalJoin(ctx, name("dave"), gi, nil, []byte("dave"))
	if err != nil {
		t.Fatal(err)
	}
	m = decodeMessage(t, "external commit", ext)
	if m.PublicMessage == nil || m.PublicMessage.Content.Sender.Type != wire.SenderNewMemberCommit {
		t.Fatal("the external commit is not a PublicMessage from a new member")
	}
}
