package wire

import (
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/treemath"
)

// ParentNode is an interior node of the ratchet tree (RFC 9420 §7.1).
// UnmergedLeaves is sorted in increasing order.
type ParentNode struct {
	EncryptionKey  []byte
	ParentHash     []byte
	UnmergedLeaves []treemath.LeafIndex
}

// MarshalMLS implements codec.Marshaler.
func (p *ParentNode) MarshalMLS(w *codec.Writer) {
	w.Opaque(p.EncryptionKey)
	w.Opaque(p.ParentHash)
	w.Vector(func(w *codec.Writer) {
		for _, l := range p.UnmergedLeaves {
			w.Uint32(uint32(l))
		}
	})
}

// UnmarshalMLS implements codec.Unmarshaler.
func (p *ParentNode) UnmarshalMLS(r *codec.Reader) {
	p.EncryptionKey = r.Opaque()
	p.ParentHash = r.Opaque()
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			p.UnmergedLeaves = append(p.UnmergedLeaves, treemath.LeafIndex(r.Uint32()))
		}
	})
}

// Node is a non-blank ratchet tree node: exactly one of Leaf and Parent is
// set.
type Node struct {
	Leaf   *LeafNode
	Parent *ParentNode
}

// MarshalMLS implements codec.Marshaler.
func (n *Node) MarshalMLS(w *codec.Writer) {
	if n.Leaf != nil {
		w.Uint8(uint8(NodeTypeLeaf))
		n.Leaf.MarshalMLS(w)
		return
	}
	w.Uint8(uint8(NodeTypeParent))
	n.Parent.MarshalMLS(w)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (n *Node) UnmarshalMLS(r *codec.Reader) {
	switch t := NodeType(r.Uint8()); t {
	case NodeTypeLeaf:
		n.Leaf = new(LeafNode)
		n.Leaf.UnmarshalMLS(r)
	case NodeTypeParent:
		n.Parent = new(ParentNode)
		n.Parent.UnmarshalMLS(r)
	default:
		unknown(r, "node type", uint64(t))
	}
}

// RatchetTree is the ratchet_tree extension body (RFC 9420 §12.4.3.3): the
// tree's nodes in array order, nil for a blank node, without the blank
// nodes after the last non-blank one.
type RatchetTree []*Node

// MarshalMLS implements codec.Marshaler.
func (t *RatchetTree) MarshalMLS(w *codec.Writer) {
	w.Vector(func(w *codec.Writer) {
		for _, n := range *t {
			w.Optional(n != nil, func(w *codec.Writer) { n.MarshalMLS(w) })
		}
	})
}

// UnmarshalMLS implements codec.Unmarshaler.
func (t *RatchetTree) UnmarshalMLS(r *codec.Reader) {
	var nodes []*Node
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			if !r.Optional() {
				nodes = append(nodes, nil)
				continue
			}
			n := new(Node)
			n.UnmarshalMLS(r)
			nodes = append(nodes, n)
		}
	})
	*t = nodes
}
