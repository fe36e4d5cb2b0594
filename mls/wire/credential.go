package wire

import (
	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
)

// Credential binds an identity to a signature key (RFC 9420 §5.3). Identity
// is set for CredentialBasic, Certificates (DER, leaf first) for
// CredentialX509.
type Credential struct {
	Type         CredentialType
	Identity     []byte
	Certificates [][]byte
}

// BasicCredential returns a basic credential for identity.
func BasicCredential(identity []byte) Credential {
	return Credential{Type: CredentialBasic, Identity: identity}
}

// MarshalMLS implements codec.Marshaler.
func (c *Credential) MarshalMLS(w *codec.Writer) {
	w.Uint16(uint16(c.Type))
	switch c.Type {
	case CredentialBasic:
		w.Opaque(c.Identity)
	case CredentialX509:
		w.Vector(func(w *codec.Writer) {
			for _, cert := range c.Certificates {
				w.Opaque(cert)
			}
		})
	}
}

// UnmarshalMLS implements codec.Unmarshaler.
func (c *Credential) UnmarshalMLS(r *codec.Reader) {
	c.Type = CredentialType(r.Uint16())
	switch c.Type {
	case CredentialBasic:
		c.Identity = r.Opaque()
	case CredentialX509:
		r.Vector(func(r *codec.Reader) {
			for !r.Empty() {
				c.Certificates = append(c.Certificates, r.Opaque())
			}
		})
	default:
		unknown(r, "credential type", uint64(c.Type))
	}
}

// Capabilities lists what a client supports (RFC 9420 §7.2). Proposal and
// extension types the RFC defines need not be listed; unknown values (such
// as GREASE) are kept and ignored.
type Capabilities struct {
	Versions     []ProtocolVersion
	CipherSuites []ciphersuite.ID
	Extensions   []ExtensionType
	Proposals    []ProposalType
	Credentials  []CredentialType
}

// MarshalMLS implements codec.Marshaler.
func (c *Capabilities) MarshalMLS(w *codec.Writer) {
	writeUint16s(w, c.Versions)
	writeUint16s(w, c.CipherSuites)
	writeUint16s(w, c.Extensions)
	writeUint16s(w, c.Proposals)
	writeUint16s(w, c.Credentials)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (c *Capabilities) UnmarshalMLS(r *codec.Reader) {
	c.Versions = readUint16s[ProtocolVersion](r)
	c.CipherSuites = readUint16s[ciphersuite.ID](r)
	c.Extensions = readUint16s[ExtensionType](r)
	c.Proposals = readUint16s[ProposalType](r)
	c.Credentials = readUint16s[CredentialType](r)
}

// SupportsExtension reports whether t is listed.
func (c *Capabilities) SupportsExtension(t ExtensionType) bool { return contains(c.Extensions, t) }

// SupportsProposal reports whether t is listed.
func (c *Capabilities) SupportsProposal(t ProposalType) bool { return contains(c.Proposals, t) }

// SupportsCredential reports whether t is listed.
func (c *Capabilities) SupportsCredential(t CredentialType) bool { return contains(c.Credentials, t) }

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Lifetime bounds a key package's leaf node validity, in seconds since the
// Unix epoch (RFC 9420 §7.2).
type Lifetime struct {
	NotBefore uint64
	NotAfter  uint64
}

// MarshalMLS implements codec.Marshaler.
func (l *Lifetime) MarshalMLS(w *codec.Writer) {
	w.Uint64(l.NotBefore)
	w.Uint64(l.NotAfter)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (l *Lifetime) UnmarshalMLS(r *codec.Reader) {
	l.NotBefore = r.Uint64()
	l.NotAfter = r.Uint64()
}

// Contains reports whether the Unix time t is within the lifetime.
func (l *Lifetime) Contains(t uint64) bool { return l.NotBefore <= t && t <= l.NotAfter }
