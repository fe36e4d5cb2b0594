package wire

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
)

// KeyPackage is a client's signed offer to be added to groups (RFC 9420 §10).
type KeyPackage struct {
	Version     ProtocolVersion
	CipherSuite ciphersuite.ID
	InitKey     []byte
	LeafNode    LeafNode
	Extensions  Extensions
	Signature   []byte
}

const (
	keyPackageLabel    = "KeyPackageTBS"
	keyPackageRefLabel = "MLS 1.0 KeyPackage Reference"
)

// MarshalMLS implements codec.Marshaler.
func (k *KeyPackage) MarshalMLS(w *codec.Writer) {
	k.marshalTBS(w)
	w.Opaque(k.Signature)
}

func (k *KeyPackage) marshalTBS(w *codec.Writer) {
	w.Uint16(uint16(k.Version))
	w.Uint16(uint16(k.CipherSuite))
	w.Opaque(k.InitKey)
	k.LeafNode.MarshalMLS(w)
	k.Extensions.MarshalMLS(w)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (k *KeyPackage) UnmarshalMLS(r *codec.Reader) {
	k.Version = ProtocolVersion(r.Uint16())
	k.CipherSuite = ciphersuite.ID(r.Uint16())
	k.InitKey = r.Opaque()
	k.LeafNode.UnmarshalMLS(r)
	k.Extensions.UnmarshalMLS(r)
	k.Signature = r.Opaque()
}

// TBS is the KeyPackageTBS encoding the signature covers.
func (k *KeyPackage) TBS() []byte {
	var w codec.Writer
	k.marshalTBS(&w)
	return w.Bytes()
}

// Ref is the KeyPackageRef: RefHash("MLS 1.0 KeyPackage Reference", k).
func (k *KeyPackage) Ref(s *ciphersuite.Suite) []byte {
	return s.RefHash(keyPackageRefLabel, codec.Marshal(k))
}

// Sign sets the signature with the signature private key priv (the one
// matching LeafNode.SignatureKey).
func (k *KeyPackage) Sign(s *ciphersuite.Suite, priv []byte) error {
	sig, err := s.SignWithLabel(priv, keyPackageLabel, k.TBS())
	if err != nil {
		return fmt.Errorf("signing key package: %w", err)
	}
	k.Signature = sig
	return nil
}

// Verify checks the key package's signature and its leaf node's, and that
// the leaf node is a key package leaf. Other checks of RFC 9420 §10.1
// (version, suite, capabilities, lifetime, init key ≠ encryption key) need
// the group, so the caller makes them.
func (k *KeyPackage) Verify(s *ciphersuite.Suite) error {
	if k.LeafNode.Source != SourceKeyPackage {
		return fmt.Errorf("verifying key package: leaf node source %d: %w", k.LeafNode.Source, ErrWrongSource)
	}
	if err := s.VerifyWithLabel(k.LeafNode.SignatureKey, keyPackageLabel, k.TBS(), k.Signature); err != nil {
		return fmt.Errorf("verifying key package signature: %w: %w", ErrInvalidSignature, err)
	}
	if err := k.LeafNode.Verify(s, nil, 0); err != nil {
		return fmt.Errorf("verifying key package: %w", err)
	}
	return nil
}
