package tree

import (
	"fmt"
)

// NodeHashes is the tree hash of every node's subtree, in node order
// (computing those not cached), so that a saved tree can be restored
// without re-hashing it (SetNodeHashes). The slices are shared with the
// tree; do not modify them.
func (t *Tree) NodeHashes() [][]byte {
	t.Hash()
	out := make([][]byte, len(t.nodes))
	for i := range t.nodes {
		out[i] = t.nodes[i].hash
	}
	return out
}

// SetNodeHashes installs node hashes that NodeHashes gave for this same
// tree (from storage the caller trusts, such as a group's saved state: a
// wrong hash would give the wrong tree hash). Empty entries stay to be
// computed.
func (t *Tree) SetNodeHashes(hashes [][]byte) error {
	if len(hashes) != len(t.nodes) {
		return fmt.Errorf("%w: %d node hashes for %d nodes", ErrMalformed, len(hashes), len(t.nodes))
	}
	n := t.suite.HashSize()
	for i, h := range hashes {
		if len(h) != 0 && len(h) != n {
			return fmt.Errorf("%w: node hash %d of %d bytes", ErrMalformed, i, len(h))
		}
	}
	for i, h := range hashes {
		if len(h) != 0 {
			t.nodes[i].hash = h
		}
	}
	return nil
}
