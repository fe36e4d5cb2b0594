package wire

import (
	"errors"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/codec"
)

// Sentinel errors; decoders wrap them with the value that was met.
var (
	// ErrUnknownType means an enum that selects a struct's layout had a
	// value this package does not know, so the rest cannot be decoded.
	ErrUnknownType = errors.New("wire: unknown type")
	// ErrUnsupportedVersion means a ProtocolVersion other than mls10.
	ErrUnsupportedVersion = errors.New("wire: unsupported protocol version")
	// ErrInvalidSignature means a signature did not verify.
	ErrInvalidSignature = errors.New("wire: invalid signature")
	// ErrMissingContext means a leaf node signed in a group's context was
	// verified or signed without the group ID.
	ErrMissingContext = errors.New("wire: leaf node needs group context")
	// ErrWrongSource means a leaf node's source does not fit where it is
	// used (RFC 9420 §7.3).
	ErrWrongSource = errors.New("wire: wrong leaf node source")
	// ErrNotFound means a Welcome holds no secrets for the KeyPackage.
	ErrNotFound = errors.New("wire: not found")
)

// ProtocolVersion is the MLS protocol version (uint16).
type ProtocolVersion uint16

// MLS10 is the only version RFC 9420 defines.
const MLS10 ProtocolVersion = 1

// WireFormat says which body an MLSMessage carries (uint16).
type WireFormat uint16

// Wire formats (RFC 9420 §6).
const (
	WireFormatPublicMessage  WireFormat = 1
	WireFormatPrivateMessage WireFormat = 2
	WireFormatWelcome        WireFormat = 3
	WireFormatGroupInfo      WireFormat = 4
	WireFormatKeyPackage     WireFormat = 5
)

// CredentialType identifies a Credential's layout (uint16).
type CredentialType uint16

// Credential types (RFC 9420 §5.3).
const (
	CredentialBasic CredentialType = 1
	CredentialX509  CredentialType = 2
)

// ExtensionType identifies an Extension (uint16).
type ExtensionType uint16

// Extension types (RFC 9420 §17.3).
const (
	ExtensionApplicationID        ExtensionType = 1
	ExtensionRatchetTree          ExtensionType = 2
	ExtensionRequiredCapabilities ExtensionType = 3
	ExtensionExternalPub          ExtensionType = 4
	ExtensionExternalSenders      ExtensionType = 5
)

// ProposalType identifies a Proposal (uint16).
type ProposalType uint16

// Proposal types (RFC 9420 §12.1).
const (
	ProposalAdd                    ProposalType = 1
	ProposalUpdate                 ProposalType = 2
	ProposalRemove                 ProposalType = 3
	ProposalPSK                    ProposalType = 4
	ProposalReInit                 ProposalType = 5
	ProposalExternalInit           ProposalType = 6
	ProposalGroupContextExtensions ProposalType = 7
)

// LeafNodeSource says how a LeafNode came to be (uint8).
type LeafNodeSource uint8

// Leaf node sources (RFC 9420 §7.2).
const (
	SourceKeyPackage LeafNodeSource = 1
	SourceUpdate     LeafNodeSource = 2
	SourceCommit     LeafNodeSource = 3
)

// NodeType tags a ratchet tree node (uint8).
type NodeType uint8

// Node types (RFC 9420 §7.8).
const (
	NodeTypeLeaf   NodeType = 1
	NodeTypeParent NodeType = 2
)

// SenderType says who sent a FramedContent (uint8).
type SenderType uint8

// Sender types (RFC 9420 §6).
const (
	SenderMember            SenderType = 1
	SenderExternal          SenderType = 2
	SenderNewMemberProposal SenderType = 3
	SenderNewMemberCommit   SenderType = 4
)

// ContentType says what a FramedContent carries (uint8).
type ContentType uint8

// Content types (RFC 9420 §6).
const (
	ContentApplication ContentType = 1
	ContentProposal    ContentType = 2
	ContentCommit      ContentType = 3
)

// PSKType says which kind of pre-shared key a PreSharedKeyID names (uint8).
type PSKType uint8

// PSK types (RFC 9420 §8.4).
const (
	PSKExternal   PSKType = 1
	PSKResumption PSKType = 2
)

// ResumptionPSKUsage says what a resumption PSK is for (uint8).
type ResumptionPSKUsage uint8

// Resumption PSK usages (RFC 9420 §8.4).
const (
	UsageApplication ResumptionPSKUsage = 1
	UsageReInit      ResumptionPSKUsage = 2
	UsageBranch      ResumptionPSKUsage = 3
)

func unknown(r *codec.Reader, what string, v uint64) {
	r.Fail(fmt.Errorf("%w: %s %d", ErrUnknownType, what, v))
}

// writeUint16s writes a vector of 16-bit values.
func writeUint16s[T ~uint16](w *codec.Writer, v []T) {
	w.Vector(func(w *codec.Writer) {
		for _, x := range v {
			w.Uint16(uint16(x))
		}
	})
}

func readUint16s[T ~uint16](r *codec.Reader) []T {
	var out []T
	r.Vector(func(r *codec.Reader) {
		if r.Len()%2 != 0 {
			r.Fail(fmt.Errorf("vector of uint16 has odd length %d: %w", r.Len(), codec.ErrShort))
			return
		}
		out = make([]T, 0, r.Len()/2)
		for !r.Empty() {
			out = append(out, T(r.Uint16()))
		}
	})
	return out
}

// list is the constraint for element types of struct vectors.
type list[T any] interface {
	*T
	codec.Marshaler
	codec.Unmarshaler
}

func writeList[T any, P list[T]](w *codec.Writer, v []T) {
	w.Vector(func(w *codec.Writer) {
		for i := range v {
			P(&v[i]).MarshalMLS(w)
		}
	})
}

func readList[T any, P list[T]](r *codec.Reader) []T {
	var out []T
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			var v T
			P(&v).UnmarshalMLS(r)
			out = append(out, v)
		}
	})
	return out
}
