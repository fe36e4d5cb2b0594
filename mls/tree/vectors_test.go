package tree

import (
	"bytes"
	"slices"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/internal/vectors"
	tm "github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

func suite(t *testing.T, id uint16) *ciphersuite.Suite {
	t.Helper()
	s, err := ciphersuite.Lookup(ciphersuite.ID(id))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// passCounter tallies cases per ciphersuite for the log line the report
// quotes.
type passCounter map[uint16][2]int

func (p passCounter) add(id uint16, ok bool) {
	c := p[id]
	c[1]++
	if ok {
		c[0]++
	}
	p[id] = c
}

func (p passCounter) log(t *testing.T, file string) {
	passed, total := 0, 0
	for id := uint16(1); id <= 7; id++ {
		if c, ok := p[id]; ok {
			t.Logf("%s suite %d: %d/%d", file, id, c[0], c[1])
			passed += c[0]
			total += c[1]
		}
	}
	t.Logf("%s: %d/%d cases passed", file, passed, total)
}

func TestTreeValidationVectors(t *testing.T) {
	var cases []struct {
		CipherSuite uint16        `json:"cipher_suite"`
		Tree        vectors.Hex   `json:"tree"`
		GroupID     vectors.Hex   `json:"group_id"`
		TreeHashes  []vectors.Hex `json:"tree_hashes"`
		Resolutions [][]uint32    `json:"resolutions"`
	}
	if err := vectors.Load("tree-validation.json", &cases); err != nil {
		t.Fatal(err)
	}
	pc := passCounter{}
	for i, c := range cases {
		ok := func() bool {
			tr, err := Decode(suite(t, c.CipherSuite), c.Tree)
			if err != nil {
				t.Errorf("case %d: %v", i, err)
				return false
			}
			if len(c.TreeHashes) != int(tr.Width()) || len(c.Resolutions) != int(tr.Width()) {
				t.Errorf("case %d: %d hashes and %d resolutions for a tree of %d nodes", i, len(c.TreeHashes), len(c.Resolutions), tr.Width())
				return false
			}
			good := true
			for x := range c.TreeHashes {
				if got := tr.NodeHash(tm.NodeIndex(x)); !bytes.Equal(got, c.TreeHashes[x]) {
					t.Errorf("case %d: tree hash of node %d = %x, want %x", i, x, got, c.TreeHashes[x])
					good = false
				}
				var want []tm.NodeIndex
				for _, r := range c.Resolutions[x] {
					want = append(want, tm.NodeIndex(r))
				}
				if got := tr.Resolution(tm.NodeIndex(x)); !slices.Equal(got, want) {
					t.Errorf("case %d: resolution of node %d = %v, want %v", i, x, got, want)
					good = false
				}
			}
			if err := tr.Verify(c.GroupID); err != nil {
				t.Errorf("case %d: Verify: %v", i, err)
				good = false
			}
			if got := tr.Encode(); !bytes.Equal(got, c.Tree) {
				t.Errorf("case %d: re-encoded tree differs", i)
				good = false
			}
			return good
		}()
		pc.add(c.CipherSuite, ok)
	}
	pc.log(t, "tree-validation.json")
}

func TestTreeOperationsVectors(t *testing.T) {
	var cases []struct {
		CipherSuite    uint16      `json:"cipher_suite"`
		TreeBefore     vectors.Hex `json:"tree_before"`
		Proposal       vectors.Hex `json:"proposal"`
		ProposalSender uint32      `json:"proposal_sender"`
		TreeAfter      vectors.Hex `json:"tree_after"`
		TreeHashBefore vectors.Hex `json:"tree_hash_before"`
		TreeHashAfter  vectors.Hex `json:"tree_hash_after"`
	}
	if err := vectors.Load("tree-operations.json", &cases); err != nil {
		t.Fatal(err)
	}
	pc := passCounter{}
	for i, c := range cases {
		ok := func() bool {
			tr, err := Decode(suite(t, c.CipherSuite), c.TreeBefore)
			if err != nil {
				t.Errorf("case %d: %v", i, err)
				return false
			}
			if got := tr.Hash(); !bytes.Equal(got, c.TreeHashBefore) {
				t.Errorf("case %d: tree hash before = %x, want %x", i, got, c.TreeHashBefore)
				return false
			}
			r := codec.NewReader(c.Proposal)
			p := wire.UnmarshalProposal(r)
			if err := r.Finish(); err != nil {
				t.Errorf("case %d: decoding proposal: %v", i, err)
				return false
			}
			switch p := p.(type) {
			case *wire.Add:
				tr.Add(&p.KeyPackage.LeafNode)
			case *wire.Update:
				err = tr.Update(tm.LeafIndex(c.ProposalSender), &p.LeafNode)
			case *wire.Remove:
				err = tr.Remove(p.Removed)
			default:
				t.Errorf("case %d: unexpected proposal %T", i, p)
				return false
			}
			if err != nil {
				t.Errorf("case %d: applying %T: %v", i, p, err)
				return false
			}
			good := true
			if got := tr.Encode(); !bytes.Equal(got, c.TreeAfter) {
				t.Errorf("case %d (%T): tree after differs", i, p)
				good = false
			}
			if got := tr.Hash(); !bytes.Equal(got, c.TreeHashAfter) {
				t.Errorf("case %d (%T): tree hash after = %x, want %x", i, p, got, c.TreeHashAfter)
				good = false
			}
			// The cached hashes must agree with a tree decoded afresh.
			fresh, err := Decode(tr.suite, c.TreeAfter)
			if err != nil || !bytes.Equal(fresh.Hash(), tr.Hash()) {
				t.Errorf("case %d: cached tree hash disagrees with a fresh tree's (%v)", i, err)
				good = false
			}
			return good
		}()
		pc.add(c.CipherSuite, ok)
	}
	pc.log(t, "tree-operations.json")
}

type treeKEMCase struct {
	CipherSuite             uint16      `json:"cipher_suite"`
	GroupID                 vectors.Hex `json:"group_id"`
	Epoch                   uint64      `json:"epoch"`
	ConfirmedTranscriptHash vectors.Hex `json:"confirmed_transcript_hash"`
	RatchetTree             vectors.Hex `json:"ratchet_tree"`
	LeavesPrivate           []struct {
		Index          uint32      `json:"index"`
		EncryptionPriv vectors.Hex `json:"encryption_priv"`
		SignaturePriv  vectors.Hex `json:"signature_priv"`
		PathSecrets    []struct {
			Node       uint32      `json:"node"`
			PathSecret vectors.Hex `json:"path_secret"`
		} `json:"path_secrets"`
	} `json:"leaves_private"`
	UpdatePaths []struct {
		Sender        uint32        `json:"sender"`
		UpdatePath    vectors.Hex   `json:"update_path"`
		PathSecrets   []vectors.Hex `json:"path_secrets"`
		CommitSecret  vectors.Hex   `json:"commit_secret"`
		TreeHashAfter vectors.Hex   `json:"tree_hash_after"`
	} `json:"update_paths"`
}

func (c *treeKEMCase) groupContext(treeHash []byte) []byte {
	gc := wire.GroupContext{Version: wire.MLS10, CipherSuite: ciphersuite.ID(c.CipherSuite), GroupID: c.GroupID,
		Epoch: c.Epoch, TreeHash: treeHash, ConfirmedTranscriptHash: c.ConfirmedTranscriptHash}
	return codec.Marshal(&gc)
}

func TestTreeKEMVectors(t *testing.T) {
	var cases []treeKEMCase
	if err := vectors.Load("treekem.json", &cases); err != nil {
		t.Fatal(err)
	}
	pc := passCounter{}
	for i := range cases {
		c := &cases[i]
		before := t.Failed()
		testTreeKEMCase(t, i, c)
		pc.add(c.CipherSuite, t.Failed() == before)
	}
	pc.log(t, "treekem.json")
}

func testTreeKEMCase(t *testing.T, i int, c *treeKEMCase) {
	s := suite(t, c.CipherSuite)
	base, err := Decode(s, c.RatchetTree)
	if err != nil {
		t.Errorf("case %d: %v", i, err)
		return
	}
	if err := base.Verify(c.GroupID); err != nil {
		t.Errorf("case %d: tree does not verify: %v", i, err)
	}
	// The private state of each leaf must match the tree.
	keys := make(map[tm.LeafIndex]*PrivateKeys)
	for _, lp := range c.LeavesPrivate {
		k := NewPrivateKeys(tm.LeafIndex(lp.Index), lp.EncryptionPriv)
		for _, ps := range lp.PathSecrets {
			priv, _, err := s.DeriveKeyPair(s.DeriveSecret(ps.PathSecret, "node"))
			if err != nil {
				t.Fatalf("case %d: %v", i, err)
			}
			k.Set(tm.NodeIndex(ps.Node), priv)
		}
		if err := k.Check(base); err != nil {
			t.Errorf("case %d leaf %d: private state: %v", i, lp.Index, err)
		}
		keys[tm.LeafIndex(lp.Index)] = k
	}

	// Process each UpdatePath from every other leaf's point of view.
	for _, u := range c.UpdatePaths {
		var up wire.UpdatePath
		if err := codec.Unmarshal(u.UpdatePath, &up); err != nil {
			t.Errorf("case %d sender %d: decoding update path: %v", i, u.Sender, err)
			continue
		}
		sender := tm.LeafIndex(u.Sender)
		tr := base.Clone()
		if err := tr.MergeUpdatePath(sender, &up, c.GroupID); err != nil {
			t.Errorf("case %d sender %d: merge: %v", i, u.Sender, err)
			continue
		}
		if got := tr.Hash(); !bytes.Equal(got, u.TreeHashAfter) {
			t.Errorf("case %d sender %d: tree hash after = %x, want %x", i, u.Sender, got, u.TreeHashAfter)
		}
		if err := tr.VerifyParentHashes(); err != nil {
			t.Errorf("case %d sender %d: tree after merge: %v", i, u.Sender, err)
		}
		ctx := c.groupContext(tr.Hash())
		for l, k := range keys {
			if l == sender {
				continue
			}
			k := k.Clone()
			commit, ps, err := tr.DecryptPath(k, sender, &up, nil, ctx)
			if err != nil {
				t.Errorf("case %d sender %d leaf %d: decrypt: %v", i, u.Sender, l, err)
				continue
			}
			if !bytes.Equal(ps, u.PathSecrets[l]) {
				t.Errorf("case %d sender %d leaf %d: path secret %x, want %x", i, u.Sender, l, ps, u.PathSecrets[l])
			}
			if !bytes.Equal(commit, u.CommitSecret) {
				t.Errorf("case %d sender %d leaf %d: commit secret %x, want %x", i, u.Sender, l, commit, u.CommitSecret)
			}
			if err := k.Check(tr); err != nil {
				t.Errorf("case %d sender %d leaf %d: keys after: %v", i, u.Sender, l, err)
			}
		}
	}

	// Generate a path from each leaf; every other leaf must process it to
	// the same tree and commit secret.
	for _, lp := range c.LeavesPrivate {
		sender := tm.LeafIndex(lp.Index)
		tr := base.Clone()
		p, err := tr.GeneratePath(sender, base.Leaf(sender), lp.SignaturePriv, c.GroupID)
		if err != nil {
			t.Errorf("case %d: generating from %d: %v", i, sender, err)
			continue
		}
		ctx := c.groupContext(tr.Hash())
		up, err := p.Encrypt(ctx, nil)
		if err != nil {
			t.Errorf("case %d: encrypting from %d: %v", i, sender, err)
			continue
		}
		if err := tr.Verify(c.GroupID); err != nil {
			t.Errorf("case %d: tree after generating from %d: %v", i, sender, err)
		}
		if err := p.Keys.Check(tr); err != nil {
			t.Errorf("case %d: committer %d keys: %v", i, sender, err)
		}
		var decoded wire.UpdatePath
		if err := codec.Unmarshal(codec.Marshal(up), &decoded); err != nil {
			t.Errorf("case %d: generated update path does not decode: %v", i, err)
			continue
		}
		for l, k := range keys {
			if l == sender {
				continue
			}
			rt := base.Clone()
			if err := rt.MergeUpdatePath(sender, &decoded, c.GroupID); err != nil {
				t.Errorf("case %d: leaf %d merging path from %d: %v", i, l, sender, err)
				continue
			}
			if !bytes.Equal(rt.Hash(), tr.Hash()) {
				t.Errorf("case %d: leaf %d's tree after path from %d differs from the committer's", i, l, sender)
			}
			k := k.Clone()
			commit, _, err := rt.DecryptPath(k, sender, &decoded, nil, c.groupContext(rt.Hash()))
			if err != nil {
				t.Errorf("case %d: leaf %d decrypting path from %d: %v", i, l, sender, err)
				continue
			}
			if !bytes.Equal(commit, p.CommitSecret) {
				t.Errorf("case %d: leaf %d got another commit secret from %d", i, l, sender)
			}
		}
	}
}
