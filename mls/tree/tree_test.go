package tree

import (
	"bytes"
	"errors"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/internal/vectors"
	tm "github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// validationTree returns a suite-1 tree from tree-validation.json with at
// least one non-blank parent node, and its group ID.
func validationTree(t *testing.T) (*Tree, []byte, []byte) {
	t.Helper()
	var cases []struct {
		CipherSuite uint16      `json:"cipher_suite"`
		Tree        vectors.Hex `json:"tree"`
		GroupID     vectors.Hex `json:"group_id"`
	}
	if err := vectors.Load("tree-validation.json", &cases); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if c.CipherSuite != 1 {
			continue
		}
		tr, err := Decode(suite(t, 1), c.Tree)
		if err != nil {
			t.Fatal(err)
		}
		if tr.NumLeaves() >= 8 && tr.ParentNode(tr.root()) != nil {
			return tr, c.GroupID, c.Tree
		}
	}
	t.Fatal("no suitable tree in tree-validation.json")
	return nil, nil, nil
}

func TestVerifyRejectsTampering(t *testing.T) {
	tr, groupID, _ := validationTree(t)
	if err := tr.Verify(groupID); err != nil {
		t.Fatalf("untouched tree: %v", err)
	}
	if err := tr.Verify([]byte("another group")); !errors.Is(err, ErrInvalidLeaf) {
		t.Errorf("wrong group ID: got %v, want ErrInvalidLeaf", err)
	}

	// A parent node with a different key breaks the parent-hash chain.
	c := tr.Clone()
	r := c.root()
	p := *c.ParentNode(r)
	p.EncryptionKey = append([]byte(nil), p.EncryptionKey...)
	p.EncryptionKey[0] ^= 1
	c.setNode(r, nil, &p)
	if err := c.Verify(groupID); !errors.Is(err, ErrParentHash) {
		t.Errorf("changed parent key: got %v, want ErrParentHash", err)
	}

	// A changed leaf no longer matches its signature.
	c = tr.Clone()
	var l tm.LeafIndex
	c.Members(func(i tm.LeafIndex, _ *wire.LeafNode) bool { l = i; return false })
	ln := *c.Leaf(l)
	ln.Credential = wire.BasicCredential([]byte("mallory"))
	c.setNode(l.Node(), &ln, nil)
	if err := c.Verify(groupID); !errors.Is(err, ErrInvalidLeaf) {
		t.Errorf("changed leaf: got %v, want ErrInvalidLeaf", err)
	}

	// Two members with one encryption key.
	c = tr.Clone()
	var first, second tm.LeafIndex
	n := 0
	c.Members(func(i tm.LeafIndex, _ *wire.LeafNode) bool {
		if n == 0 {
			first = i
		} else {
			second = i
		}
		n++
		return n < 2
	})
	dup := *c.Leaf(second)
	dup.EncryptionKey = c.Leaf(first).EncryptionKey
	c.setNode(second.Node(), &dup, nil)
	if err := c.Verify(groupID); !errors.Is(err, ErrDuplicateKey) {
		t.Errorf("duplicate key: got %v, want ErrDuplicateKey", err)
	}
}

func TestFromRatchetTreeRejectsBadShapes(t *testing.T) {
	tr, _, _ := validationTree(t)
	rt := tr.RatchetTree()
	leaf := rt[0]
	var parent *wire.Node
	for _, n := range rt {
		if n != nil && n.Parent != nil {
			parent = n
			break
		}
	}
	bad := map[string]wire.RatchetTree{
		"empty":          {},
		"trailing blank": {leaf, nil, leaf, nil},
		"leaf at parent": {leaf, leaf, leaf},
		"parent at leaf": {parent, nil, leaf},
		"unmerged beyond tree": {leaf, {Parent: &wire.ParentNode{EncryptionKey: []byte{1},
			UnmergedLeaves: []tm.LeafIndex{5}}}, leaf},
	}
	for name, rt := range bad {
		if _, err := FromRatchetTree(tr.suite, rt); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	if _, err := Decode(tr.suite, []byte{0x05, 0x01}); err == nil {
		t.Error("truncated encoding decoded")
	}
}

// member makes a key-package leaf node and its private keys.
func member(t *testing.T, s *ciphersuite.Suite, name string) (ln *wire.LeafNode, sigPriv, encPriv []byte) {
	t.Helper()
	sigPriv, sigPub, err := s.GenerateSignatureKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	encPriv, encPub, err := s.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	ln = &wire.LeafNode{EncryptionKey: encPub, SignatureKey: sigPub, Credential: wire.BasicCredential([]byte(name)),
		Source: wire.SourceKeyPackage, Lifetime: wire.Lifetime{NotAfter: 1 << 40}}
	if err := ln.Sign(s, sigPriv, nil, 0); err != nil {
		t.Fatal(err)
	}
	return ln, sigPriv, encPriv
}

// TestCommitWithAddedMember follows a commit that adds a member and has a
// path: the new member is left out of the encryption, the others process
// it, and a tampered path is refused without changing the tree.
func TestCommitWithAddedMember(t *testing.T) {
	s := suite(t, 1)
	groupID := []byte("group")
	var sig, enc [][]byte
	var tr *Tree
	for i := range 3 {
		ln, sp, ep := member(t, s, string(rune('a'+i)))
		if tr == nil {
			tr = New(s, ln)
		} else {
			tr.Add(ln)
		}
		sig, enc = append(sig, sp), append(enc, ep)
	}
	keys := []*PrivateKeys{NewPrivateKeys(0, enc[0]), NewPrivateKeys(1, enc[1]), NewPrivateKeys(2, enc[2])}

	// Member 0 commits an Add of d with a path.
	before := tr.Clone()
	dLeaf, _, _ := member(t, s, "d")
	committer := tr.Clone()
	added := committer.Add(dLeaf)
	if added != 3 {
		t.Fatalf("added at %d, want 3", added)
	}
	p, err := committer.GeneratePath(0, committer.Leaf(0), sig[0], groupID)
	if err != nil {
		t.Fatal(err)
	}
	ctx := []byte("provisional group context")
	exclude := []tm.LeafIndex{added}
	up, err := p.Encrypt(ctx, exclude)
	if err != nil {
		t.Fatal(err)
	}
	// The root's copath child covers leaves 2 and 3; only 2 gets a copy.
	if got := len(up.Nodes[len(up.Nodes)-1].EncryptedPathSecret); got != 1 {
		t.Errorf("root path secret encrypted %d times, want 1 (new member excluded)", got)
	}
	if x, secret := p.SecretFor(added); secret == nil || x != committer.root() {
		t.Errorf("SecretFor(new member) = node %d, %v; want the root", x, secret != nil)
	}
	if err := committer.Verify(groupID); err != nil {
		t.Errorf("committer's tree: %v", err)
	}

	for _, l := range []tm.LeafIndex{1, 2} {
		rt := before.Clone()
		rt.Add(dLeaf)
		if err := rt.MergeUpdatePath(0, up, groupID); err != nil {
			t.Fatalf("leaf %d: %v", l, err)
		}
		if !bytes.Equal(rt.Hash(), committer.Hash()) {
			t.Errorf("leaf %d: tree differs from the committer's", l)
		}
		k := keys[l].Clone()
		commit, _, err := rt.DecryptPath(k, 0, up, exclude, ctx)
		if err != nil {
			t.Fatalf("leaf %d: %v", l, err)
		}
		if !bytes.Equal(commit, p.CommitSecret) {
			t.Errorf("leaf %d: commit secret differs", l)
		}
		if err := k.Check(rt); err != nil {
			t.Errorf("leaf %d: %v", l, err)
		}
		var stored PrivateKeys
		if err := codec.Unmarshal(codec.Marshal(k), &stored); err != nil || stored.Check(rt) != nil ||
			len(stored.Nodes()) != len(k.Nodes()) || stored.LeafIndex() != l {
			t.Errorf("leaf %d: stored keys do not round-trip (%v)", l, err)
		}
		// A wrong group context does not decrypt.
		if _, _, err := rt.DecryptPath(keys[l].Clone(), 0, up, exclude, []byte("other")); err == nil {
			t.Errorf("leaf %d: decrypted under the wrong group context", l)
		}
		// Without the exclusion the ciphertexts do not line up.
		if _, _, err := rt.DecryptPath(keys[l].Clone(), 0, up, nil, ctx); err == nil && l == 2 {
			t.Errorf("leaf %d: decrypted with the wrong exclusion list", l)
		}
	}

	// A path whose node key was swapped fails the parent hash check and
	// leaves the tree as it was.
	bad := *up
	bad.Nodes = append([]wire.UpdatePathNode(nil), up.Nodes...)
	bad.Nodes[0].EncryptionKey = up.Nodes[len(up.Nodes)-1].EncryptionKey
	rt := before.Clone()
	rt.Add(dLeaf)
	h := rt.Hash()
	if err := rt.MergeUpdatePath(0, &bad, groupID); !errors.Is(err, ErrParentHash) {
		t.Errorf("swapped key: got %v, want ErrParentHash", err)
	}
	if !bytes.Equal(rt.Hash(), h) {
		t.Error("a refused path changed the tree")
	}
	if err := rt.MergeUpdatePath(0, up, []byte("other group")); !errors.Is(err, ErrInvalidLeaf) {
		t.Errorf("wrong group: got %v, want ErrInvalidLeaf", err)
	}
	short := *up
	short.Nodes = up.Nodes[:1]
	if err := rt.MergeUpdatePath(0, &short, groupID); !errors.Is(err, ErrUpdatePath) {
		t.Errorf("short path: got %v, want ErrUpdatePath", err)
	}
}

func TestAddRemoveShape(t *testing.T) {
	s := suite(t, 1)
	var tr *Tree
	for i := range 5 {
		ln, _, _ := member(t, s, string(rune('a'+i)))
		if tr == nil {
			tr = New(s, ln)
		} else if got := tr.Add(ln); got != tm.LeafIndex(i) {
			t.Fatalf("member %d added at %d", i, got)
		}
	}
	if tr.NumLeaves() != 8 {
		t.Fatalf("%d leaves, want 8", tr.NumLeaves())
	}
	if err := tr.Remove(1); err != nil {
		t.Fatal(err)
	}
	// The hole is refilled first.
	ln, _, _ := member(t, s, "f")
	if got := tr.Add(ln); got != 1 {
		t.Errorf("refill at %d, want 1", got)
	}
	if err := tr.Remove(4); err != nil {
		t.Fatal(err)
	}
	if tr.NumLeaves() != 4 {
		t.Errorf("after removing the only right-half member: %d leaves, want 4", tr.NumLeaves())
	}
	if err := tr.Remove(4); !errors.Is(err, ErrLeafIndex) {
		t.Errorf("removing beyond the tree: %v", err)
	}
	if err := tr.Update(7, ln); !errors.Is(err, ErrLeafIndex) {
		t.Errorf("updating beyond the tree: %v", err)
	}
	// The cached hash agrees with a fresh computation.
	fresh, err := Decode(s, tr.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh.Hash(), tr.Hash()) {
		t.Error("cached tree hash is stale")
	}
	var rt wire.RatchetTree
	if err := codec.Unmarshal(tr.Encode(), &rt); err != nil || rt[len(rt)-1] == nil {
		t.Errorf("encoded tree ends with a blank node or does not decode: %v", err)
	}
}

func TestNodeHashesRoundTrip(t *testing.T) {
	s := suite(t, 1)
	var tr *Tree
	for i := range 5 {
		ln, _, _ := member(t, s, string(rune('a'+i)))
		if tr == nil {
			tr = New(s, ln)
		} else {
			tr.Add(ln)
		}
	}
	want := tr.Hash()
	hashes := tr.NodeHashes()
	fresh, err := FromRatchetTree(s, tr.RatchetTree())
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.SetNodeHashes(hashes[:len(hashes)-1]); err == nil {
		t.Fatal("node hashes of the wrong count accepted")
	}
	// A planted root hash is what the restored tree reports: the hashes
	// are taken, not recomputed.
	planted := append([][]byte(nil), hashes...)
	root := int(tr.root())
	planted[root] = make([]byte, s.HashSize())
	if err := fresh.SetNodeHashes(planted); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh.Hash(), planted[root]) {
		t.Fatal("restored tree recomputed its root hash")
	}
	fresh, _ = FromRatchetTree(s, tr.RatchetTree())
	if err := fresh.SetNodeHashes(hashes); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh.Hash(), want) {
		t.Fatal("restored tree hash differs")
	}
}
