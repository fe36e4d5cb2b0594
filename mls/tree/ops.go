package tree

import (
	"fmt"
	"slices"

	tm "github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// Add places leaf at the leftmost blank leaf, doubling the tree if there is
// none, and records it as unmerged on every non-blank parent above it (RFC
// 9420 §12.1.1). It returns the new member's leaf index.
func (t *Tree) Add(leaf *wire.LeafNode) tm.LeafIndex {
	l := tm.LeafIndex(t.NumLeaves())
	for i := 0; i < len(t.nodes); i += 2 {
		if t.nodes[i].blank() {
			l = tm.LeafIndex(i / 2)
			break
		}
	}
	if uint32(l) == t.NumLeaves() {
		// Extend: the old tree becomes the left subtree of a new root.
		t.nodes = append(t.nodes, make([]node, len(t.nodes)+1)...)
	}
	n := t.NumLeaves()
	t.setNode(l.Node(), leaf, nil)
	for x := l.Node(); x != tm.Root(n); {
		x = tm.Parent(x, n)
		p := t.nodes[x].parent
		if p == nil {
			continue
		}
		unmerged := make([]tm.LeafIndex, 0, len(p.UnmergedLeaves)+1)
		unmerged = append(unmerged, p.UnmergedLeaves...)
		pos, _ := slices.BinarySearch(unmerged, l)
		unmerged = slices.Insert(unmerged, pos, l)
		t.nodes[x].parent = &wire.ParentNode{EncryptionKey: p.EncryptionKey, ParentHash: p.ParentHash, UnmergedLeaves: unmerged}
	}
	return l
}

// Update replaces the leaf node of member l and blanks its direct path (RFC
// 9420 §12.1.2).
func (t *Tree) Update(l tm.LeafIndex, leaf *wire.LeafNode) error {
	if err := t.checkMember(l); err != nil {
		return fmt.Errorf("updating: %w", err)
	}
	t.setNode(l.Node(), leaf, nil)
	t.blankDirectPath(l)
	return nil
}

// Remove blanks member l and its direct path, then truncates the tree while
// its right half is blank (RFC 9420 §12.1.3).
func (t *Tree) Remove(l tm.LeafIndex) error {
	if err := t.checkMember(l); err != nil {
		return fmt.Errorf("removing: %w", err)
	}
	t.setNode(l.Node(), nil, nil)
	t.blankDirectPath(l)
	t.truncate()
	return nil
}

func (t *Tree) blankDirectPath(l tm.LeafIndex) {
	n := t.NumLeaves()
	for x := l.Node(); x != tm.Root(n); {
		x = tm.Parent(x, n)
		t.nodes[x].leaf, t.nodes[x].parent = nil, nil
		t.nodes[x].hash = nil
	}
}

func (t *Tree) truncate() {
	for len(t.nodes) > 1 {
		half := (len(t.nodes) + 1) / 2
		for i := half; i < len(t.nodes); i += 2 {
			if t.nodes[i].leaf != nil {
				return
			}
		}
		// The right half's parents are blank too: a parent is set only
		// with a member below it, and removing a member blanks its path.
		clear(t.nodes[half-1:])
		t.nodes = t.nodes[:half-1]
	}
}
