package group

import (
	"errors"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// keyPackageLiving makes a key package for a new client whose leaf lives
// from notBefore to notAfter.
func keyPackageLiving(t *testing.T, s *ciphersuite.Suite, name string, notBefore, notAfter time.Time) (*wire.KeyPackage, *KeyPackagePrivate) {
	t.Helper()
	id, kp, priv := newMember(t, s, name)
	kp.LeafNode.Lifetime = wire.Lifetime{NotBefore: uint64(notBefore.Unix()), NotAfter: uint64(notAfter.Unix())}
	if err := kp.LeafNode.Sign(s, id.SigPriv, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := kp.Sign(s, id.SigPriv); err != nil {
		t.Fatal(err)
	}
	return kp, priv
}

func clock(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestKeyPackageLifetimeOnAdd(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	t0 := time.Now().Truncate(time.Second)
	alice, _, _ := newMember(t, s, "alice")
	a, err := Create(Config{Now: clock(t0)}, s, []byte("g"), alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, bkp, bpriv := newMember(t, s, "bob")
	res := commitAndDeliver(t, []*Group{a}, 0, CommitOptions{Add: []*wire.KeyPackage{bkp}, RatchetTreeInWelcome: true})
	b := joinFrom(t, res.Welcome, bkp, bpriv, JoinOptions{})

	// Not yet valid, and no longer valid: this member may not add either,
	// whatever its tolerance for others' commits.
	a.cfg.LifetimeTolerance = time.Hour
	early, _ := keyPackageLiving(t, s, "early", t0.Add(time.Minute), t0.Add(time.Hour))
	late, _ := keyPackageLiving(t, s, "late", t0.Add(-time.Hour), t0.Add(-time.Minute))
	for _, kp := range []*wire.KeyPackage{early, late} {
		if _, err := a.Commit(CommitOptions{Add: []*wire.KeyPackage{kp}}); !errors.Is(err, ErrLifetime) {
			t.Fatalf("adding a key package outside its lifetime: %v", err)
		}
	}
	a.cfg.LifetimeTolerance = 0

	// Carol's package ends at t0+1h. Alice adds her at t0; Bob's clock
	// says t0+1h+30s: refused without tolerance, accepted with a minute.
	ckp, cpriv := keyPackageLiving(t, s, "carol", t0.Add(-time.Hour), t0.Add(time.Hour))
	res, err = a.Commit(CommitOptions{Add: []*wire.KeyPackage{ckp}, RatchetTreeInWelcome: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.MergePendingCommit(); err != nil {
		t.Fatal(err)
	}
	b.cfg.Now = clock(t0.Add(time.Hour + 30*time.Second))
	if _, err := b.Process(roundTrip(t, res.Commit)); !errors.Is(err, ErrLifetime) {
		t.Fatalf("commit adding an expired key package: %v", err)
	}
	if b.Epoch() != 1 {
		t.Fatalf("refused commit moved bob to epoch %d", b.Epoch())
	}
	b.cfg.LifetimeTolerance = time.Minute
	if _, err := b.Process(roundTrip(t, res.Commit)); err != nil {
		t.Fatalf("commit within the tolerance: %v", err)
	}

	// Carol's own leaf in the tree is her key package's, expired at her
	// clock's t0+2h: accepted by default, refused when checking tree
	// lifetimes.
	late2 := clock(t0.Add(2 * time.Hour))
	if _, err := Join(Config{Now: late2, CheckTreeLifetimes: true}, res.Welcome, ckp, cpriv, JoinOptions{}); !errors.Is(err, ErrLifetime) {
		t.Fatalf("joining a tree with an expired key package leaf: %v", err)
	}
	if _, err := Join(Config{Now: late2}, res.Welcome, ckp, cpriv, JoinOptions{}); err != nil {
		t.Fatalf("joining, not checking tree lifetimes: %v", err)
	}
	if _, err := Join(Config{Now: clock(t0), CheckTreeLifetimes: true}, res.Welcome, ckp, cpriv, JoinOptions{}); err != nil {
		t.Fatalf("joining in time: %v", err)
	}
}

// TestJoinChecksLeafCapabilities has a committer that skipped the checks
// on a leaf (forced into its tree): the joiner must refuse the tree.
func TestJoinChecksLeafCapabilities(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	const ext = wire.ExtensionType(0xff0a)
	withExt := func(id *Identity) {
		c := id.capabilities(s)
		c.Extensions = []wire.ExtensionType{ext}
		id.Capabilities = &c
	}
	alice, _, _ := newMember(t, s, "alice")
	withExt(alice)
	rc := wire.Extensions{wire.NewExtension(wire.ExtensionRequiredCapabilities,
		&wire.RequiredCapabilities{Extensions: []wire.ExtensionType{ext}})}
	a, err := Create(Config{}, s, []byte("g"), alice, rc)
	if err != nil {
		t.Fatal(err)
	}
	_, dkp, _ := newMember(t, s, "dave")
	if _, err := a.Commit(CommitOptions{Add: []*wire.KeyPackage{dkp}}); !errors.Is(err, ErrCapabilities) {
		t.Fatalf("adding a leaf without the required extension: %v", err)
	}
	a.tree.Add(&dkp.LeafNode)

	carol, _, _ := newMember(t, s, "carol")
	withExt(carol)
	ckp, cpriv, err := NewKeyPackage(s, carol)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Commit(CommitOptions{Add: []*wire.KeyPackage{ckp}, RatchetTreeInWelcome: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Join(Config{}, res.Welcome, ckp, cpriv, JoinOptions{}); !errors.Is(err, ErrCapabilities) {
		t.Fatalf("joining a tree with a leaf lacking required capabilities: %v", err)
	}
}

// TestAddChecksContextExtensions: a new member must support the group's
// non-default context extensions.
func TestAddChecksContextExtensions(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	const ext = wire.ExtensionType(0xff0b)
	withExt := func(id *Identity) {
		c := id.capabilities(s)
		c.Extensions = []wire.ExtensionType{ext}
		id.Capabilities = &c
	}
	alice, _, _ := newMember(t, s, "alice")
	withExt(alice)
	exts := wire.Extensions{{Type: ext, Data: []byte("x")}}
	a, err := Create(Config{}, s, []byte("g"), alice, exts)
	if err != nil {
		t.Fatal(err)
	}
	_, bkp, _ := newMember(t, s, "bob")
	if _, err := a.Commit(CommitOptions{Add: []*wire.KeyPackage{bkp}}); !errors.Is(err, ErrCapabilities) {
		t.Fatalf("adding a member without the group's extension: %v", err)
	}
	carol, _, _ := newMember(t, s, "carol")
	withExt(carol)
	ckp, _, err := NewKeyPackage(s, carol)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Commit(CommitOptions{Add: []*wire.KeyPackage{ckp}}); err != nil {
		t.Fatalf("adding a member with the group's extension: %v", err)
	}
}
