package group

import (
	"bytes"
	"errors"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// anySuccessor accepts every credential and every successor: a joiner that
// does not check what it removes.
type anySuccessor struct{}

func (anySuccessor) ValidateCredential(*wire.Credential, []byte) error { return nil }
func (anySuccessor) ValidateSuccessor(_, _ *wire.Credential) error     { return nil }

// sameName is a SuccessorValidator that accepts a basic identity with a
// "-2" suffix as the successor of the plain one.
type sameName struct{}

func (sameName) ValidateCredential(*wire.Credential, []byte) error { return nil }
func (sameName) ValidateSuccessor(old, next *wire.Credential) error {
	if bytes.Equal(next.Identity, old.Identity) || bytes.Equal(next.Identity, append(bytes.Clone(old.Identity), "-2"...)) {
		return nil
	}
	return errors.New("different person")
}

func TestExternalResyncIdentity(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	alice, _, _ := newMember(t, s, "alice")
	a, _ := Create(Config{}, s, []byte("g"), alice, nil)
	_, bkp, bpriv := newMember(t, s, "bob")
	res := commitAndDeliver(t, []*Group{a}, 0, CommitOptions{Add: []*wire.KeyPackage{bkp}, RatchetTreeInWelcome: true})
	b := joinFrom(t, res.Welcome, bkp, bpriv, JoinOptions{})
	gi, err := a.GroupInfo(true)
	if err != nil {
		t.Fatal(err)
	}
	bobLeaf := b.LeafIndex()

	// Mallory tries to "resync" Bob's leaf away: her own side refuses.
	mallory, _, _ := newMember(t, s, "mallory")
	if _, _, err := JoinExternal(Config{}, gi, mallory, ExternalJoinOptions{Resync: &bobLeaf}); !errors.Is(err, ErrCredential) {
		t.Fatalf("resync of another's leaf: %v", err)
	}
	// A joiner that does not check sends it; the members refuse it.
	_, commit, err := JoinExternal(Config{Auth: anySuccessor{}}, gi, mallory, ExternalJoinOptions{Resync: &bobLeaf})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []*Group{a, b} {
		if _, err := g.Process(roundTrip(t, commit)); !errors.Is(err, ErrCredential) {
			t.Fatalf("processing a resync that removes another client: %v", err)
		}
	}

	// With the application's rule, "bob-2" is Bob's successor.
	bob2, _, _ := newMember(t, s, "bob-2")
	if _, _, err := JoinExternal(Config{}, gi, bob2, ExternalJoinOptions{Resync: &bobLeaf}); !errors.Is(err, ErrCredential) {
		t.Fatalf("resync under another name without the application's rule: %v", err)
	}
	b2, commit, err := JoinExternal(Config{Auth: sameName{}}, gi, bob2, ExternalJoinOptions{Resync: &bobLeaf})
	if err != nil {
		t.Fatal(err)
	}
	a.cfg.Auth = sameName{}
	if _, err := a.Process(roundTrip(t, commit)); err != nil {
		t.Fatalf("resync accepted by the application's rule: %v", err)
	}
	checkApplication(t, []*Group{a, b2}, 0, "bob-2 is bob")
}

func TestExternalCommitTwoRemoves(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	alice, _, _ := newMember(t, s, "alice")
	a, _ := Create(Config{}, s, []byte("g"), alice, nil)
	var kps []*wire.KeyPackage
	for _, n := range []string{"bob", "carol"} {
		_, kp, _ := newMember(t, s, n)
		kps = append(kps, kp)
	}
	commitAndDeliver(t, []*Group{a}, 0, CommitOptions{Add: kps})
	sender := wire.Sender{Type: wire.SenderNewMemberCommit}
	props := []resolvedProposal{{&wire.ExternalInit{KEMOutput: []byte{1}}, sender},
		{&wire.Remove{Removed: 1}, sender}, {&wire.Remove{Removed: 2}, sender}}
	if _, err := a.applyProposals(a.tree.Clone(), props, nil, false); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("external commit with two removes: %v", err)
	}
}

// TestUpdateSuccessor: an Update may not swap the member's identity.
func TestUpdateSuccessor(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	alice, _, _ := newMember(t, s, "alice")
	a, _ := Create(Config{}, s, []byte("g"), alice, nil)
	_, bkp, bpriv := newMember(t, s, "bob")
	res := commitAndDeliver(t, []*Group{a}, 0, CommitOptions{Add: []*wire.KeyPackage{bkp}, RatchetTreeInWelcome: true})
	b := joinFrom(t, res.Welcome, bkp, bpriv, JoinOptions{})
	// Bob's update claims to be Eve.
	_, pub, _ := s.GenerateKeyPair()
	ln := *b.tree.Leaf(b.me)
	ln.EncryptionKey, ln.Source, ln.Lifetime, ln.ParentHash = pub, wire.SourceUpdate, wire.Lifetime{}, nil
	ln.Credential = wire.BasicCredential([]byte("eve"))
	if err := ln.Sign(s, b.sigPriv, b.GroupID(), b.me); err != nil {
		t.Fatal(err)
	}
	m, err := b.propose(&wire.Update{LeafNode: ln}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Process(roundTrip(t, m)); !errors.Is(err, ErrCredential) {
		t.Fatalf("update to another identity: %v", err)
	}
}

// TestUpdateFreshKey: an Update must bring a new encryption key.
func TestUpdateFreshKey(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	alice, _, _ := newMember(t, s, "alice")
	a, _ := Create(Config{}, s, []byte("g"), alice, nil)
	_, bkp, bpriv := newMember(t, s, "bob")
	res := commitAndDeliver(t, []*Group{a}, 0, CommitOptions{Add: []*wire.KeyPackage{bkp}, RatchetTreeInWelcome: true})
	b := joinFrom(t, res.Welcome, bkp, bpriv, JoinOptions{})
	ln := *b.tree.Leaf(b.me)
	ln.Source, ln.Lifetime, ln.ParentHash = wire.SourceUpdate, wire.Lifetime{}, nil
	if err := ln.Sign(s, b.sigPriv, b.GroupID(), b.me); err != nil {
		t.Fatal(err)
	}
	m, err := b.propose(&wire.Update{LeafNode: ln}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Process(roundTrip(t, m)); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("update keeping the encryption key: %v", err)
	}
	// A proper update still goes through.
	m, err = b.ProposeUpdate(false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Process(roundTrip(t, m)); err != nil {
		t.Fatal(err)
	}
	commitAndDeliver(t, []*Group{a, b}, 0, CommitOptions{})
}
