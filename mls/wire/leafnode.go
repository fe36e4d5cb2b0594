package wire

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/treemath"
)

// LeafNode describes a member at a leaf of the ratchet tree, or the member a
// KeyPackage would add (RFC 9420 §7.2). Lifetime is meaningful for
// SourceKeyPackage, ParentHash for SourceCommit.
type LeafNode struct {
	EncryptionKey []byte
	SignatureKey  []byte
	Credential    Credential
	Capabilities  Capabilities
	Source        LeafNodeSource
	Lifetime      Lifetime
	ParentHash    []byte
	Extensions    Extensions
	Signature     []byte
}

const leafNodeLabel = "LeafNodeTBS"

// MarshalMLS implements codec.Marshaler.
func (l *LeafNode) MarshalMLS(w *codec.Writer) {
	l.marshalContent(w)
	w.Opaque(l.Signature)
}

func (l *LeafNode) marshalContent(w *codec.Writer) {
	w.Opaque(l.EncryptionKey)
	w.Opaque(l.SignatureKey)
	l.Credential.MarshalMLS(w)
	l.Capabilities.MarshalMLS(w)
	w.Uint8(uint8(l.Source))
	switch l.Source {
	case SourceKeyPackage:
		l.Lifetime.MarshalMLS(w)
	case SourceCommit:
		w.Opaque(l.ParentHash)
	}
	l.Extensions.MarshalMLS(w)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (l *LeafNode) UnmarshalMLS(r *codec.Reader) {
	l.EncryptionKey = r.Opaque()
	l.SignatureKey = r.Opaque()
	l.Credential.UnmarshalMLS(r)
	l.Capabilities.UnmarshalMLS(r)
	l.Source = LeafNodeSource(r.Uint8())
	switch l.Source {
	case SourceKeyPackage:
		l.Lifetime.UnmarshalMLS(r)
	case SourceUpdate:
	case SourceCommit:
		l.ParentHash = r.Opaque()
	default:
		unknown(r, "leaf node source", uint64(l.Source))
	}
	l.Extensions.UnmarshalMLS(r)
	l.Signature = r.Opaque()
}

// TBS is the LeafNodeTBS encoding the signature covers. groupID and leaf are
// the group context that update and commit leaves are signed in; they are
// ignored for key package leaves.
func (l *LeafNode) TBS(groupID []byte, leaf treemath.LeafIndex) []byte {
	var w codec.Writer
	l.marshalContent(&w)
	if l.Source == SourceUpdate || l.Source == SourceCommit {
		w.Opaque(groupID)
		w.Uint32(uint32(leaf))
	}
	return w.Bytes()
}

// Sign sets the signature with the signature private key priv. groupID
// must be set for update and commit leaves.
func (l *LeafNode) Sign(s *ciphersuite.Suite, priv, groupID []byte, leaf treemath.LeafIndex) error {
	if l.Source != SourceKeyPackage && groupID == nil {
		return fmt.Errorf("signing leaf node: %w", ErrMissingContext)
	}
	sig, err := s.SignWithLabel(priv, leafNodeLabel, l.TBS(groupID, leaf))
	if err != nil {
		return fmt.Errorf("signing leaf node: %w", err)
	}
	l.Signature = sig
	return nil
}

// Verify checks the signature with the leaf's own signature key. groupID
// must be set for update and commit leaves.
func (l *LeafNode) Verify(s *ciphersuite.Suite, groupID []byte, leaf treemath.LeafIndex) error {
	if l.Source != SourceKeyPackage && groupID == nil {
		return fmt.Errorf("verifying leaf node: %w", ErrMissingContext)
	}
	if err := s.VerifyWithLabel(l.SignatureKey, leafNodeLabel, l.TBS(groupID, leaf), l.Signature); err != nil {
		return fmt.Errorf("verifying leaf node signature: %w: %w", ErrInvalidSignature, err)
	}
	return nil
}
