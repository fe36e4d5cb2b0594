package wire

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/treemath"
)

// Sender says who sent a FramedContent (RFC 9420 §6): a member by leaf
// index, an external sender by its index in the external_senders extension,
// or a new member (by proposal or external commit).
type Sender struct {
	Type          SenderType
	LeafIndex     treemath.LeafIndex
	ExternalIndex uint32
}

// MarshalMLS implements codec.Marshaler.
func (s *Sender) MarshalMLS(w *codec.Writer) {
	w.Uint8(uint8(s.Type))
	switch s.Type {
	case SenderMember:
		w.Uint32(uint32(s.LeafIndex))
	case SenderExternal:
		w.Uint32(s.ExternalIndex)
	}
}

// UnmarshalMLS implements codec.Unmarshaler.
func (s *Sender) UnmarshalMLS(r *codec.Reader) {
	s.Type = SenderType(r.Uint8())
	switch s.Type {
	case SenderMember:
		s.LeafIndex = treemath.LeafIndex(r.Uint32())
	case SenderExternal:
		s.ExternalIndex = r.Uint32()
	case SenderNewMemberProposal, SenderNewMemberCommit:
	default:
		unknown(r, "sender type", uint64(s.Type))
	}
}

// FramedContent is a message's content with its group, epoch and sender
// (RFC 9420 §6). ApplicationData, Proposal or Commit is set as ContentType
// says.
type FramedContent struct {
	GroupID           []byte
	Epoch             uint64
	Sender            Sender
	AuthenticatedData []byte
	ContentType       ContentType
	ApplicationData   []byte
	Proposal          Proposal
	Commit            *Commit
}

// MarshalMLS implements codec.Marshaler.
func (c *FramedContent) MarshalMLS(w *codec.Writer) {
	w.Opaque(c.GroupID)
	w.Uint64(c.Epoch)
	c.Sender.MarshalMLS(w)
	w.Opaque(c.AuthenticatedData)
	c.MarshalBody(w)
}

// MarshalBody writes the content type and the content it selects, the part
// of a FramedContent that PrivateMessageContent also carries.
func (c *FramedContent) MarshalBody(w *codec.Writer) {
	w.Uint8(uint8(c.ContentType))
	c.marshalContent(w)
}

func (c *FramedContent) marshalContent(w *codec.Writer) {
	switch c.ContentType {
	case ContentApplication:
		w.Opaque(c.ApplicationData)
	case ContentProposal:
		MarshalProposal(w, c.Proposal)
	case ContentCommit:
		c.Commit.MarshalMLS(w)
	}
}

// UnmarshalMLS implements codec.Unmarshaler.
func (c *FramedContent) UnmarshalMLS(r *codec.Reader) {
	c.GroupID = r.Opaque()
	c.Epoch = r.Uint64()
	c.Sender.UnmarshalMLS(r)
	c.AuthenticatedData = r.Opaque()
	c.ContentType = ContentType(r.Uint8())
	c.UnmarshalContent(r)
}

// UnmarshalContent reads the content that c.ContentType selects (for
// PrivateMessageContent, whose content type travels outside the
// ciphertext).
func (c *FramedContent) UnmarshalContent(r *codec.Reader) {
	switch c.ContentType {
	case ContentApplication:
		c.ApplicationData = r.Opaque()
	case ContentProposal:
		c.Proposal = UnmarshalProposal(r)
	case ContentCommit:
		c.Commit = new(Commit)
		c.Commit.UnmarshalMLS(r)
	default:
		unknown(r, "content type", uint64(c.ContentType))
	}
}

// FramedContentAuthData authenticates a FramedContent: the sender's
// signature, and for a commit the confirmation tag.
type FramedContentAuthData struct {
	Signature       []byte
	ConfirmationTag []byte
}

// Marshal writes the auth data of content of type ct.
func (a *FramedContentAuthData) Marshal(w *codec.Writer, ct ContentType) {
	w.Opaque(a.Signature)
	if ct == ContentCommit {
		w.Opaque(a.ConfirmationTag)
	}
}

// Unmarshal reads the auth data of content of type ct.
func (a *FramedContentAuthData) Unmarshal(r *codec.Reader, ct ContentType) {
	a.Signature = r.Opaque()
	if ct == ContentCommit {
		a.ConfirmationTag = r.Opaque()
	}
}

// PublicMessage is a signed, unencrypted handshake message (RFC 9420 §6.2).
// MembershipTag is present when the sender is a member.
type PublicMessage struct {
	Content       FramedContent
	Auth          FramedContentAuthData
	MembershipTag []byte
}

// MarshalMLS implements codec.Marshaler.
func (m *PublicMessage) MarshalMLS(w *codec.Writer) {
	m.Content.MarshalMLS(w)
	m.Auth.Marshal(w, m.Content.ContentType)
	if m.Content.Sender.Type == SenderMember {
		w.Opaque(m.MembershipTag)
	}
}

// UnmarshalMLS implements codec.Unmarshaler.
func (m *PublicMessage) UnmarshalMLS(r *codec.Reader) {
	m.Content.UnmarshalMLS(r)
	m.Auth.Unmarshal(r, m.Content.ContentType)
	if m.Content.Sender.Type == SenderMember {
		m.MembershipTag = r.Opaque()
	}
}

// PrivateMessage is an encrypted message (RFC 9420 §6.3).
type PrivateMessage struct {
	GroupID             []byte
	Epoch               uint64
	ContentType         ContentType
	AuthenticatedData   []byte
	EncryptedSenderData []byte
	Ciphertext          []byte
}

// MarshalMLS implements codec.Marshaler.
func (m *PrivateMessage) MarshalMLS(w *codec.Writer) {
	w.Opaque(m.GroupID)
	w.Uint64(m.Epoch)
	w.Uint8(uint8(m.ContentType))
	w.Opaque(m.AuthenticatedData)
	w.Opaque(m.EncryptedSenderData)
	w.Opaque(m.Ciphertext)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (m *PrivateMessage) UnmarshalMLS(r *codec.Reader) {
	m.GroupID = r.Opaque()
	m.Epoch = r.Uint64()
	m.ContentType = ContentType(r.Uint8())
	if m.ContentType < ContentApplication || m.ContentType > ContentCommit {
		unknown(r, "content type", uint64(m.ContentType))
	}
	m.AuthenticatedData = r.Opaque()
	m.EncryptedSenderData = r.Opaque()
	m.Ciphertext = r.Opaque()
}

// MLSMessage is the envelope of every MLS message (RFC 9420 §6): exactly
// one of its fields is set.
type MLSMessage struct {
	PublicMessage  *PublicMessage
	PrivateMessage *PrivateMessage
	Welcome        *Welcome
	GroupInfo      *GroupInfo
	KeyPackage     *KeyPackage
}

// WireFormat is the wire format of the body that is set (0 if none).
func (m *MLSMessage) WireFormat() WireFormat {
	switch {
	case m.PublicMessage != nil:
		return WireFormatPublicMessage
	case m.PrivateMessage != nil:
		return WireFormatPrivateMessage
	case m.Welcome != nil:
		return WireFormatWelcome
	case m.GroupInfo != nil:
		return WireFormatGroupInfo
	case m.KeyPackage != nil:
		return WireFormatKeyPackage
	}
	return 0
}

// MarshalMLS implements codec.Marshaler.
func (m *MLSMessage) MarshalMLS(w *codec.Writer) {
	w.Uint16(uint16(MLS10))
	wf := m.WireFormat()
	w.Uint16(uint16(wf))
	switch wf {
	case WireFormatPublicMessage:
		m.PublicMessage.MarshalMLS(w)
	case WireFormatPrivateMessage:
		m.PrivateMessage.MarshalMLS(w)
	case WireFormatWelcome:
		m.Welcome.MarshalMLS(w)
	case WireFormatGroupInfo:
		m.GroupInfo.MarshalMLS(w)
	case WireFormatKeyPackage:
		m.KeyPackage.MarshalMLS(w)
	}
}

// UnmarshalMLS implements codec.Unmarshaler.
func (m *MLSMessage) UnmarshalMLS(r *codec.Reader) {
	if v := ProtocolVersion(r.Uint16()); v != MLS10 && r.Err() == nil {
		r.Fail(fmt.Errorf("%w: %d", ErrUnsupportedVersion, v))
		return
	}
	switch wf := WireFormat(r.Uint16()); wf {
	case WireFormatPublicMessage:
		m.PublicMessage = new(PublicMessage)
		m.PublicMessage.UnmarshalMLS(r)
	case WireFormatPrivateMessage:
		m.PrivateMessage = new(PrivateMessage)
		m.PrivateMessage.UnmarshalMLS(r)
	case WireFormatWelcome:
		m.Welcome = new(Welcome)
		m.Welcome.UnmarshalMLS(r)
	case WireFormatGroupInfo:
		m.GroupInfo = new(GroupInfo)
		m.GroupInfo.UnmarshalMLS(r)
	case WireFormatKeyPackage:
		m.KeyPackage = new(KeyPackage)
		m.KeyPackage.UnmarshalMLS(r)
	default:
		if r.Err() == nil {
			unknown(r, "wire format", uint64(wf))
		}
	}
}
