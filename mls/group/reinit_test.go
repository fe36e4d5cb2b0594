package group

import (
	"errors"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// threeMembers makes a group of alice, bob and carol in suite s.
func threeMembers(t *testing.T, s *ciphersuite.Suite) (ids []*Identity, members []*Group) {
	t.Helper()
	alice, _, _ := newMember(t, s, "alice")
	a, err := Create(Config{}, s, []byte("old"), alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	bob, bkp, bpriv := newMember(t, s, "bob")
	carol, ckp, cpriv := newMember(t, s, "carol")
	res := commitAndDeliver(t, []*Group{a}, 0, CommitOptions{Add: []*wire.KeyPackage{bkp, ckp}, RatchetTreeInWelcome: true})
	b := joinFrom(t, res.Welcome, bkp, bpriv, JoinOptions{})
	c := joinFrom(t, res.Welcome, ckp, cpriv, JoinOptions{})
	return []*Identity{alice, bob, carol}, []*Group{a, b, c}
}

func TestReInitByReferenceAndSuccessor(t *testing.T) {
	s1, _ := ciphersuite.Lookup(1)
	s3, _ := ciphersuite.Lookup(3)
	ids, members := threeMembers(t, s1)
	a, b, c := members[0], members[1], members[2]

	// Bob proposes the reinit; Alice may not commit it with anything else.
	ri := &wire.ReInit{GroupID: []byte("new"), Version: wire.MLS10, CipherSuite: 3}
	prop, err := b.ProposeReInit(ri, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []*Group{a, c} {
		if _, err := g.Process(roundTrip(t, prop)); err != nil {
			t.Fatal(err)
		}
	}
	_, dkp, _ := newMember(t, s1, "dave")
	if _, err := a.Commit(CommitOptions{Add: []*wire.KeyPackage{dkp}}); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("reinit by reference with an add: %v", err)
	}
	res := commitAndDeliver(t, members, 0, CommitOptions{})
	if n := len(res.Commit.PublicMessage.Content.Commit.Proposals); n != 1 {
		t.Fatalf("reinit commit has %d proposals", n)
	}

	// The old group is closed to everything.
	for _, g := range members {
		if g.ReInit() == nil {
			t.Fatal("group not marked as reinitialised")
		}
		if _, err := g.Commit(CommitOptions{}); !errors.Is(err, ErrGroupClosed) {
			t.Fatalf("commit after reinit: %v", err)
		}
		if _, err := g.ProposeRemove(1, false); !errors.Is(err, ErrGroupClosed) {
			t.Fatalf("proposal after reinit: %v", err)
		}
		if _, err := g.Process(roundTrip(t, res.Commit)); !errors.Is(err, ErrGroupClosed) {
			t.Fatalf("message after reinit: %v", err)
		}
	}

	// Alice starts the new group in suite 3 with new identities.
	var kps []*wire.KeyPackage
	var privs []*KeyPackagePrivate
	var newIDs []*Identity
	for _, id := range ids {
		nid, err := NewIdentity(s3, id.Credential.Identity)
		if err != nil {
			t.Fatal(err)
		}
		newIDs = append(newIDs, nid)
		kp, priv, err := NewKeyPackage(s3, nid)
		if err != nil {
			t.Fatal(err)
		}
		kps, privs = append(kps, kp), append(privs, priv)
	}
	if _, _, err := a.Reinitialize(Config{}, nil, kps[1:]); err == nil {
		t.Fatal("reinit to another suite with the old identity")
	}
	// A new group that is not the one the ReInit named is refused.
	psk, _ := a.ReInitPSK()
	_, bad, err := a.successor(Config{}, s3, newIDs[0], []byte("other"), nil, kps[1:2], psk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Join(Config{Resumption: b}, bad.Welcome, kps[1], privs[1], JoinOptions{}); !errors.Is(err, ErrInvalidWelcome) {
		t.Fatalf("joining a reinit group with other parameters: %v", err)
	}

	a2, res, err := a.Reinitialize(Config{}, newIDs[0], kps[1:])
	if err != nil {
		t.Fatal(err)
	}
	if err := a2.MergePendingCommit(); err != nil {
		t.Fatal(err)
	}
	if a2.Epoch() != 1 || string(a2.GroupID()) != "new" || a2.Suite().ID() != 3 {
		t.Fatalf("new group %q in epoch %d, suite %d", a2.GroupID(), a2.Epoch(), a2.Suite().ID())
	}
	if _, err := Join(Config{}, res.Welcome, kps[1], privs[1], JoinOptions{}); !errors.Is(err, ErrUnknownPSK) {
		t.Fatalf("join without the old group: %v", err)
	}
	b2, err := Join(Config{Resumption: b}, res.Welcome, kps[1], privs[1], JoinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Join(Config{Resumption: c}, res.Welcome, kps[2], privs[2], JoinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkApplication(t, []*Group{a2, b2, c2}, 1, "in the reinitialised group")
	commitAndDeliver(t, []*Group{a2, b2, c2}, 2, CommitOptions{})
}

func TestBranch(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	ids, members := threeMembers(t, s)
	a, b, c := members[0], members[1], members[2]
	bkp, bpriv, err := NewKeyPackage(s, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	a2, res, err := a.Branch(Config{}, []byte("side"), nil, []*wire.KeyPackage{bkp})
	if err != nil {
		t.Fatal(err)
	}
	if err := a2.MergePendingCommit(); err != nil {
		t.Fatal(err)
	}
	b2, err := Join(Config{Resumption: b}, res.Welcome, bkp, bpriv, JoinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b2.Tree().NumLeaves() != 2 || b2.Epoch() != 1 {
		t.Fatalf("branch of %d leaves in epoch %d", b2.Tree().NumLeaves(), b2.Epoch())
	}
	checkApplication(t, []*Group{a2, b2}, 0, "in the branch")
	// The old group goes on.
	commitAndDeliver(t, members, 2, CommitOptions{})

	// A branch that brings in an outsider is refused by an old member.
	_, dkp, _ := newMember(t, s, "dave")
	ckp, cpriv, err := NewKeyPackage(s, ids[2])
	if err != nil {
		t.Fatal(err)
	}
	_, res, err = a.Branch(Config{}, []byte("side2"), nil, []*wire.KeyPackage{ckp, dkp})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Join(Config{Resumption: c}, res.Welcome, ckp, cpriv, JoinOptions{}); !errors.Is(err, ErrInvalidWelcome) {
		t.Fatalf("joining a branch with an outsider: %v", err)
	}
}

// TestResumptionUsage: reinit and branch PSKs only in a new group's first
// commit, and only one.
func TestResumptionUsage(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	_, members := threeMembers(t, s)
	a, b := members[0], members[1]
	// Alice's group holds b's PSKs, so a missing PSK is not what fails.
	a.cfg.Resumption = b
	for _, psk := range []func() (wire.PreSharedKeyID, error){b.BranchPSK, b.ReInitPSK} {
		id, _ := psk()
		if _, err := a.Commit(CommitOptions{PSKs: []wire.PreSharedKeyID{id}}); !errors.Is(err, ErrInvalidProposal) {
			t.Fatalf("commit in epoch %d with a PSK of usage %d: %v", a.Epoch(), id.Usage, err)
		}
	}
	bad, _ := b.BranchPSK()
	bad.Usage = 9
	if _, err := a.Commit(CommitOptions{PSKs: []wire.PreSharedKeyID{bad}}); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("commit with a PSK of usage 9: %v", err)
	}

	// In a new group's first commit: one is fine, two are not.
	n, err := Create(Config{Resumption: b}, s, []byte("n"), &Identity{Credential: wire.BasicCredential([]byte("alice")), SigPriv: a.sigPriv, SigPub: a.tree.Leaf(a.me).SignatureKey}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := b.BranchPSK()
	p2, _ := b.BranchPSK()
	if _, err := n.Commit(CommitOptions{PSKs: []wire.PreSharedKeyID{p1, p2}}); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("two branch PSKs: %v", err)
	}
	if _, err := n.Commit(CommitOptions{PSKs: []wire.PreSharedKeyID{p1}}); err != nil {
		t.Fatalf("one branch PSK in the first commit: %v", err)
	}
}

// TestPublicGroupClosedByReInit: the delivery service's view closes too.
func TestPublicGroupClosedByReInit(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	_, members := threeMembers(t, s)
	a := members[0]
	gi, err := a.GroupInfo(true)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := NewPublicGroup(Config{}, gi, nil)
	if err != nil {
		t.Fatal(err)
	}
	res := commitAndDeliver(t, members, 0, CommitOptions{ReInit: &wire.ReInit{GroupID: []byte("new"), Version: wire.MLS10, CipherSuite: 1}})
	if _, err := ds.Process(roundTrip(t, res.Commit)); err != nil {
		t.Fatal(err)
	}
	if ds.ReInit() == nil {
		t.Fatal("public group not closed by the reinit commit")
	}
	if _, err := ds.Process(roundTrip(t, res.Commit)); !errors.Is(err, ErrGroupClosed) {
		t.Fatalf("message after reinit: %v", err)
	}
}
