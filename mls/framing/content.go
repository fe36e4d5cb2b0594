// Package framing protects MLS messages (RFC 9420 §6): the signature over
// FramedContentTBS, the PublicMessage membership tag, PrivateMessage
// encryption with its sender data and padding, and the transcript hashes
// and confirmation tag that chain commits (§8.2).
//
// The message structs themselves (wire.FramedContent, wire.PublicMessage,
// wire.PrivateMessage) are mls/wire's; this package adds
// AuthenticatedContent, the form in which a message is signed, verified and
// fed to the transcript, and the cryptography around them. Group contexts
// are passed TLS-encoded, as a group encodes its context once per epoch.
// Checking who may send what (a sender's leaf and key, the epoch) is the
// group's job.
package framing

import (
	"crypto/hmac"
	"errors"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// Sentinel errors.
var (
	// ErrInvalidSignature means the FramedContentTBS signature did not verify.
	ErrInvalidSignature = errors.New("framing: invalid signature")
	// ErrInvalidMembershipTag means a PublicMessage's membership tag is
	// missing or wrong.
	ErrInvalidMembershipTag = errors.New("framing: invalid membership tag")
	// ErrInvalidConfirmationTag means a commit's confirmation tag is wrong.
	ErrInvalidConfirmationTag = errors.New("framing: invalid confirmation tag")
	// ErrInvalidPadding means a PrivateMessage's padding has a non-zero byte.
	ErrInvalidPadding = errors.New("framing: non-zero padding")
	// ErrDecrypt means a PrivateMessage or its sender data did not decrypt.
	ErrDecrypt = errors.New("framing: decryption failed")
	// ErrInvalidSender means a sender that the wire format does not allow
	// (a PrivateMessage is only ever from a member).
	ErrInvalidSender = errors.New("framing: sender not allowed for this wire format")
)

// AuthenticatedContent is a FramedContent with its wire format and
// authentication data (§6.1).
//
// Signing, verifying, tagging and hashing encode Content once and keep the
// encoding, so Content must not change after the first of them.
type AuthenticatedContent struct {
	WireFormat wire.WireFormat
	Content    wire.FramedContent
	Auth       wire.FramedContentAuthData

	enc []byte // encoded Content, once needed
}

// encoded is the TLS encoding of a.Content, computed once: a commit with a
// path to a large group is tens of kilobytes, and the signature, membership
// tag and transcript hash all cover it.
func (a *AuthenticatedContent) encoded() []byte {
	if a.enc == nil {
		a.enc = codec.Marshal(&a.Content)
	}
	return a.enc
}

// MarshalMLS implements codec.Marshaler.
func (a *AuthenticatedContent) MarshalMLS(w *codec.Writer) {
	w.Uint16(uint16(a.WireFormat))
	w.Raw(a.encoded())
	a.Auth.Marshal(w, a.Content.ContentType)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (a *AuthenticatedContent) UnmarshalMLS(r *codec.Reader) {
	a.WireFormat = wire.WireFormat(r.Uint16())
	a.Content.UnmarshalMLS(r)
	a.Auth.Unmarshal(r, a.Content.ContentType)
	a.enc = nil
}

const tbsLabel = "FramedContentTBS"

// needsContext reports whether FramedContentTBS carries the group context:
// for members and external committers, who know it.
func needsContext(t wire.SenderType) bool {
	return t == wire.SenderMember || t == wire.SenderNewMemberCommit
}

// marshalTBS writes FramedContentTBS.
func (a *AuthenticatedContent) marshalTBS(w *codec.Writer, groupContext []byte) {
	w.Uint16(uint16(wire.MLS10))
	w.Uint16(uint16(a.WireFormat))
	w.Raw(a.encoded())
	if needsContext(a.Content.Sender.Type) {
		w.Raw(groupContext)
	}
}

func (a *AuthenticatedContent) tbs(groupContext []byte) []byte {
	w := codec.NewWriter(make([]byte, 0, 4+len(a.encoded())+len(groupContext)))
	a.marshalTBS(w, groupContext)
	return w.Bytes()
}

// Sign sets the signature over FramedContentTBS with the sender's signature
// private key. groupContext (encoded) is used for member and
// new_member_commit senders and may be nil for others.
func (a *AuthenticatedContent) Sign(s *ciphersuite.Suite, priv, groupContext []byte) error {
	sig, err := s.SignWithLabel(priv, tbsLabel, a.tbs(groupContext))
	if err != nil {
		return fmt.Errorf("signing framed content: %w", err)
	}
	a.Auth.Signature = sig
	return nil
}

// Verify checks the signature with the sender's signature public key.
func (a *AuthenticatedContent) Verify(s *ciphersuite.Suite, pub, groupContext []byte) error {
	if err := s.VerifyWithLabel(pub, tbsLabel, a.tbs(groupContext), a.Auth.Signature); err != nil {
		return fmt.Errorf("verifying framed content: %w: %w", ErrInvalidSignature, err)
	}
	return nil
}

// MembershipTag is MAC(membership_key, AuthenticatedContentTBM) (§6.2).
func (a *AuthenticatedContent) MembershipTag(s *ciphersuite.Suite, membershipKey, groupContext []byte) []byte {
	// Streamed into the MAC rather than copied into one buffer.
	m := s.NewMAC(membershipKey)
	m.Write([]byte{byte(wire.MLS10 >> 8), byte(wire.MLS10), byte(a.WireFormat >> 8), byte(a.WireFormat)})
	m.Write(a.encoded())
	if needsContext(a.Content.Sender.Type) {
		m.Write(groupContext)
	}
	var w codec.Writer
	a.Auth.Marshal(&w, a.Content.ContentType)
	m.Write(w.Bytes())
	return m.Sum(nil)
}

// PublicMessage frames a as a PublicMessage, with the membership tag when
// the sender is a member. a must have been signed with WireFormat
// PublicMessage.
func (a *AuthenticatedContent) PublicMessage(s *ciphersuite.Suite, membershipKey, groupContext []byte) *wire.PublicMessage {
	m := &wire.PublicMessage{Content: a.Content, Auth: a.Auth}
	if a.Content.Sender.Type == wire.SenderMember {
		m.MembershipTag = a.MembershipTag(s, membershipKey, groupContext)
	}
	return m
}

// FromPublicMessage returns the AuthenticatedContent of m, after checking
// its membership tag if the sender is a member (membershipKey and
// groupContext are then those of the epoch m claims). The signature is not
// checked here: the caller finds the sender's key and calls Verify.
func FromPublicMessage(s *ciphersuite.Suite, m *wire.PublicMessage, membershipKey, groupContext []byte) (*AuthenticatedContent, error) {
	a := &AuthenticatedContent{WireFormat: wire.WireFormatPublicMessage, Content: m.Content, Auth: m.Auth}
	if m.Content.Sender.Type == wire.SenderMember {
		if !hmac.Equal(a.MembershipTag(s, membershipKey, groupContext), m.MembershipTag) {
			return nil, ErrInvalidMembershipTag
		}
	}
	return a, nil
}
