// Package tree is RFC 9420's ratchet tree: the array of optional leaf and
// parent nodes (§7), its resolutions, tree hashes and parent hashes, the
// checks a joiner makes on a tree it is given (§7.9.2, §12.4.3.1), the
// changes Add, Update and Remove proposals make (§12.1), and TreeKEM:
// creating an UpdatePath and merging and decrypting one (§7.4–7.6).
//
// A Tree caches the tree hash of every subtree and forgets only the hashes
// along a path when a node changes, so processing a commit re-hashes
// O(log n) nodes. Nodes in a Tree are never modified in place (a change
// stores a new node), so Clone is a cheap copy of the node array and values
// returned by accessors stay valid. A Tree is not safe for concurrent use.
package tree

import (
	"errors"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	tm "github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// Sentinel errors, wrapped with the node or leaf concerned.
var (
	// ErrMalformed means a ratchet tree's shape is wrong: a leaf where a
	// parent belongs or the reverse, a trailing blank node, no nodes.
	ErrMalformed = errors.New("tree: malformed ratchet tree")
	// ErrLeafIndex means a leaf index beyond the tree, or a blank leaf where
	// a member is needed.
	ErrLeafIndex = errors.New("tree: no member at leaf")
	// ErrParentHash means a parent hash does not verify.
	ErrParentHash = errors.New("tree: invalid parent hash")
	// ErrUnmergedLeaves means a parent node's unmerged leaves break the
	// rules of RFC 9420 §7.9.2 and §12.4.3.1.
	ErrUnmergedLeaves = errors.New("tree: invalid unmerged leaves")
	// ErrDuplicateKey means two members share an encryption or signature key.
	ErrDuplicateKey = errors.New("tree: duplicate key")
	// ErrInvalidLeaf means a leaf node's signature or source is wrong.
	ErrInvalidLeaf = errors.New("tree: invalid leaf node")
	// ErrUpdatePath means an UpdatePath does not fit the tree: wrong number
	// of nodes or ciphertexts, or keys that do not match its secrets.
	ErrUpdatePath = errors.New("tree: invalid update path")
	// ErrNoPrivateKey means the receiver holds no private key for any node
	// a path secret was encrypted to.
	ErrNoPrivateKey = errors.New("tree: no private key to decrypt path secret")
)

// node is one array slot; blank when both leaf and parent are nil. hash is
// the cached tree hash of the subtree rooted here, nil when stale.
type node struct {
	leaf   *wire.LeafNode
	parent *wire.ParentNode
	hash   []byte
}

func (n *node) blank() bool { return n.leaf == nil && n.parent == nil }

// Tree is a ratchet tree for one ciphersuite. Its number of leaves is a
// power of two.
type Tree struct {
	suite   *ciphersuite.Suite
	nodes   []node
	scratch []byte
}

// New returns a tree holding one member, the group's creator.
func New(s *ciphersuite.Suite, leaf *wire.LeafNode) *Tree {
	return &Tree{suite: s, nodes: []node{{leaf: leaf}}}
}

// FromRatchetTree builds a tree from the ratchet_tree extension's nodes,
// padding it with blank nodes to a full tree (RFC 9420 §12.4.3.3). It
// checks the shape only; Verify checks the contents.
func FromRatchetTree(s *ciphersuite.Suite, rt wire.RatchetTree) (*Tree, error) {
	if len(rt) == 0 {
		return nil, fmt.Errorf("%w: no nodes", ErrMalformed)
	}
	if rt[len(rt)-1] == nil {
		return nil, fmt.Errorf("%w: last node is blank", ErrMalformed)
	}
	width := 1
	for width < len(rt) {
		width = 2*width + 1
	}
	if uint64(width) > 1<<32-1 {
		return nil, fmt.Errorf("%w: %d nodes", ErrMalformed, len(rt))
	}
	t := &Tree{suite: s, nodes: make([]node, width)}
	for i, n := range rt {
		if n == nil {
			continue
		}
		isLeaf := tm.IsLeaf(tm.NodeIndex(i))
		switch {
		case isLeaf && n.Leaf != nil && n.Parent == nil:
			t.nodes[i].leaf = n.Leaf
		case !isLeaf && n.Parent != nil && n.Leaf == nil:
			for _, l := range n.Parent.UnmergedLeaves {
				if uint64(l) >= uint64(t.NumLeaves()) {
					return nil, fmt.Errorf("%w: node %d lists unmerged leaf %d beyond the tree", ErrMalformed, i, l)
				}
			}
			t.nodes[i].parent = n.Parent
		default:
			return nil, fmt.Errorf("%w: node %d has the wrong type", ErrMalformed, i)
		}
	}
	return t, nil
}

// Decode builds a tree from an encoded ratchet_tree extension.
func Decode(s *ciphersuite.Suite, data []byte) (*Tree, error) {
	var rt wire.RatchetTree
	if err := codec.Unmarshal(data, &rt); err != nil {
		return nil, fmt.Errorf("decoding ratchet tree: %w", err)
	}
	return FromRatchetTree(s, rt)
}

// RatchetTree is the tree as the ratchet_tree extension carries it, without
// trailing blank nodes. The nodes are shared with the tree; do not modify
// them.
func (t *Tree) RatchetTree() wire.RatchetTree {
	end := len(t.nodes)
	for end > 0 && t.nodes[end-1].blank() {
		end--
	}
	rt := make(wire.RatchetTree, end)
	for i := range rt {
		n := &t.nodes[i]
		switch {
		case n.leaf != nil:
			rt[i] = &wire.Node{Leaf: n.leaf}
		case n.parent != nil:
			rt[i] = &wire.Node{Parent: n.parent}
		}
	}
	return rt
}

// Encode is the encoded ratchet_tree extension body.
func (t *Tree) Encode() []byte {
	rt := t.RatchetTree()
	return codec.Marshal(&rt)
}

// Clone returns an independent copy, for trying a commit without
// committing to it.
func (t *Tree) Clone() *Tree {
	return &Tree{suite: t.suite, nodes: append([]node(nil), t.nodes...)}
}

// Suite is the tree's ciphersuite.
func (t *Tree) Suite() *ciphersuite.Suite { return t.suite }

// NumLeaves is the number of leaves, blank or not: a power of two.
func (t *Tree) NumLeaves() uint32 { return uint32(len(t.nodes)+1) / 2 }

// Width is the number of nodes.
func (t *Tree) Width() uint32 { return uint32(len(t.nodes)) }

// Leaf is the leaf node at l, or nil if it is blank or beyond the tree.
func (t *Tree) Leaf(l tm.LeafIndex) *wire.LeafNode {
	if uint64(l.Node()) >= uint64(len(t.nodes)) {
		return nil
	}
	return t.nodes[l.Node()].leaf
}

// ParentNode is the parent node at x, or nil if it is blank, a leaf or
// beyond the tree.
func (t *Tree) ParentNode(x tm.NodeIndex) *wire.ParentNode {
	if uint64(x) >= uint64(len(t.nodes)) {
		return nil
	}
	return t.nodes[x].parent
}

// IsBlank reports whether node x is blank (or beyond the tree).
func (t *Tree) IsBlank(x tm.NodeIndex) bool {
	return uint64(x) >= uint64(len(t.nodes)) || t.nodes[x].blank()
}

// EncryptionKey is the HPKE public key of node x, nil if it is blank.
func (t *Tree) EncryptionKey(x tm.NodeIndex) []byte {
	if uint64(x) >= uint64(len(t.nodes)) {
		return nil
	}
	n := &t.nodes[x]
	switch {
	case n.leaf != nil:
		return n.leaf.EncryptionKey
	case n.parent != nil:
		return n.parent.EncryptionKey
	}
	return nil
}

// Members calls fn for each non-blank leaf in order, stopping if it returns
// false.
func (t *Tree) Members(fn func(l tm.LeafIndex, leaf *wire.LeafNode) bool) {
	for i := 0; i < len(t.nodes); i += 2 {
		if ln := t.nodes[i].leaf; ln != nil && !fn(tm.LeafIndex(i/2), ln) {
			return
		}
	}
}

func (t *Tree) root() tm.NodeIndex { return tm.Root(t.NumLeaves()) }

// setNode stores a node's contents and forgets the hashes it changes.
func (t *Tree) setNode(x tm.NodeIndex, leaf *wire.LeafNode, parent *wire.ParentNode) {
	t.nodes[x].leaf, t.nodes[x].parent = leaf, parent
	t.invalidate(x)
}

// invalidate forgets the cached hashes of x and its ancestors.
func (t *Tree) invalidate(x tm.NodeIndex) {
	n := t.NumLeaves()
	r := tm.Root(n)
	for {
		t.nodes[x].hash = nil
		if x == r {
			return
		}
		x = tm.Parent(x, n)
	}
}

// Resolution is the resolution of node x (RFC 9420 §4.1.1): the non-blank
// nodes that together cover its subtree, with parents' unmerged leaves.
func (t *Tree) Resolution(x tm.NodeIndex) []tm.NodeIndex {
	return t.appendResolution(nil, x, nil)
}

// appendResolution appends the resolution of x, leaving out the leaves in
// exclude.
func (t *Tree) appendResolution(dst []tm.NodeIndex, x tm.NodeIndex, exclude []tm.LeafIndex) []tm.NodeIndex {
	n := &t.nodes[x]
	if tm.IsLeaf(x) {
		if n.leaf != nil && !containsLeaf(exclude, tm.LeafIndex(x/2)) {
			dst = append(dst, x)
		}
		return dst
	}
	if n.parent != nil {
		dst = append(dst, x)
		for _, l := range n.parent.UnmergedLeaves {
			if !containsLeaf(exclude, l) {
				dst = append(dst, l.Node())
			}
		}
		return dst
	}
	dst = t.appendResolution(dst, tm.Left(x), exclude)
	return t.appendResolution(dst, tm.Right(x), exclude)
}

// subtreeBlank reports whether every node under x is blank, that is whether
// its resolution is empty.
func (t *Tree) subtreeBlank(x tm.NodeIndex) bool {
	if !t.nodes[x].blank() {
		return false
	}
	if tm.IsLeaf(x) {
		return true
	}
	return t.subtreeBlank(tm.Left(x)) && t.subtreeBlank(tm.Right(x))
}

// FilteredDirectPath is the direct path of leaf l without the nodes whose
// copath child has an empty resolution (RFC 9420 §4.1.2), with the copath
// child of each node kept.
func (t *Tree) FilteredDirectPath(l tm.LeafIndex) (path, copath []tm.NodeIndex) {
	n := t.NumLeaves()
	x := l.Node()
	r := tm.Root(n)
	for x != r {
		p := tm.Parent(x, n)
		s := tm.Sibling(x, n)
		if !t.subtreeBlank(s) {
			path = append(path, p)
			copath = append(copath, s)
		}
		x = p
	}
	return path, copath
}

func containsLeaf(s []tm.LeafIndex, l tm.LeafIndex) bool {
	for _, x := range s {
		if x == l {
			return true
		}
	}
	return false
}

func (t *Tree) checkMember(l tm.LeafIndex) error {
	if uint64(l) >= uint64(t.NumLeaves()) || t.nodes[l.Node()].leaf == nil {
		return fmt.Errorf("%w: leaf %d", ErrLeafIndex, l)
	}
	return nil
}
