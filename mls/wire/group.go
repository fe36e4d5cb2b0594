package wire

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/treemath"
)

// GroupContext summarizes a group's state in an epoch (RFC 9420 §8.1).
type GroupContext struct {
	Version                 ProtocolVersion
	CipherSuite             ciphersuite.ID
	GroupID                 []byte
	Epoch                   uint64
	TreeHash                []byte
	ConfirmedTranscriptHash []byte
	Extensions              Extensions
}

// MarshalMLS implements codec.Marshaler.
func (g *GroupContext) MarshalMLS(w *codec.Writer) {
	w.Uint16(uint16(g.Version))
	w.Uint16(uint16(g.CipherSuite))
	w.Opaque(g.GroupID)
	w.Uint64(g.Epoch)
	w.Opaque(g.TreeHash)
	w.Opaque(g.ConfirmedTranscriptHash)
	g.Extensions.MarshalMLS(w)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (g *GroupContext) UnmarshalMLS(r *codec.Reader) {
	g.Version = ProtocolVersion(r.Uint16())
	g.CipherSuite = ciphersuite.ID(r.Uint16())
	g.GroupID = r.Opaque()
	g.Epoch = r.Uint64()
	g.TreeHash = r.Opaque()
	g.ConfirmedTranscriptHash = r.Opaque()
	g.Extensions.UnmarshalMLS(r)
}

// GroupInfo is what a joiner needs to know about a group, signed by a
// member (RFC 9420 §12.4.3).
type GroupInfo struct {
	GroupContext    GroupContext
	Extensions      Extensions
	ConfirmationTag []byte
	Signer          treemath.LeafIndex
	Signature       []byte
}

const groupInfoLabel = "GroupInfoTBS"

// MarshalMLS implements codec.Marshaler.
func (g *GroupInfo) MarshalMLS(w *codec.Writer) {
	g.marshalTBS(w)
	w.Opaque(g.Signature)
}

func (g *GroupInfo) marshalTBS(w *codec.Writer) {
	g.GroupContext.MarshalMLS(w)
	g.Extensions.MarshalMLS(w)
	w.Opaque(g.ConfirmationTag)
	w.Uint32(uint32(g.Signer))
}

// UnmarshalMLS implements codec.Unmarshaler.
func (g *GroupInfo) UnmarshalMLS(r *codec.Reader) {
	g.GroupContext.UnmarshalMLS(r)
	g.Extensions.UnmarshalMLS(r)
	g.ConfirmationTag = r.Opaque()
	g.Signer = treemath.LeafIndex(r.Uint32())
	g.Signature = r.Opaque()
}

// TBS is the GroupInfoTBS encoding the signature covers.
func (g *GroupInfo) TBS() []byte {
	var w codec.Writer
	g.marshalTBS(&w)
	return w.Bytes()
}

// Sign sets the signature with the signer's signature private key.
func (g *GroupInfo) Sign(s *ciphersuite.Suite, priv []byte) error {
	sig, err := s.SignWithLabel(priv, groupInfoLabel, g.TBS())
	if err != nil {
		return fmt.Errorf("signing group info: %w", err)
	}
	g.Signature = sig
	return nil
}

// Verify checks the signature with the signer's signature public key (from
// its leaf node in the group's tree).
func (g *GroupInfo) Verify(s *ciphersuite.Suite, signerPub []byte) error {
	if err := s.VerifyWithLabel(signerPub, groupInfoLabel, g.TBS(), g.Signature); err != nil {
		return fmt.Errorf("verifying group info signature: %w: %w", ErrInvalidSignature, err)
	}
	return nil
}

// GroupSecrets is what a Welcome encrypts to each new member (RFC 9420
// §12.4.3.1). PathSecret is nil when absent.
type GroupSecrets struct {
	JoinerSecret []byte
	PathSecret   []byte
	PSKs         []PreSharedKeyID
}

// MarshalMLS implements codec.Marshaler.
func (g *GroupSecrets) MarshalMLS(w *codec.Writer) {
	w.Opaque(g.JoinerSecret)
	w.Optional(g.PathSecret != nil, func(w *codec.Writer) { w.Opaque(g.PathSecret) })
	writeList(w, g.PSKs)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (g *GroupSecrets) UnmarshalMLS(r *codec.Reader) {
	g.JoinerSecret = r.Opaque()
	if r.Optional() {
		if g.PathSecret = r.Opaque(); g.PathSecret == nil && r.Err() == nil {
			g.PathSecret = []byte{}
		}
	}
	g.PSKs = readList[PreSharedKeyID](r)
}

// EncryptedGroupSecrets is a new member's GroupSecrets, encrypted to the
// init key of its KeyPackage, which NewMember references.
type EncryptedGroupSecrets struct {
	NewMember             []byte
	EncryptedGroupSecrets HPKECiphertext
}

// MarshalMLS implements codec.Marshaler.
func (e *EncryptedGroupSecrets) MarshalMLS(w *codec.Writer) {
	w.Opaque(e.NewMember)
	e.EncryptedGroupSecrets.MarshalMLS(w)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (e *EncryptedGroupSecrets) UnmarshalMLS(r *codec.Reader) {
	e.NewMember = r.Opaque()
	e.EncryptedGroupSecrets.UnmarshalMLS(r)
}

// Welcome brings new members into a group (RFC 9420 §12.4.3.1).
type Welcome struct {
	CipherSuite        ciphersuite.ID
	Secrets            []EncryptedGroupSecrets
	EncryptedGroupInfo []byte
}

// MarshalMLS implements codec.Marshaler.
func (w *Welcome) MarshalMLS(wr *codec.Writer) {
	wr.Uint16(uint16(w.CipherSuite))
	writeList(wr, w.Secrets)
	wr.Opaque(w.EncryptedGroupInfo)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (w *Welcome) UnmarshalMLS(r *codec.Reader) {
	w.CipherSuite = ciphersuite.ID(r.Uint16())
	w.Secrets = readList[EncryptedGroupSecrets](r)
	w.EncryptedGroupInfo = r.Opaque()
}
