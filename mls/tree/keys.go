package tree

import (
	"bytes"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/codec"
	tm "github.com/lmbridge/lmbridge/mls/treemath"
)

// PrivateKeys are the HPKE private keys a member holds: its leaf's and
// those of the parent nodes on its direct path whose path secrets it
// learned (the tree invariant of RFC 9420 §4.2).
type PrivateKeys struct {
	leaf tm.LeafIndex
	keys []nodeKey
}

type nodeKey struct {
	node tm.NodeIndex
	priv []byte
}

// NewPrivateKeys starts the private state of the member at leaf with its
// leaf's HPKE private key.
func NewPrivateKeys(leaf tm.LeafIndex, leafPriv []byte) *PrivateKeys {
	return &PrivateKeys{leaf: leaf, keys: []nodeKey{{leaf.Node(), leafPriv}}}
}

// LeafIndex is the member's leaf.
func (k *PrivateKeys) LeafIndex() tm.LeafIndex { return k.leaf }

// Get is the private key of node x, or nil.
func (k *PrivateKeys) Get(x tm.NodeIndex) []byte {
	for _, e := range k.keys {
		if e.node == x {
			return e.priv
		}
	}
	return nil
}

// Set stores the private key of node x.
func (k *PrivateKeys) Set(x tm.NodeIndex, priv []byte) {
	for i := range k.keys {
		if k.keys[i].node == x {
			k.keys[i].priv = priv
			return
		}
	}
	k.keys = append(k.keys, nodeKey{x, priv})
}

// Clone returns an independent copy.
func (k *PrivateKeys) Clone() *PrivateKeys {
	return &PrivateKeys{leaf: k.leaf, keys: append([]nodeKey(nil), k.keys...)}
}

// Nodes lists the nodes whose private keys are held.
func (k *PrivateKeys) Nodes() []tm.NodeIndex {
	out := make([]tm.NodeIndex, len(k.keys))
	for i, e := range k.keys {
		out[i] = e.node
	}
	return out
}

// Prune forgets the keys of nodes that are blank in t, beyond it or not on
// the member's direct path, as RFC 9420 requires once they are replaced.
func (k *PrivateKeys) Prune(t *Tree) {
	kept := k.keys[:0]
	leaf := k.leaf.Node()
	for _, e := range k.keys {
		if !t.IsBlank(e.node) && tm.IsInSubtree(e.node, leaf) {
			kept = append(kept, e)
		}
	}
	clear(k.keys[len(kept):])
	k.keys = kept
}

// Check verifies that every held private key matches the public key of its
// node in t.
func (k *PrivateKeys) Check(t *Tree) error {
	for _, e := range k.keys {
		pub, err := t.suite.HPKEPublicKey(e.priv)
		if err != nil {
			return fmt.Errorf("checking private key of node %d: %w", e.node, err)
		}
		if !bytes.Equal(pub, t.EncryptionKey(e.node)) {
			return fmt.Errorf("%w: private key of node %d does not match the tree", ErrUpdatePath, e.node)
		}
	}
	return nil
}

// ImportPathSecret derives the private keys of the nodes from x up to the
// root that are in the committer's filtered direct path (the non-blank
// ones, after the commit is applied), from the path secret of node x: a
// joiner does this with GroupSecrets.path_secret, at the lowest common
// ancestor of its leaf and the committer's. It checks each derived public
// key against t and returns the commit secret.
func (k *PrivateKeys) ImportPathSecret(t *Tree, x tm.NodeIndex, pathSecret []byte) ([]byte, error) {
	n := t.NumLeaves()
	if uint64(x) >= uint64(t.Width()) || tm.IsLeaf(x) || !tm.IsInSubtree(x, k.leaf.Node()) {
		return nil, fmt.Errorf("%w: node %d is not above leaf %d", ErrUpdatePath, x, k.leaf)
	}
	var nodes []tm.NodeIndex
	for y := x; ; y = tm.Parent(y, n) {
		if !t.IsBlank(y) {
			nodes = append(nodes, y)
		}
		if y == tm.Root(n) {
			break
		}
	}
	if len(nodes) == 0 || nodes[0] != x {
		return nil, fmt.Errorf("%w: node %d is blank", ErrUpdatePath, x)
	}
	return k.derivePath(t, nodes, pathSecret)
}

// derivePath derives and checks the keys of nodes (leaf to root, the tail
// of a filtered direct path) from the first node's path secret, stores
// them, and returns the commit secret.
func (k *PrivateKeys) derivePath(t *Tree, nodes []tm.NodeIndex, secret []byte) ([]byte, error) {
	s := t.suite
	privs := make([][]byte, len(nodes))
	for i, x := range nodes {
		priv, pub, err := s.DeriveKeyPair(s.DeriveSecret(secret, "node"))
		if err != nil {
			return nil, fmt.Errorf("deriving key of node %d: %w", x, err)
		}
		if !bytes.Equal(pub, t.EncryptionKey(x)) {
			return nil, fmt.Errorf("%w: derived key of node %d differs from the path's", ErrUpdatePath, x)
		}
		privs[i] = priv
		secret = s.DeriveSecret(secret, "path")
	}
	for i, x := range nodes {
		k.Set(x, privs[i])
	}
	return secret, nil
}

// MarshalMLS encodes the keys for storage: the leaf index, then each node
// index with its private key. The encoding holds secrets.
func (k *PrivateKeys) MarshalMLS(w *codec.Writer) {
	w.Uint32(uint32(k.leaf))
	w.Vector(func(w *codec.Writer) {
		for _, e := range k.keys {
			w.Uint32(uint32(e.node))
			w.Opaque(e.priv)
		}
	})
}

// UnmarshalMLS decodes what MarshalMLS wrote.
func (k *PrivateKeys) UnmarshalMLS(r *codec.Reader) {
	k.leaf = tm.LeafIndex(r.Uint32())
	k.keys = nil
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			x := tm.NodeIndex(r.Uint32())
			k.keys = append(k.keys, nodeKey{x, append([]byte(nil), r.Opaque()...)})
		}
	})
}
