package wire

import (
	"errors"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/codec"
)

// ErrDuplicateExtension means an extension list names a type twice.
var ErrDuplicateExtension = errors.New("wire: duplicate extension")

// Extension is one entry of an extension list (RFC 9420 §13); Data is the
// encoded extension body.
type Extension struct {
	Type ExtensionType
	Data []byte
}

// MarshalMLS implements codec.Marshaler.
func (e *Extension) MarshalMLS(w *codec.Writer) {
	w.Uint16(uint16(e.Type))
	w.Opaque(e.Data)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (e *Extension) UnmarshalMLS(r *codec.Reader) {
	e.Type = ExtensionType(r.Uint16())
	e.Data = r.Opaque()
}

// NewExtension encodes body as an extension of type t.
func NewExtension(t ExtensionType, body codec.Marshaler) Extension {
	return Extension{Type: t, Data: codec.Marshal(body)}
}

// Extensions is an extension list.
type Extensions []Extension

// MarshalMLS implements codec.Marshaler.
func (e *Extensions) MarshalMLS(w *codec.Writer) { writeList(w, *e) }

// UnmarshalMLS implements codec.Unmarshaler.
func (e *Extensions) UnmarshalMLS(r *codec.Reader) { *e = readList[Extension](r) }

// Find returns the data of the extension of type t.
func (e Extensions) Find(t ExtensionType) ([]byte, bool) {
	for i := range e {
		if e[i].Type == t {
			return e[i].Data, true
		}
	}
	return nil, false
}

// Decode finds the extension of type t and decodes its data into v. It
// reports false, nil when the list has no such extension.
func (e Extensions) Decode(t ExtensionType, v codec.Unmarshaler) (bool, error) {
	data, ok := e.Find(t)
	if !ok {
		return false, nil
	}
	if err := codec.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("decoding extension %d: %w", t, err)
	}
	return true, nil
}

// CheckUnique returns ErrDuplicateExtension if a type appears twice.
func (e Extensions) CheckUnique() error {
	for i := range e {
		for j := i + 1; j < len(e); j++ {
			if e[i].Type == e[j].Type {
				return fmt.Errorf("%w: type %d", ErrDuplicateExtension, e[i].Type)
			}
		}
	}
	return nil
}

// ApplicationID is the application_id extension body: an opaque identifier
// for the client, carried in its leaf node.
type ApplicationID []byte

// MarshalMLS implements codec.Marshaler.
func (a *ApplicationID) MarshalMLS(w *codec.Writer) { w.Opaque(*a) }

// UnmarshalMLS implements codec.Unmarshaler.
func (a *ApplicationID) UnmarshalMLS(r *codec.Reader) { *a = r.Opaque() }

// RequiredCapabilities is the required_capabilities extension body: what
// every member of a group must support.
type RequiredCapabilities struct {
	Extensions  []ExtensionType
	Proposals   []ProposalType
	Credentials []CredentialType
}

// MarshalMLS implements codec.Marshaler.
func (c *RequiredCapabilities) MarshalMLS(w *codec.Writer) {
	writeUint16s(w, c.Extensions)
	writeUint16s(w, c.Proposals)
	writeUint16s(w, c.Credentials)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (c *RequiredCapabilities) UnmarshalMLS(r *codec.Reader) {
	c.Extensions = readUint16s[ExtensionType](r)
	c.Proposals = readUint16s[ProposalType](r)
	c.Credentials = readUint16s[CredentialType](r)
}

// SatisfiedBy reports whether c lists everything that is required. The
// extension and proposal types RFC 9420 defines count as supported.
func (c *RequiredCapabilities) SatisfiedBy(caps *Capabilities) bool {
	for _, t := range c.Extensions {
		if !(t >= ExtensionApplicationID && t <= ExtensionExternalSenders) && !caps.SupportsExtension(t) {
			return false
		}
	}
	for _, t := range c.Proposals {
		if !(t >= ProposalAdd && t <= ProposalGroupContextExtensions) && !caps.SupportsProposal(t) {
			return false
		}
	}
	for _, t := range c.Credentials {
		if !caps.SupportsCredential(t) {
			return false
		}
	}
	return true
}

// ExternalPub is the external_pub extension body: the HPKE public key to
// which a new member encrypts an external init (RFC 9420 §12.4.3.2).
type ExternalPub struct {
	PublicKey []byte
}

// MarshalMLS implements codec.Marshaler.
func (e *ExternalPub) MarshalMLS(w *codec.Writer) { w.Opaque(e.PublicKey) }

// UnmarshalMLS implements codec.Unmarshaler.
func (e *ExternalPub) UnmarshalMLS(r *codec.Reader) { e.PublicKey = r.Opaque() }

// ExternalSender is a party outside the group allowed to send proposals.
type ExternalSender struct {
	SignatureKey []byte
	Credential   Credential
}

// MarshalMLS implements codec.Marshaler.
func (e *ExternalSender) MarshalMLS(w *codec.Writer) {
	w.Opaque(e.SignatureKey)
	e.Credential.MarshalMLS(w)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (e *ExternalSender) UnmarshalMLS(r *codec.Reader) {
	e.SignatureKey = r.Opaque()
	e.Credential.UnmarshalMLS(r)
}

// ExternalSenders is the external_senders extension body; a Sender of type
// external names an entry by its index.
type ExternalSenders []ExternalSender

// MarshalMLS implements codec.Marshaler.
func (e *ExternalSenders) MarshalMLS(w *codec.Writer) { writeList(w, *e) }

// UnmarshalMLS implements codec.Unmarshaler.
func (e *ExternalSenders) UnmarshalMLS(r *codec.Reader) { *e = readList[ExternalSender](r) }
