package wire

import "github.com/lmbridge/lmbridge/mls/codec"

// HPKECiphertext is the output of EncryptWithLabel (RFC 9420 §7.6).
type HPKECiphertext struct {
	KEMOutput  []byte
	Ciphertext []byte
}

// MarshalMLS implements codec.Marshaler.
func (c *HPKECiphertext) MarshalMLS(w *codec.Writer) {
	w.Opaque(c.KEMOutput)
	w.Opaque(c.Ciphertext)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (c *HPKECiphertext) UnmarshalMLS(r *codec.Reader) {
	c.KEMOutput = r.Opaque()
	c.Ciphertext = r.Opaque()
}

// UpdatePathNode is the new public key of one node of the committer's
// filtered direct path, with its path secret encrypted to each node of the
// copath child's resolution (RFC 9420 §7.6).
type UpdatePathNode struct {
	EncryptionKey       []byte
	EncryptedPathSecret []HPKECiphertext
}

// MarshalMLS implements codec.Marshaler.
func (n *UpdatePathNode) MarshalMLS(w *codec.Writer) {
	w.Opaque(n.EncryptionKey)
	writeList(w, n.EncryptedPathSecret)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (n *UpdatePathNode) UnmarshalMLS(r *codec.Reader) {
	n.EncryptionKey = r.Opaque()
	n.EncryptedPathSecret = readList[HPKECiphertext](r)
}

// UpdatePath is the committer's new leaf node and the new keys of its
// filtered direct path, leaf to root (RFC 9420 §7.6).
type UpdatePath struct {
	LeafNode LeafNode
	Nodes    []UpdatePathNode
}

// MarshalMLS implements codec.Marshaler.
func (p *UpdatePath) MarshalMLS(w *codec.Writer) {
	p.LeafNode.MarshalMLS(w)
	writeList(w, p.Nodes)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (p *UpdatePath) UnmarshalMLS(r *codec.Reader) {
	p.LeafNode.UnmarshalMLS(r)
	p.Nodes = readList[UpdatePathNode](r)
}
