package tree

import (
	"fmt"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	tm "github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// benchGroup is a tree of n members whose parent nodes are all set (as in
// a group where everyone has committed), with every member's private keys.
type benchGroup struct {
	tree    *Tree
	sigPriv [][]byte
	keys    []*PrivateKeys
	groupID []byte
}

var benchGroups = map[int]*benchGroup{}

func newBenchGroup(tb testing.TB, s *ciphersuite.Suite, n int) *benchGroup {
	if g, ok := benchGroups[n]; ok {
		return g
	}
	g := &benchGroup{groupID: []byte("bench group"), sigPriv: make([][]byte, n)}
	leafPriv := make([][]byte, n)
	var tr *Tree
	for i := 0; i < n; i++ {
		sigPriv, sigPub, err := s.GenerateSignatureKeyPair()
		if err != nil {
			tb.Fatal(err)
		}
		encPriv, encPub, err := s.GenerateKeyPair()
		if err != nil {
			tb.Fatal(err)
		}
		ln := &wire.LeafNode{
			EncryptionKey: encPub, SignatureKey: sigPub,
			Credential:   wire.BasicCredential([]byte(fmt.Sprintf("member %d", i))),
			Capabilities: wire.Capabilities{Versions: []wire.ProtocolVersion{wire.MLS10}, CipherSuites: []ciphersuite.ID{s.ID()}, Credentials: []wire.CredentialType{wire.CredentialBasic}},
			Source:       wire.SourceKeyPackage, Lifetime: wire.Lifetime{NotAfter: 1 << 62},
		}
		if err := ln.Sign(s, sigPriv, nil, 0); err != nil {
			tb.Fatal(err)
		}
		if tr == nil {
			tr = New(s, ln)
		} else {
			tr.Add(ln)
		}
		g.sigPriv[i], leafPriv[i] = sigPriv, encPriv
	}
	// Every even member commits in turn, which sets every parent node; the
	// private key of each node is that of the last path through it.
	nodePriv := make(map[tm.NodeIndex][]byte)
	for i := 0; i < n; i++ {
		nodePriv[tm.LeafIndex(i).Node()] = leafPriv[i]
	}
	for i := 0; i+1 < n; i += 2 {
		p, err := tr.GeneratePath(tm.LeafIndex(i), tr.Leaf(tm.LeafIndex(i)), g.sigPriv[i], g.groupID)
		if err != nil {
			tb.Fatal(err)
		}
		for _, x := range p.Keys.Nodes() {
			nodePriv[x] = p.Keys.Get(x)
		}
	}
	g.keys = make([]*PrivateKeys, n)
	for i := 0; i < n; i++ {
		l := tm.LeafIndex(i)
		k := NewPrivateKeys(l, nodePriv[l.Node()])
		for _, x := range tm.DirectPath(l.Node(), tr.NumLeaves()) {
			k.Set(x, nodePriv[x])
		}
		g.keys[i] = k
	}
	if err := tr.Verify(g.groupID); err != nil {
		tb.Fatal(err)
	}
	g.tree = tr
	benchGroups[n] = g
	return g
}

func (g *benchGroup) context(s *ciphersuite.Suite, treeHash []byte) []byte {
	gc := wire.GroupContext{Version: wire.MLS10, CipherSuite: s.ID(), GroupID: g.groupID, Epoch: 7, TreeHash: treeHash}
	return codec.Marshal(&gc)
}

var benchSizes = []int{2, 16, 256, 1024}

// BenchmarkProcessUpdatePath is what a member does with a commit's path:
// merge it (parent hashes, leaf signature), hash the new tree for the
// GroupContext, decrypt its path secret and derive the keys up to the root.
// The receiver is the committer's sibling, which derives the most keys; the
// tree and keys are cloned each iteration.
func BenchmarkProcessUpdatePath(b *testing.B) {
	s, _ := ciphersuite.Lookup(1)
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("leaves=%d", n), func(b *testing.B) {
			g := newBenchGroup(b, s, n)
			sender, receiver := tm.LeafIndex(n-1), tm.LeafIndex(n-2)
			tr := g.tree.Clone()
			p, err := tr.GeneratePath(sender, tr.Leaf(sender), g.sigPriv[sender], g.groupID)
			if err != nil {
				b.Fatal(err)
			}
			up, err := p.Encrypt(g.context(s, tr.Hash()), nil)
			if err != nil {
				b.Fatal(err)
			}
			g.tree.Hash()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				rt := g.tree.Clone()
				k := g.keys[receiver].Clone()
				if err := rt.MergeUpdatePath(sender, up, g.groupID); err != nil {
					b.Fatal(err)
				}
				if _, _, err := rt.DecryptPath(k, sender, up, nil, g.context(s, rt.Hash())); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCreateUpdatePath is the committer's side: generate a path, hash
// the new tree and encrypt the path secrets.
func BenchmarkCreateUpdatePath(b *testing.B) {
	s, _ := ciphersuite.Lookup(1)
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("leaves=%d", n), func(b *testing.B) {
			g := newBenchGroup(b, s, n)
			sender := tm.LeafIndex(n - 1)
			g.tree.Hash()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				tr := g.tree.Clone()
				p, err := tr.GeneratePath(sender, tr.Leaf(sender), g.sigPriv[sender], g.groupID)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := p.Encrypt(g.context(s, tr.Hash()), nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTreeHash is the tree hash of a tree decoded afresh (no cached
// hashes), as a joiner computes it.
func BenchmarkTreeHash(b *testing.B) {
	s, _ := ciphersuite.Lookup(1)
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("leaves=%d", n), func(b *testing.B) {
			enc := newBenchGroup(b, s, n).tree.Encode()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				tr, err := Decode(s, enc)
				if err != nil {
					b.Fatal(err)
				}
				tr.Hash()
			}
		})
	}
}

// BenchmarkVerify is a joiner's check of the tree it is given: decoding,
// every leaf signature, unmerged leaves and parent hashes.
func BenchmarkVerify(b *testing.B) {
	s, _ := ciphersuite.Lookup(1)
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("leaves=%d", n), func(b *testing.B) {
			g := newBenchGroup(b, s, n)
			enc := g.tree.Encode()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				tr, err := Decode(s, enc)
				if err != nil {
					b.Fatal(err)
				}
				if err := tr.Verify(g.groupID); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
