package wire

import (
	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/treemath"
)

// Proposal is a proposed change to a group (RFC 9420 §12.1): one of *Add,
// *Update, *Remove, *PreSharedKey, *ReInit, *ExternalInit and
// *GroupContextExtensions. MarshalMLS encodes the body alone; a Proposal
// struct on the wire (type, then body) is written by MarshalProposal and
// read by UnmarshalProposal.
type Proposal interface {
	codec.Marshaler
	codec.Unmarshaler
	// ProposalType is the proposal_type that precedes the body.
	ProposalType() ProposalType
}

// MarshalProposal writes p's type and body.
func MarshalProposal(w *codec.Writer, p Proposal) {
	w.Uint16(uint16(p.ProposalType()))
	p.MarshalMLS(w)
}

// UnmarshalProposal reads a proposal's type and body. An unknown type is
// ErrUnknownType, recorded on r (the result is then nil).
func UnmarshalProposal(r *codec.Reader) Proposal {
	t := ProposalType(r.Uint16())
	var p Proposal
	switch t {
	case ProposalAdd:
		p = new(Add)
	case ProposalUpdate:
		p = new(Update)
	case ProposalRemove:
		p = new(Remove)
	case ProposalPSK:
		p = new(PreSharedKey)
	case ProposalReInit:
		p = new(ReInit)
	case ProposalExternalInit:
		p = new(ExternalInit)
	case ProposalGroupContextExtensions:
		p = new(GroupContextExtensions)
	default:
		if r.Err() == nil {
			unknown(r, "proposal type", uint64(t))
		}
		return nil
	}
	p.UnmarshalMLS(r)
	return p
}

// Add proposes adding the client of a KeyPackage.
type Add struct {
	KeyPackage KeyPackage
}

// ProposalType implements Proposal.
func (*Add) ProposalType() ProposalType { return ProposalAdd }

// MarshalMLS implements codec.Marshaler.
func (a *Add) MarshalMLS(w *codec.Writer) { a.KeyPackage.MarshalMLS(w) }

// UnmarshalMLS implements codec.Unmarshaler.
func (a *Add) UnmarshalMLS(r *codec.Reader) { a.KeyPackage.UnmarshalMLS(r) }

// Update proposes replacing the sender's leaf node.
type Update struct {
	LeafNode LeafNode
}

// ProposalType implements Proposal.
func (*Update) ProposalType() ProposalType { return ProposalUpdate }

// MarshalMLS implements codec.Marshaler.
func (u *Update) MarshalMLS(w *codec.Writer) { u.LeafNode.MarshalMLS(w) }

// UnmarshalMLS implements codec.Unmarshaler.
func (u *Update) UnmarshalMLS(r *codec.Reader) { u.LeafNode.UnmarshalMLS(r) }

// Remove proposes removing the member at a leaf.
type Remove struct {
	Removed treemath.LeafIndex
}

// ProposalType implements Proposal.
func (*Remove) ProposalType() ProposalType { return ProposalRemove }

// MarshalMLS implements codec.Marshaler.
func (p *Remove) MarshalMLS(w *codec.Writer) { w.Uint32(uint32(p.Removed)) }

// UnmarshalMLS implements codec.Unmarshaler.
func (p *Remove) UnmarshalMLS(r *codec.Reader) { p.Removed = treemath.LeafIndex(r.Uint32()) }

// PreSharedKeyID names a pre-shared key (RFC 9420 §8.4): ID for an external
// PSK; Usage, GroupID and Epoch for a resumption PSK.
type PreSharedKeyID struct {
	Type    PSKType
	ID      []byte
	Usage   ResumptionPSKUsage
	GroupID []byte
	Epoch   uint64
	Nonce   []byte
}

// MarshalMLS implements codec.Marshaler.
func (p *PreSharedKeyID) MarshalMLS(w *codec.Writer) {
	w.Uint8(uint8(p.Type))
	switch p.Type {
	case PSKExternal:
		w.Opaque(p.ID)
	case PSKResumption:
		w.Uint8(uint8(p.Usage))
		w.Opaque(p.GroupID)
		w.Uint64(p.Epoch)
	}
	w.Opaque(p.Nonce)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (p *PreSharedKeyID) UnmarshalMLS(r *codec.Reader) {
	p.Type = PSKType(r.Uint8())
	switch p.Type {
	case PSKExternal:
		p.ID = r.Opaque()
	case PSKResumption:
		p.Usage = ResumptionPSKUsage(r.Uint8())
		p.GroupID = r.Opaque()
		p.Epoch = r.Uint64()
	default:
		unknown(r, "psk type", uint64(p.Type))
	}
	p.Nonce = r.Opaque()
}

// PreSharedKey proposes injecting a PSK into the next epoch's key schedule.
type PreSharedKey struct {
	PSK PreSharedKeyID
}

// ProposalType implements Proposal.
func (*PreSharedKey) ProposalType() ProposalType { return ProposalPSK }

// MarshalMLS implements codec.Marshaler.
func (p *PreSharedKey) MarshalMLS(w *codec.Writer) { p.PSK.MarshalMLS(w) }

// UnmarshalMLS implements codec.Unmarshaler.
func (p *PreSharedKey) UnmarshalMLS(r *codec.Reader) { p.PSK.UnmarshalMLS(r) }

// ReInit proposes closing the group and starting a new one with new
// parameters.
type ReInit struct {
	GroupID     []byte
	Version     ProtocolVersion
	CipherSuite ciphersuite.ID
	Extensions  Extensions
}

// ProposalType implements Proposal.
func (*ReInit) ProposalType() ProposalType { return ProposalReInit }

// MarshalMLS implements codec.Marshaler.
func (p *ReInit) MarshalMLS(w *codec.Writer) {
	w.Opaque(p.GroupID)
	w.Uint16(uint16(p.Version))
	w.Uint16(uint16(p.CipherSuite))
	p.Extensions.MarshalMLS(w)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (p *ReInit) UnmarshalMLS(r *codec.Reader) {
	p.GroupID = r.Opaque()
	p.Version = ProtocolVersion(r.Uint16())
	p.CipherSuite = ciphersuite.ID(r.Uint16())
	p.Extensions.UnmarshalMLS(r)
}

// ExternalInit carries the KEM output from which an external committer and
// the group derive the new epoch's init secret.
type ExternalInit struct {
	KEMOutput []byte
}

// ProposalType implements Proposal.
func (*ExternalInit) ProposalType() ProposalType { return ProposalExternalInit }

// MarshalMLS implements codec.Marshaler.
func (p *ExternalInit) MarshalMLS(w *codec.Writer) { w.Opaque(p.KEMOutput) }

// UnmarshalMLS implements codec.Unmarshaler.
func (p *ExternalInit) UnmarshalMLS(r *codec.Reader) { p.KEMOutput = r.Opaque() }

// GroupContextExtensions proposes replacing the group context's extensions.
type GroupContextExtensions struct {
	Extensions Extensions
}

// ProposalType implements Proposal.
func (*GroupContextExtensions) ProposalType() ProposalType { return ProposalGroupContextExtensions }

// MarshalMLS implements codec.Marshaler.
func (p *GroupContextExtensions) MarshalMLS(w *codec.Writer) { p.Extensions.MarshalMLS(w) }

// UnmarshalMLS implements codec.Unmarshaler.
func (p *GroupContextExtensions) UnmarshalMLS(r *codec.Reader) { p.Extensions.UnmarshalMLS(r) }

// ProposalOrRefType tags a ProposalOrRef (uint8).
type ProposalOrRefType uint8

// ProposalOrRef types (RFC 9420 §12.4).
const (
	ProposalOrRefProposal  ProposalOrRefType = 1
	ProposalOrRefReference ProposalOrRefType = 2
)

// ProposalOrRef is a commit's proposal, by value (Proposal set) or by its
// ProposalRef (Reference set).
type ProposalOrRef struct {
	Proposal  Proposal
	Reference []byte
}

// MarshalMLS implements codec.Marshaler.
func (p *ProposalOrRef) MarshalMLS(w *codec.Writer) {
	if p.Proposal != nil {
		w.Uint8(uint8(ProposalOrRefProposal))
		MarshalProposal(w, p.Proposal)
		return
	}
	w.Uint8(uint8(ProposalOrRefReference))
	w.Opaque(p.Reference)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (p *ProposalOrRef) UnmarshalMLS(r *codec.Reader) {
	switch t := ProposalOrRefType(r.Uint8()); t {
	case ProposalOrRefProposal:
		p.Proposal = UnmarshalProposal(r)
	case ProposalOrRefReference:
		p.Reference = r.Opaque()
	default:
		unknown(r, "proposal-or-ref type", uint64(t))
	}
}

// Commit applies proposals and, with Path, refreshes the committer's path
// (RFC 9420 §12.4).
type Commit struct {
	Proposals []ProposalOrRef
	Path      *UpdatePath
}

// MarshalMLS implements codec.Marshaler.
func (c *Commit) MarshalMLS(w *codec.Writer) {
	writeList(w, c.Proposals)
	w.Optional(c.Path != nil, func(w *codec.Writer) { c.Path.MarshalMLS(w) })
}

// UnmarshalMLS implements codec.Unmarshaler.
func (c *Commit) UnmarshalMLS(r *codec.Reader) {
	c.Proposals = readList[ProposalOrRef](r)
	if r.Optional() {
		c.Path = new(UpdatePath)
		c.Path.UnmarshalMLS(r)
	}
}
