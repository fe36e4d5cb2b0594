package tree

import (
	"github.com/lmbridge/lmbridge/mls/codec"
	tm "github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// Hash is the tree hash of the root (RFC 9420 §7.8), the GroupContext's
// tree_hash.
func (t *Tree) Hash() []byte { return t.nodeHash(t.root()) }

// NodeHash is the tree hash of the subtree rooted at x.
func (t *Tree) NodeHash(x tm.NodeIndex) []byte { return t.nodeHash(x) }

func (t *Tree) nodeHash(x tm.NodeIndex) []byte {
	n := &t.nodes[x]
	if n.hash != nil {
		return n.hash
	}
	var left, right []byte
	if !tm.IsLeaf(x) {
		left, right = t.nodeHash(tm.Left(x)), t.nodeHash(tm.Right(x))
	}
	n.hash = t.hashInput(x, n.leaf, n.parent, left, right)
	return n.hash
}

// hashInput hashes a TreeHashInput, reusing the tree's scratch buffer.
func (t *Tree) hashInput(x tm.NodeIndex, leaf *wire.LeafNode, parent *wire.ParentNode, left, right []byte) []byte {
	w := codec.NewWriter(t.scratch[:0])
	if tm.IsLeaf(x) {
		w.Uint8(uint8(wire.NodeTypeLeaf))
		w.Uint32(uint32(x / 2))
		w.Optional(leaf != nil, func(w *codec.Writer) { leaf.MarshalMLS(w) })
	} else {
		w.Uint8(uint8(wire.NodeTypeParent))
		w.Optional(parent != nil, func(w *codec.Writer) { parent.MarshalMLS(w) })
		w.Opaque(left)
		w.Opaque(right)
	}
	t.scratch = w.Bytes()
	return t.suite.Hash(t.scratch)
}

// hashExcluding is the tree hash of x in the tree where the leaves in
// exclude are blank and gone from every unmerged_leaves list: the
// original_sibling_tree_hash of RFC 9420 §7.9.
func (t *Tree) hashExcluding(x tm.NodeIndex, exclude []tm.LeafIndex) []byte {
	if !t.anyInSubtree(x, exclude) {
		return t.nodeHash(x)
	}
	n := &t.nodes[x]
	if tm.IsLeaf(x) {
		return t.hashInput(x, nil, nil, nil, nil)
	}
	left := t.hashExcluding(tm.Left(x), exclude)
	right := t.hashExcluding(tm.Right(x), exclude)
	parent := n.parent
	if parent != nil {
		kept := make([]tm.LeafIndex, 0, len(parent.UnmergedLeaves))
		for _, l := range parent.UnmergedLeaves {
			if !containsLeaf(exclude, l) {
				kept = append(kept, l)
			}
		}
		parent = &wire.ParentNode{EncryptionKey: parent.EncryptionKey, ParentHash: parent.ParentHash, UnmergedLeaves: kept}
	}
	return t.hashInput(x, nil, parent, left, right)
}

func (t *Tree) anyInSubtree(x tm.NodeIndex, leaves []tm.LeafIndex) bool {
	for _, l := range leaves {
		if tm.IsInSubtree(x, l.Node()) {
			return true
		}
	}
	return false
}

// parentHash hashes a ParentHashInput.
func (t *Tree) parentHash(encryptionKey, parentHash, siblingHash []byte) []byte {
	w := codec.NewWriter(t.scratch[:0])
	w.Opaque(encryptionKey)
	w.Opaque(parentHash)
	w.Opaque(siblingHash)
	t.scratch = w.Bytes()
	return t.suite.Hash(t.scratch)
}

// pathParentHashes computes the parent_hash fields along a filtered direct
// path whose nodes get the keys in keys (leaf to root): fields[i] is the
// parent_hash of path node i, and leafHash that of the leaf. The copath
// subtrees do not change when a path is applied, so their cached hashes
// serve as the original sibling tree hashes.
func (t *Tree) pathParentHashes(copath []tm.NodeIndex, keys [][]byte) (fields [][]byte, leafHash []byte) {
	fields = make([][]byte, len(copath))
	above := []byte{}
	for i := len(copath) - 1; i >= 0; i-- {
		fields[i] = above
		above = t.parentHash(keys[i], above, t.nodeHash(copath[i]))
	}
	return fields, above
}
