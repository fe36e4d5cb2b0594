package group

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// roundTrip encodes and decodes a message, as the network would.
func roundTrip(t testing.TB, m *wire.MLSMessage) *wire.MLSMessage {
	t.Helper()
	var out wire.MLSMessage
	if err := codec.Unmarshal(codec.Marshal(m), &out); err != nil {
		t.Fatalf("message does not decode: %v", err)
	}
	return &out
}

func newMember(t testing.TB, s *ciphersuite.Suite, name string) (*Identity, *wire.KeyPackage, *KeyPackagePrivate) {
	t.Helper()
	id, err := NewIdentity(s, []byte(name))
	if err != nil {
		t.Fatal(err)
	}
	kp, priv, err := NewKeyPackage(s, id)
	if err != nil {
		t.Fatal(err)
	}
	return id, kp, priv
}

// commitAndDeliver has members[from] commit opts, merges it, delivers it to
// every other member, and checks that all agree on the epoch authenticator.
func commitAndDeliver(t *testing.T, members []*Group, from int, opts CommitOptions) *CommitResult {
	t.Helper()
	res, err := members[from].Commit(opts)
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	if err := members[from].MergePendingCommit(); err != nil {
		t.Fatal(err)
	}
	msg := roundTrip(t, res.Commit)
	for i, g := range members {
		if i == from || g == nil {
			continue
		}
		p, err := g.Process(msg)
		if err != nil {
			t.Fatalf("member %d processing commit: %v", i, err)
		}
		if p.Kind != KindCommit {
			t.Fatalf("member %d: kind %d", i, p.Kind)
		}
		if p.Removed {
			members[i] = nil
			continue
		}
		if !bytes.Equal(g.EpochAuthenticator(), members[from].EpochAuthenticator()) {
			t.Fatalf("member %d disagrees on the epoch authenticator", i)
		}
	}
	return res
}

func joinFrom(t *testing.T, w *wire.Welcome, kp *wire.KeyPackage, priv *KeyPackagePrivate, opts JoinOptions) *Group {
	t.Helper()
	var m wire.MLSMessage
	if err := codec.Unmarshal(codec.Marshal(&wire.MLSMessage{Welcome: w}), &m); err != nil {
		t.Fatal(err)
	}
	g, err := Join(Config{}, m.Welcome, kp, priv, opts)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	return g
}

func checkApplication(t *testing.T, members []*Group, from int, text string) {
	t.Helper()
	m, err := members[from].Protect([]byte(text), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	msg := roundTrip(t, m)
	for i, g := range members {
		if i == from || g == nil {
			continue
		}
		p, err := g.Process(msg)
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
		if p.Kind != KindApplication || string(p.ApplicationData) != text || string(p.AuthenticatedData) != "ad" || p.Sender.LeafIndex != members[from].LeafIndex() {
			t.Fatalf("member %d got %+v", i, p)
		}
		// A replay does not decrypt twice.
		if _, err := g.Process(msg); err == nil {
			t.Fatalf("member %d accepted a replay", i)
		}
	}
}

func TestGroupLifecycle(t *testing.T) {
	for id := ciphersuite.ID(1); id <= 7; id++ {
		t.Run(fmt.Sprintf("suite%d", id), func(t *testing.T) { lifecycle(t, id) })
	}
}

func lifecycle(t *testing.T, id ciphersuite.ID) {
	s, _ := ciphersuite.Lookup(id)
	alice, _, _ := newMember(t, s, "alice")
	a, err := Create(Config{}, s, []byte("group-"+s.ID().String()), alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Alice adds Bob and Carol; the Welcome carries the tree.
	_, bkp, bpriv := newMember(t, s, "bob")
	_, ckp, cpriv := newMember(t, s, "carol")
	members := []*Group{a}
	res := commitAndDeliver(t, members, 0, CommitOptions{Add: []*wire.KeyPackage{bkp, ckp}, RatchetTreeInWelcome: true})
	b := joinFrom(t, res.Welcome, bkp, bpriv, JoinOptions{})
	c := joinFrom(t, res.Welcome, ckp, cpriv, JoinOptions{})
	members = append(members, b, c)
	for i, g := range members {
		if !bytes.Equal(g.EpochAuthenticator(), a.EpochAuthenticator()) || g.Epoch() != 1 {
			t.Fatalf("member %d: not in alice's epoch", i)
		}
	}
	checkApplication(t, members, 1, "hello from bob")

	// Bob adds Dave without a path; the tree goes out of band.
	_, dkp, dpriv := newMember(t, s, "dave")
	res = commitAndDeliver(t, members, 1, CommitOptions{Add: []*wire.KeyPackage{dkp}, NoPath: true})
	if res.Commit.PublicMessage.Content.Commit.Path != nil {
		t.Fatal("NoPath commit has a path")
	}
	d := joinFrom(t, res.Welcome, dkp, dpriv, JoinOptions{RatchetTree: b.Tree().RatchetTree()})
	members = append(members, d)
	checkApplication(t, members, 3, "dave here")

	// Carol proposes an update; Dave proposes removing Bob (privately);
	// Alice commits both by reference, as a PrivateMessage.
	up, err := c.ProposeUpdate(false)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := d.ProposeRemove(b.LeafIndex(), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, pm := range []*wire.MLSMessage{roundTrip(t, up), roundTrip(t, rm)} {
		for _, g := range members {
			if p, err := g.Process(pm); err != nil && !errors.Is(err, ErrNotMember) {
				// The proposer's own copy is ignored (already cached); a
				// PrivateMessage cannot be decrypted by its sender.
				if g == c && pm.PublicMessage != nil || g == d && pm.PrivateMessage != nil {
					continue
				}
				t.Fatalf("processing proposal: %v", err)
			} else if err == nil && p.Kind != KindProposal {
				t.Fatalf("kind %d", p.Kind)
			}
		}
	}
	commitAndDeliver(t, members, 0, CommitOptions{Private: true})
	if members[1] != nil {
		t.Fatal("bob was not told he was removed")
	}
	members = []*Group{a, c, d}
	checkApplication(t, members, 1, "carol after her update")

	// An empty commit refreshes Dave's path.
	commitAndDeliver(t, members, 2, CommitOptions{})
	checkApplication(t, members, 0, "alice in epoch 4")
	if a.Epoch() != 4 {
		t.Fatalf("epoch %d", a.Epoch())
	}
	if !bytes.Equal(a.Export("test", []byte("ctx"), 32), d.Export("test", []byte("ctx"), 32)) {
		t.Fatal("exporters differ")
	}
}

func TestCommitRejections(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	alice, _, _ := newMember(t, s, "alice")
	a, _ := Create(Config{}, s, []byte("g"), alice, nil)
	_, bkp, bpriv := newMember(t, s, "bob")
	res := commitAndDeliver(t, []*Group{a}, 0, CommitOptions{Add: []*wire.KeyPackage{bkp}, RatchetTreeInWelcome: true})
	b := joinFrom(t, res.Welcome, bkp, bpriv, JoinOptions{})

	// A commit for the wrong epoch, a tampered one, a second commit for an
	// epoch already left.
	res, err := a.Commit(CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Commit(CommitOptions{}); !errors.Is(err, ErrPendingCommit) {
		t.Fatalf("second pending commit: %v", err)
	}
	tampered := roundTrip(t, res.Commit)
	tampered.PublicMessage.Auth.ConfirmationTag[0] ^= 1
	if _, err := b.Process(tampered); err == nil {
		t.Fatal("tampered commit accepted")
	}
	before := b.EpochAuthenticator()
	good := roundTrip(t, res.Commit)
	if _, err := b.Process(good); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(before, b.EpochAuthenticator()) {
		t.Fatal("epoch did not change")
	}
	if _, err := b.Process(roundTrip(t, res.Commit)); !errors.Is(err, ErrWrongEpoch) {
		t.Fatalf("stale commit: %v", err)
	}
	// Alice never merged: her own commit comes back through Process.
	if _, err := a.Process(roundTrip(t, res.Commit)); !errors.Is(err, ErrPendingCommit) {
		t.Fatalf("own commit: %v", err)
	}
	if err := a.MergePendingCommit(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.EpochAuthenticator(), b.EpochAuthenticator()) {
		t.Fatal("members disagree")
	}
	// Removing a non-member and adding a member twice are invalid.
	if _, err := a.Commit(CommitOptions{Remove: []treemath.LeafIndex{7}}); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("remove of non-member: %v", err)
	}
	if _, err := a.Commit(CommitOptions{Add: []*wire.KeyPackage{bkp}}); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("add of a member's key package: %v", err)
	}
	// An application message in a PublicMessage is refused; one from the
	// wrong group too.
	m, _ := a.Protect([]byte("x"), nil)
	m.PrivateMessage.GroupID = []byte("other")
	if _, err := b.Process(m); !errors.Is(err, ErrWrongGroup) {
		t.Fatalf("other group: %v", err)
	}
}

func TestPSKCommit(t *testing.T) {
	s, _ := ciphersuite.Lookup(3)
	psks := pskMap{"shared": bytes.Repeat([]byte{5}, 32)}
	alice, _, _ := newMember(t, s, "alice")
	a, _ := Create(Config{PSKs: psks}, s, []byte("g"), alice, nil)
	_, bkp, bpriv := newMember(t, s, "bob")
	id, err := a.NewPSKID([]byte("shared"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Commit(CommitOptions{Add: []*wire.KeyPackage{bkp}, PSKs: []wire.PreSharedKeyID{id}, RatchetTreeInWelcome: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.MergePendingCommit(); err != nil {
		t.Fatal(err)
	}
	if _, err := Join(Config{}, res.Welcome, bkp, bpriv, JoinOptions{}); !errors.Is(err, ErrUnknownPSK) {
		t.Fatalf("join without the PSK: %v", err)
	}
	b, err := Join(Config{PSKs: psks}, res.Welcome, bkp, bpriv, JoinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.EpochAuthenticator(), b.EpochAuthenticator()) {
		t.Fatal("members disagree")
	}
	// A resumption PSK of the previous epoch.
	res2, err := b.Commit(CommitOptions{PSKs: []wire.PreSharedKeyID{{Type: wire.PSKResumption, Usage: wire.UsageApplication,
		GroupID: []byte("g"), Epoch: 1, Nonce: bytes.Repeat([]byte{1}, 32)}}})
	if err != nil {
		t.Fatal(err)
	}
	_ = b.MergePendingCommit()
	if _, err := a.Process(roundTrip(t, res2.Commit)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.EpochAuthenticator(), b.EpochAuthenticator()) {
		t.Fatal("members disagree after resumption PSK")
	}
}

func TestSaveLoad(t *testing.T) {
	ctx := t.Context()
	for _, id := range []ciphersuite.ID{1, 5} {
		s, _ := ciphersuite.Lookup(id)
		alice, _, _ := newMember(t, s, "alice")
		a, _ := Create(Config{}, s, []byte("g"), alice, nil)
		_, bkp, bpriv := newMember(t, s, "bob")
		res := commitAndDeliver(t, []*Group{a}, 0, CommitOptions{Add: []*wire.KeyPackage{bkp}, RatchetTreeInWelcome: true})
		b := joinFrom(t, res.Welcome, bkp, bpriv, JoinOptions{})

		// Bob receives a message out of order, proposes an update, then
		// restarts.
		m1, _ := a.Protect([]byte("one"), nil)
		m2, _ := a.Protect([]byte("two"), nil)
		if _, err := b.Process(roundTrip(t, m2)); err != nil {
			t.Fatal(err)
		}
		up, _ := b.ProposeUpdate(false)
		if _, err := a.Process(roundTrip(t, up)); err != nil {
			t.Fatal(err)
		}
		var st MemoryStore
		if _, err := Load(ctx, &st, []byte("g"), Config{}); !errors.Is(err, ErrNoState) {
			t.Fatalf("load of unknown group: %v", err)
		}
		if err := b.Save(ctx, &st); err != nil {
			t.Fatal(err)
		}
		b2, err := Load(ctx, &st, []byte("g"), Config{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b2.MarshalState(), b.MarshalState()) {
			t.Fatal("state does not re-encode identically")
		}
		if p, err := b2.Process(roundTrip(t, m1)); err != nil || string(p.ApplicationData) != "one" {
			t.Fatalf("skipped message after reload: %v", err)
		}
		if _, err := b2.Process(roundTrip(t, m2)); err == nil {
			t.Fatal("replay accepted after reload")
		}
		// Alice commits Bob's update; the reloaded Bob has its private key.
		res = commitAndDeliver(t, []*Group{a, b2}, 0, CommitOptions{})
		_ = res
		// A pending commit survives a save too.
		if _, err := b2.Commit(CommitOptions{}); err != nil {
			t.Fatal(err)
		}
		b3, err := UnmarshalState(b2.MarshalState(), Config{})
		if err != nil {
			t.Fatal(err)
		}
		pending, _ := b2.Commit(CommitOptions{}) // refused: already pending
		if pending != nil || !b3.HasPendingCommit() {
			t.Fatal("pending commit lost")
		}
		if err := b3.MergePendingCommit(); err != nil {
			t.Fatal(err)
		}
		if _, err := UnmarshalState(b3.MarshalState()[:40], Config{}); !errors.Is(err, ErrInvalidState) {
			t.Fatalf("truncated state: %v", err)
		}
	}
}

func FuzzUnmarshalState(f *testing.F) {
	s, _ := ciphersuite.Lookup(1)
	alice, _, _ := newMember(f, s, "alice")
	a, _ := Create(Config{}, s, []byte("g"), alice, nil)
	f.Add(a.MarshalState())
	f.Fuzz(func(t *testing.T, in []byte) {
		g, err := UnmarshalState(in, Config{})
		if err != nil {
			return
		}
		if !bytes.Equal(g.MarshalState(), in) {
			t.Fatalf("state re-encodes differently")
		}
	})
}

// FuzzProcess feeds arbitrary messages to a member of a two-member group:
// each must be refused with an error or processed, never panic.
func FuzzProcess(f *testing.F) {
	s, _ := ciphersuite.Lookup(1)
	alice, _, _ := newMember(f, s, "alice")
	a, _ := Create(Config{}, s, []byte("g"), alice, nil)
	_, bkp, bpriv := newMember(f, s, "bob")
	res, _ := a.Commit(CommitOptions{Add: []*wire.KeyPackage{bkp}, RatchetTreeInWelcome: true})
	_ = a.MergePendingCommit()
	b, err := Join(Config{}, res.Welcome, bkp, bpriv, JoinOptions{})
	if err != nil {
		f.Fatal(err)
	}
	saved := b.MarshalState()
	app, _ := a.Protect([]byte("hi"), nil)
	prop, _ := a.ProposeRemove(1, false)
	commit, _ := a.Commit(CommitOptions{})
	for _, m := range []*wire.MLSMessage{app, prop, commit.Commit, {Welcome: res.Welcome}} {
		f.Add(codec.Marshal(m))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var m wire.MLSMessage
		if err := codec.Unmarshal(in, &m); err != nil {
			return
		}
		g, err := UnmarshalState(saved, Config{})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = g.Process(&m)
	})
}

func TestExternalJoin(t *testing.T) {
	for _, id := range []ciphersuite.ID{1, 2, 4} {
		s, _ := ciphersuite.Lookup(id)
		alice, _, _ := newMember(t, s, "alice")
		a, _ := Create(Config{}, s, []byte("g"), alice, nil)
		_, bkp, bpriv := newMember(t, s, "bob")
		res := commitAndDeliver(t, []*Group{a}, 0, CommitOptions{Add: []*wire.KeyPackage{bkp}})
		b := joinFrom(t, res.Welcome, bkp, bpriv, JoinOptions{RatchetTree: a.Tree().RatchetTree()})

		// Carol joins from a GroupInfo with the tree in it.
		gi, err := a.GroupInfo(true)
		if err != nil {
			t.Fatal(err)
		}
		var gim wire.MLSMessage
		if err := codec.Unmarshal(codec.Marshal(&wire.MLSMessage{GroupInfo: gi}), &gim); err != nil {
			t.Fatal(err)
		}
		carol, _, _ := newMember(t, s, "carol")
		c, commit, err := JoinExternal(Config{}, gim.GroupInfo, carol, ExternalJoinOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range []*Group{a, b} {
			if _, err := g.Process(roundTrip(t, commit)); err != nil {
				t.Fatalf("processing external commit: %v", err)
			}
			if !bytes.Equal(g.EpochAuthenticator(), c.EpochAuthenticator()) {
				t.Fatal("members disagree after external commit")
			}
		}
		members := []*Group{a, b, c}
		checkApplication(t, members, 2, "carol joined")
		commitAndDeliver(t, members, 2, CommitOptions{})

		// Bob resyncs: joins again externally, removing his old leaf.
		gi, _ = c.GroupInfo(false)
		old := b.LeafIndex()
		bob2, _, _ := newMember(t, s, "bob")
		b2, commit, err := JoinExternal(Config{}, gi, bob2, ExternalJoinOptions{RatchetTree: c.Tree().RatchetTree(), Resync: &old})
		if err != nil {
			t.Fatal(err)
		}
		members = []*Group{a, b, c}
		for i, g := range members {
			p, err := g.Process(roundTrip(t, commit))
			if err != nil {
				t.Fatalf("member %d processing resync: %v", i, err)
			}
			if g == b {
				if !p.Removed {
					t.Fatal("old bob not removed")
				}
				continue
			}
			if !bytes.Equal(g.EpochAuthenticator(), b2.EpochAuthenticator()) {
				t.Fatal("members disagree after resync")
			}
		}
		checkApplication(t, []*Group{a, b2, c}, 1, "bob is back")
	}
}

func TestPublicGroup(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	alice, _, _ := newMember(t, s, "alice")
	a, _ := Create(Config{}, s, []byte("g"), alice, nil)
	gi, _ := a.GroupInfo(true)
	ds, err := NewPublicGroup(Config{}, gi, nil)
	if err != nil {
		t.Fatal(err)
	}
	// deliver sends a commit through the DS first, as a hub would.
	deliver := func(from *Group, res *CommitResult, to ...*Group) {
		t.Helper()
		if _, err := ds.Process(roundTrip(t, res.Commit)); err != nil {
			t.Fatalf("DS refused commit: %v", err)
		}
		if err := from.MergePendingCommit(); err != nil {
			t.Fatal(err)
		}
		for _, g := range to {
			if _, err := g.Process(roundTrip(t, res.Commit)); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(codec.Marshal(ds.Context()), codec.Marshal(from.Context())) {
			t.Fatal("DS context differs from the members'")
		}
	}
	_, bkp, bpriv := newMember(t, s, "bob")
	res, _ := a.Commit(CommitOptions{Add: []*wire.KeyPackage{bkp}, RatchetTreeInWelcome: true})
	deliver(a, res)
	b := joinFrom(t, res.Welcome, bkp, bpriv, JoinOptions{})

	// Bob proposes an update; both then commit in epoch 1: the DS takes
	// Alice's and refuses Bob's.
	up, _ := b.ProposeUpdate(false)
	if _, err := ds.Process(roundTrip(t, up)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Process(roundTrip(t, up)); err != nil {
		t.Fatal(err)
	}
	ra, _ := a.Commit(CommitOptions{})
	rb, _ := b.Commit(CommitOptions{})
	deliver(a, ra)
	if _, err := ds.Process(roundTrip(t, rb.Commit)); !errors.Is(err, ErrWrongEpoch) {
		t.Fatalf("second commit for epoch 1: %v", err)
	}
	b.DiscardPendingCommit()
	if _, err := b.Process(roundTrip(t, ra.Commit)); err != nil {
		t.Fatal(err)
	}
	// A forged signature and a private commit are refused.
	rc, _ := b.Commit(CommitOptions{})
	forged := roundTrip(t, rc.Commit)
	forged.PublicMessage.Auth.Signature[3] ^= 1
	if _, err := ds.Process(forged); err == nil {
		t.Fatal("forged commit accepted")
	}
	deliver(b, rc, a)
	rp, _ := a.Commit(CommitOptions{Private: true})
	if _, err := ds.Process(roundTrip(t, rp.Commit)); !errors.Is(err, ErrWireFormat) {
		t.Fatalf("private commit: %v", err)
	}
	// An external join through the DS.
	gi, _ = a.GroupInfo(false)
	a.DiscardPendingCommit()
	carol, _, _ := newMember(t, s, "carol")
	_, ext, err := JoinExternal(Config{}, gi, carol, ExternalJoinOptions{RatchetTree: ds.Tree().RatchetTree()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Process(roundTrip(t, ext)); err != nil {
		t.Fatalf("DS refused external commit: %v", err)
	}
	if ds.Epoch() != 4 {
		t.Fatalf("DS at epoch %d", ds.Epoch())
	}
}

func TestExternalSenders(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	alice, _, _ := newMember(t, s, "alice")
	a, _ := Create(Config{}, s, []byte("g"), alice, nil)
	_, bkp, bpriv := newMember(t, s, "bob")
	res := commitAndDeliver(t, []*Group{a}, 0, CommitOptions{Add: []*wire.KeyPackage{bkp}, RatchetTreeInWelcome: true})
	b := joinFrom(t, res.Welcome, bkp, bpriv, JoinOptions{})
	members := []*Group{a, b}

	// Alice installs a delivery service as external sender.
	dsPriv, dsPub, _ := s.GenerateSignatureKeyPair()
	exts := wire.Extensions{wire.NewExtension(wire.ExtensionExternalSenders,
		&wire.ExternalSenders{{SignatureKey: dsPub, Credential: wire.BasicCredential([]byte("ds"))}})}
	commitAndDeliver(t, members, 0, CommitOptions{Extensions: &exts})
	if _, ok := b.Context().Extensions.Find(wire.ExtensionExternalSenders); !ok {
		t.Fatal("bob did not take the new extensions")
	}

	// Carol asks to join; the DS proposes removing Bob; Alice commits both.
	_, ckp, cpriv := newMember(t, s, "carol")
	cprop, err := JoinProposal(s, a.GroupID(), a.Epoch(), ckp, cpriv.SigPriv)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := ExternalProposal(s, a.GroupID(), a.Epoch(), 0, dsPriv, &wire.Remove{Removed: b.LeafIndex()})
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := ExternalProposal(s, a.GroupID(), a.Epoch(), 0, cpriv.SigPriv, &wire.Remove{Removed: a.LeafIndex()})
	for _, g := range members {
		for _, m := range []*wire.MLSMessage{cprop, rm} {
			if p, err := g.Process(roundTrip(t, m)); err != nil || p.Kind != KindProposal {
				t.Fatalf("processing outside proposal: %v", err)
			}
		}
		if _, err := g.Process(roundTrip(t, forged)); err == nil {
			t.Fatal("external proposal with the wrong key accepted")
		}
	}
	res = commitAndDeliver(t, members, 0, CommitOptions{})
	if members[1] != nil {
		t.Fatal("bob not removed")
	}
	c := joinFrom(t, res.Welcome, ckp, cpriv, JoinOptions{RatchetTree: a.Tree().RatchetTree()})
	checkApplication(t, []*Group{a, c}, 1, "carol, added on her own proposal")
}

func TestReInit(t *testing.T) {
	s1, _ := ciphersuite.Lookup(1)
	s3, _ := ciphersuite.Lookup(3)
	alice, _, _ := newMember(t, s1, "alice")
	a, _ := Create(Config{}, s1, []byte("old"), alice, nil)
	bob, bkp, bpriv := newMember(t, s1, "bob")
	res := commitAndDeliver(t, []*Group{a}, 0, CommitOptions{Add: []*wire.KeyPackage{bkp}, RatchetTreeInWelcome: true})
	b := joinFrom(t, res.Welcome, bkp, bpriv, JoinOptions{})

	ri := &wire.ReInit{GroupID: []byte("new"), Version: wire.MLS10, CipherSuite: 3}
	if _, err := a.Commit(CommitOptions{ReInit: ri, Remove: []treemath.LeafIndex{1}}); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("reinit with another proposal: %v", err)
	}
	commitAndDeliver(t, []*Group{a, b}, 0, CommitOptions{ReInit: ri})
	for _, g := range []*Group{a, b} {
		if g.ReInit() == nil {
			t.Fatal("group not closed by reinit")
		}
		if _, err := g.Protect([]byte("x"), nil); !errors.Is(err, ErrGroupClosed) {
			t.Fatalf("protect after reinit: %v", err)
		}
	}
	// The new group, in suite 3, starts from the old one's last epoch.
	a2, err := Create(Config{Resumption: a}, s3, ri.GroupID, alice, ri.Extensions)
	if err != nil {
		t.Fatal(err)
	}
	bkp2, bpriv2, err := NewKeyPackage(s3, bob)
	if err != nil {
		t.Fatal(err)
	}
	psk, _ := a.ReInitPSK()
	res, err = a2.Commit(CommitOptions{Add: []*wire.KeyPackage{bkp2}, PSKs: []wire.PreSharedKeyID{psk}, RatchetTreeInWelcome: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = a2.MergePendingCommit()
	if _, err := Join(Config{}, res.Welcome, bkp2, bpriv2, JoinOptions{}); !errors.Is(err, ErrUnknownPSK) {
		t.Fatalf("join without the old group: %v", err)
	}
	b2, err := Join(Config{Resumption: b}, res.Welcome, bkp2, bpriv2, JoinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkApplication(t, []*Group{a2, b2}, 1, "in the new group")
	// The closed state survives a save.
	a3, err := UnmarshalState(a.MarshalState(), Config{})
	if err != nil || a3.ReInit() == nil {
		t.Fatalf("reinit lost on reload: %v", err)
	}
}

func TestCommitSkipsConflictingProposals(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	alice, _, _ := newMember(t, s, "alice")
	a, _ := Create(Config{}, s, []byte("g"), alice, nil)
	var kps []*wire.KeyPackage
	var privs []*KeyPackagePrivate
	for _, n := range []string{"bob", "carol", "dave"} {
		_, kp, priv := newMember(t, s, n)
		kps, privs = append(kps, kp), append(privs, priv)
	}
	res := commitAndDeliver(t, []*Group{a}, 0, CommitOptions{Add: kps, RatchetTreeInWelcome: true})
	b := joinFrom(t, res.Welcome, kps[0], privs[0], JoinOptions{})
	c := joinFrom(t, res.Welcome, kps[1], privs[1], JoinOptions{})
	d := joinFrom(t, res.Welcome, kps[2], privs[2], JoinOptions{})
	members := []*Group{a, b, c, d}
	// Bob and Carol both propose removing Dave; Alice commits one of them.
	for _, from := range []*Group{b, c} {
		m, err := from.ProposeRemove(d.LeafIndex(), false)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range members {
			if g != from {
				if _, err := g.Process(roundTrip(t, m)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	res = commitAndDeliver(t, members, 0, CommitOptions{})
	if n := len(res.Commit.PublicMessage.Content.Commit.Proposals); n != 1 {
		t.Fatalf("commit has %d proposals, want 1", n)
	}
	if members[3] != nil {
		t.Fatal("dave not removed")
	}
}

func TestLateApplicationMessage(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	cfg := Config{PastEpochs: 1}
	alice, _, _ := newMember(t, s, "alice")
	a, _ := Create(cfg, s, []byte("g"), alice, nil)
	_, bkp, bpriv := newMember(t, s, "bob")
	res, _ := a.Commit(CommitOptions{Add: []*wire.KeyPackage{bkp}, RatchetTreeInWelcome: true})
	_ = a.MergePendingCommit()
	b, err := Join(cfg, res.Welcome, bkp, bpriv, JoinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Bob sends in epoch 1; Alice commits twice before it arrives.
	late, _ := b.Protect([]byte("late"), nil)
	later, _ := b.Protect([]byte("later"), nil)
	for range 2 {
		commitAndDeliver(t, []*Group{a, b}, 0, CommitOptions{})
		if a.Epoch() == 2 {
			if p, err := a.Process(roundTrip(t, late)); err != nil || string(p.ApplicationData) != "late" {
				t.Fatalf("message of the previous epoch: %v", err)
			}
		}
	}
	// Two epochs back is beyond PastEpochs = 1, even after a reload.
	a2, err := UnmarshalState(a.MarshalState(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a2.Process(roundTrip(t, later)); !errors.Is(err, ErrWrongEpoch) {
		t.Fatalf("message of two epochs back: %v", err)
	}
	if !bytes.Equal(a2.MarshalState(), a.MarshalState()) {
		t.Fatal("state with past epochs does not re-encode")
	}
}

// TestExternalJoinBareExternalPub is a GroupInfo whose external_pub holds
// the bare HPKE key rather than the ExternalPub struct (ts-mls 1.6.4 writes
// it so): the join is refused, and the error says the extension is
// malformed rather than missing.
func TestExternalJoinBareExternalPub(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	alice, _, _ := newMember(t, s, "alice")
	a, _ := Create(Config{}, s, []byte("g"), alice, nil)
	gi, err := a.GroupInfo(true)
	if err != nil {
		t.Fatal(err)
	}
	var ep wire.ExternalPub
	for i := range gi.Extensions {
		if gi.Extensions[i].Type == wire.ExtensionExternalPub {
			if err := codec.Unmarshal(gi.Extensions[i].Data, &ep); err != nil {
				t.Fatal(err)
			}
			gi.Extensions[i].Data = ep.PublicKey
		}
	}
	if ep.PublicKey == nil {
		t.Fatal("the GroupInfo has no external_pub")
	}
	if err := gi.Sign(s, alice.SigPriv); err != nil {
		t.Fatal(err)
	}
	carol, _, _ := newMember(t, s, "carol")
	_, _, err = JoinExternal(Config{}, gi, carol, ExternalJoinOptions{})
	if err == nil {
		t.Fatal("joined from a GroupInfo whose external_pub is the bare key")
	}
	// One key in about 256 starts with bytes that happen to read as a
	// shorter ExternalPub; HPKE then refuses that key instead.
	var again wire.ExternalPub
	if codec.Unmarshal(ep.PublicKey, &again) != nil {
		if !errors.Is(err, ErrInvalidWelcome) || strings.Contains(err.Error(), "without external_pub") {
			t.Fatalf("error %q, want ErrInvalidWelcome saying external_pub is malformed", err)
		}
	}
}

func TestCachedProposals(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	alice, _ := NewIdentity(s, []byte("alice"))
	g, err := Create(Config{}, s, []byte("cached"), alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(g.CachedProposals()); n != 0 {
		t.Fatalf("new group has %d cached proposals", n)
	}
	bob, _ := NewIdentity(s, []byte("bob"))
	kp, _, err := NewKeyPackage(s, bob)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.ProposeAdd(kp, false); err != nil {
		t.Fatal(err)
	}
	got := g.CachedProposals()
	if len(got) != 1 || got[0].Proposal.ProposalType() != wire.ProposalAdd || got[0].Sender.LeafIndex != 0 || len(got[0].Ref) != s.HashSize() {
		t.Fatalf("cached proposals after ProposeAdd: %+v", got)
	}
	if _, err := g.Commit(CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := g.MergePendingCommit(); err != nil {
		t.Fatal(err)
	}
	if n := len(g.CachedProposals()); n != 0 {
		t.Fatalf("%d cached proposals after the commit", n)
	}
}
