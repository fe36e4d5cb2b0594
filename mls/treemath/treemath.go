// Package treemath is the arithmetic of RFC 9420's array-based binary trees
// (Appendix C): leaves sit at even node indices, parents at odd ones, and a
// tree of n leaves (a power of two in MLS) spans 2n−1 nodes.
//
// Functions take the number of leaves where the answer depends on the tree's
// size. They do not allocate except for DirectPath and Copath.
package treemath

import "math/bits"

// NodeIndex is a node's position in the array representation.
type NodeIndex uint32

// LeafIndex is a leaf's position among the leaves.
type LeafIndex uint32

// Node is the node index of leaf l.
func (l LeafIndex) Node() NodeIndex { return NodeIndex(2 * l) }

// Leaf is the leaf index of node n, and whether n is a leaf.
func (n NodeIndex) Leaf() (LeafIndex, bool) { return LeafIndex(n / 2), n%2 == 0 }

// IsLeaf reports whether x is a leaf node.
func IsLeaf(x NodeIndex) bool { return x%2 == 0 }

// NodeWidth is the number of nodes in a tree of nLeaves leaves.
func NodeWidth(nLeaves uint32) uint32 {
	if nLeaves == 0 {
		return 0
	}
	return 2*(nLeaves-1) + 1
}

// Level is the height of x above the leaves (0 for a leaf): the number of
// trailing one bits of its index.
func Level(x NodeIndex) uint32 { return uint32(bits.TrailingZeros32(^uint32(x))) }

// Root is the root of a tree of nLeaves leaves.
func Root(nLeaves uint32) NodeIndex {
	w := NodeWidth(nLeaves)
	if w == 0 {
		return 0
	}
	return NodeIndex(uint32(1)<<(bits.Len32(w)-1) - 1)
}

// Left is the left child of x; a leaf is its own.
func Left(x NodeIndex) NodeIndex {
	k := Level(x)
	if k == 0 {
		return x
	}
	return x ^ (1 << (k - 1))
}

// Right is the right child of x; a leaf is its own.
func Right(x NodeIndex) NodeIndex {
	k := Level(x)
	if k == 0 {
		return x
	}
	return x ^ (3 << (k - 1))
}

// Parent is the parent of x in a tree of nLeaves leaves; the root is its own.
func Parent(x NodeIndex, nLeaves uint32) NodeIndex {
	if x == Root(nLeaves) {
		return x
	}
	return parentStep(x)
}

func parentStep(x NodeIndex) NodeIndex {
	k := Level(x)
	b := (x >> (k + 1)) & 1
	return (x | 1<<k) ^ (b << (k + 1))
}

// Sibling is the other child of x's parent; the root is its own.
func Sibling(x NodeIndex, nLeaves uint32) NodeIndex {
	p := Parent(x, nLeaves)
	switch {
	case p == x:
		return x
	case x < p:
		return Right(p)
	default:
		return Left(p)
	}
}

// DirectPath lists the ancestors of x from its parent up to the root
// (empty for the root).
func DirectPath(x NodeIndex, nLeaves uint32) []NodeIndex {
	r := Root(nLeaves)
	if x == r {
		return nil
	}
	path := make([]NodeIndex, 0, Level(r)-Level(x))
	for x != r {
		x = parentStep(x)
		path = append(path, x)
	}
	return path
}

// Copath lists the siblings of x and of each node on its direct path below
// the root, in the same order as DirectPath.
func Copath(x NodeIndex, nLeaves uint32) []NodeIndex {
	r := Root(nLeaves)
	if x == r {
		return nil
	}
	path := make([]NodeIndex, 0, Level(r)-Level(x))
	for x != r {
		path = append(path, Sibling(x, nLeaves))
		x = parentStep(x)
	}
	return path
}

// CommonAncestor is the lowest node whose subtree holds both x and y.
func CommonAncestor(x, y NodeIndex) NodeIndex {
	lx, ly := Level(x)+1, Level(y)+1
	if lx <= ly && x>>ly == y>>ly {
		return y
	}
	if ly <= lx && x>>lx == y>>lx {
		return x
	}
	// Strip the low bits until the prefixes agree; the ancestor is that
	// prefix followed by a 0 and then ones.
	xn, yn := uint32(x), uint32(y)
	k := uint32(0)
	for xn != yn {
		xn >>= 1
		yn >>= 1
		k++
	}
	return NodeIndex(xn<<k + (1<<(k-1) - 1))
}

// IsInSubtree reports whether y lies in the subtree rooted at x.
func IsInSubtree(x, y NodeIndex) bool {
	k := Level(x)
	lo := uint32(x) - (1<<k - 1)
	hi := uint32(x) + (1<<k - 1)
	return lo <= uint32(y) && uint32(y) <= hi
}
