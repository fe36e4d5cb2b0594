package tree

import (
	"bytes"
	"fmt"
	"slices"

	tm "github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// Verify makes the checks a joiner makes on the tree it is given (RFC 9420
// §12.4.3.1, §7.9.2, §7.3): every leaf node's signature in the group
// groupID, unique encryption and signature keys among members, sorted
// unmerged leaves that are members below their parent and recorded on every
// parent in between, and every non-blank parent node parent-hash valid. The
// caller compares Hash with the GroupInfo's tree hash and makes the checks
// that need the group (credentials, capabilities, lifetimes).
func (t *Tree) Verify(groupID []byte) error {
	if err := t.VerifyLeaves(groupID); err != nil {
		return err
	}
	if err := t.verifyUnmerged(); err != nil {
		return err
	}
	return t.VerifyParentHashes()
}

// VerifyLeaves checks every leaf node's signature and that no two members
// share an encryption or signature key.
func (t *Tree) VerifyLeaves(groupID []byte) error {
	encKeys := make(map[string]tm.NodeIndex)
	sigKeys := make(map[string]tm.LeafIndex)
	for i := 0; i < len(t.nodes); i++ {
		n := &t.nodes[i]
		key := t.EncryptionKey(tm.NodeIndex(i))
		if key == nil {
			continue
		}
		if j, ok := encKeys[string(key)]; ok {
			return fmt.Errorf("%w: encryption key of nodes %d and %d", ErrDuplicateKey, j, i)
		}
		encKeys[string(key)] = tm.NodeIndex(i)
		if n.leaf == nil {
			continue
		}
		l := tm.LeafIndex(i / 2)
		if j, ok := sigKeys[string(n.leaf.SignatureKey)]; ok {
			return fmt.Errorf("%w: signature key of leaves %d and %d", ErrDuplicateKey, j, l)
		}
		sigKeys[string(n.leaf.SignatureKey)] = l
		if err := n.leaf.Verify(t.suite, groupID, l); err != nil {
			return fmt.Errorf("%w: leaf %d: %w", ErrInvalidLeaf, l, err)
		}
	}
	return nil
}

func (t *Tree) verifyUnmerged() error {
	n := t.NumLeaves()
	for i := 1; i < len(t.nodes); i += 2 {
		p := t.nodes[i].parent
		if p == nil {
			continue
		}
		x := tm.NodeIndex(i)
		for k, l := range p.UnmergedLeaves {
			if k > 0 && p.UnmergedLeaves[k-1] >= l {
				return fmt.Errorf("%w: node %d: not sorted", ErrUnmergedLeaves, x)
			}
			if uint64(l) >= uint64(n) || !tm.IsInSubtree(x, l.Node()) || t.nodes[l.Node()].leaf == nil {
				return fmt.Errorf("%w: node %d: leaf %d is not a member below it", ErrUnmergedLeaves, x, l)
			}
			// Every non-blank parent between x and the leaf must hold the
			// leaf as unmerged too: it was added after all of them were set.
			for y := tm.Parent(l.Node(), n); y != x; y = tm.Parent(y, n) {
				if q := t.nodes[y].parent; q != nil && !slices.Contains(q.UnmergedLeaves, l) {
					return fmt.Errorf("%w: leaf %d is unmerged at node %d but not at node %d", ErrUnmergedLeaves, l, x, y)
				}
			}
		}
	}
	return nil
}

// VerifyParentHashes checks that every non-blank parent node is parent-hash
// valid (RFC 9420 §7.9.2), top down: each must have exactly one descendant
// whose parent_hash is valid with respect to it.
func (t *Tree) VerifyParentHashes() error {
	for i := 1; i < len(t.nodes); i += 2 {
		p := t.nodes[i].parent
		if p == nil {
			continue
		}
		x := tm.NodeIndex(i)
		found := 0
		for _, side := range [2]bool{false, true} {
			c, s := tm.Left(x), tm.Right(x)
			if side {
				c, s = s, c
			}
			found += t.validChildren(x, p, c, s)
		}
		if found != 1 {
			return fmt.Errorf("%w: node %d is the parent hash of %d descendants, want 1", ErrParentHash, x, found)
		}
	}
	return nil
}

// validChildren counts the nodes D in the resolution of c whose parent_hash
// is valid with respect to p at x, where s is p's other child.
func (t *Tree) validChildren(x tm.NodeIndex, p *wire.ParentNode, c, s tm.NodeIndex) int {
	res := t.Resolution(c)
	if len(res) == 0 {
		return 0
	}
	var want []byte
	count := 0
	for _, d := range res {
		ph := t.storedParentHash(d)
		if ph == nil {
			continue
		}
		if want == nil {
			want = t.parentHash(p.EncryptionKey, p.ParentHash, t.hashExcluding(s, p.UnmergedLeaves))
		}
		if !bytes.Equal(ph, want) {
			continue
		}
		// The unmerged leaves of p under c must be exactly the rest of
		// c's resolution: D and p were set by the same UpdatePath.
		var under []tm.NodeIndex
		for _, l := range p.UnmergedLeaves {
			if tm.IsInSubtree(c, l.Node()) {
				under = append(under, l.Node())
			}
		}
		rest := make([]tm.NodeIndex, 0, len(res)-1)
		for _, r := range res {
			if r != d {
				rest = append(rest, r)
			}
		}
		slices.Sort(rest)
		slices.Sort(under)
		if slices.Equal(rest, under) {
			count++
		}
	}
	return count
}

// storedParentHash is the parent_hash field of node d: a parent's, or a
// commit leaf's; nil for other leaves.
func (t *Tree) storedParentHash(d tm.NodeIndex) []byte {
	n := &t.nodes[d]
	switch {
	case n.parent != nil:
		return n.parent.ParentHash
	case n.leaf != nil && n.leaf.Source == wire.SourceCommit:
		if n.leaf.ParentHash == nil {
			return []byte{}
		}
		return n.leaf.ParentHash
	}
	return nil
}
