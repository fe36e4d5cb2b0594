package group

import (
	"bytes"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// TestStateKeepsNodeHashes: the saved state carries the tree's node
// hashes (a loaded member does not re-hash the tree), and a version 1
// state, without them, still loads and works.
func TestStateKeepsNodeHashes(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	alice, _, _ := newMember(t, s, "alice")
	a, _ := Create(Config{}, s, []byte("g"), alice, nil)
	_, bkp, bpriv := newMember(t, s, "bob")
	_, ckp, _ := newMember(t, s, "carol")
	res := commitAndDeliver(t, []*Group{a}, 0, CommitOptions{Add: []*wire.KeyPackage{bkp, ckp}, RatchetTreeInWelcome: true})
	b := joinFrom(t, res.Welcome, bkp, bpriv, JoinOptions{})

	// A root hash planted in Bob's cache is what his loaded state reports:
	// it came from the state, not from re-hashing.
	copyB, err := UnmarshalState(b.MarshalState(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	hashes := copyB.tree.NodeHashes()
	root := len(hashes) / 2
	planted := append([][]byte(nil), hashes...)
	planted[root] = bytes.Repeat([]byte{7}, s.HashSize())
	if err := copyB.tree.SetNodeHashes(planted); err != nil {
		t.Fatal(err)
	}
	loaded, err := UnmarshalState(copyB.MarshalState(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(loaded.tree.Hash(), planted[root]) {
		t.Fatal("loaded state recomputed the tree hash instead of keeping the saved one")
	}

	// Version 1 and version 2 states both follow the next commit.
	for _, v := range []uint8{1, stateVersion} {
		g, err := UnmarshalState(b.marshalState(v), Config{})
		if err != nil {
			t.Fatalf("loading a version %d state: %v", v, err)
		}
		if !bytes.Equal(g.tree.Hash(), b.tree.Hash()) {
			t.Fatalf("version %d state: tree hash differs", v)
		}
		res, err := a.Commit(CommitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Process(roundTrip(t, res.Commit)); err != nil {
			t.Fatalf("version %d state processing a commit: %v", v, err)
		}
		a.DiscardPendingCommit()
	}
}
