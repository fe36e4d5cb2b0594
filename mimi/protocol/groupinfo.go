package protocol

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

const (
	groupInfoRequestLabel  = "GroupInfoRequestTBS"
	groupInfoResponseLabel = "GroupInfoResponseTBS"
	groupInfoEncLabel      = "GroupInfo and ratchet_tree encryption"
)

// GroupInfoRequest is the body of POST /groupInfo/{roomId}. The draft writes joiningCode
// as opaque<V> in the request but optional<opaque<V>> in the TBS; here an empty code is
// "absent" in the TBS and present otherwise.
type GroupInfoRequest struct {
	CipherSuite            uint16
	RequestingSignatureKey []byte
	RequestingCredential   wire.Credential
	GroupInfoPublicKey     []byte
	JoiningCode            []byte
	Signature              []byte
}

func (g *GroupInfoRequest) marshalHead(w *codec.Writer) {
	writeProtocol(w)
	w.Uint16(g.CipherSuite)
	w.Opaque(g.RequestingSignatureKey)
	g.RequestingCredential.MarshalMLS(w)
	w.Opaque(g.GroupInfoPublicKey)
}

// TBS is the GroupInfoRequestTBS the signature covers.
func (g *GroupInfoRequest) TBS() []byte {
	var w codec.Writer
	g.marshalHead(&w)
	w.Optional(len(g.JoiningCode) > 0, func(w *codec.Writer) { w.Opaque(g.JoiningCode) })
	return w.Bytes()
}

// MarshalMLS implements codec.Marshaler.
func (g *GroupInfoRequest) MarshalMLS(w *codec.Writer) {
	g.marshalHead(w)
	w.Opaque(g.JoiningCode)
	w.Opaque(g.Signature)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (g *GroupInfoRequest) UnmarshalMLS(r *codec.Reader) {
	readProtocol(r)
	g.CipherSuite = r.Uint16()
	g.RequestingSignatureKey = r.Opaque()
	g.RequestingCredential.UnmarshalMLS(r)
	g.GroupInfoPublicKey = r.Opaque()
	g.JoiningCode = r.Opaque()
	g.Signature = r.Opaque()
}

// Sign signs the request with the requester's signature private key.
func (g *GroupInfoRequest) Sign(s *ciphersuite.Suite, priv []byte) error {
	sig, err := s.SignWithLabel(priv, groupInfoRequestLabel, g.TBS())
	if err != nil {
		return fmt.Errorf("signing group info request: %w", err)
	}
	g.Signature = sig
	return nil
}

// Verify checks the signature against RequestingSignatureKey.
func (g *GroupInfoRequest) Verify(s *ciphersuite.Suite) error {
	if err := s.VerifyWithLabel(g.RequestingSignatureKey, groupInfoRequestLabel, g.TBS(), g.Signature); err != nil {
		return fmt.Errorf("verifying group info request: %w: %w", wire.ErrInvalidSignature, err)
	}
	return nil
}

// Encode checks and encodes the request.
func (g *GroupInfoRequest) Encode() ([]byte, error) { return encode("group info request", g) }

// DecodeGroupInfoRequest parses a request body.
func DecodeGroupInfoRequest(b []byte) (*GroupInfoRequest, error) {
	return decodeBody[GroupInfoRequest]("group info request", b)
}

// GroupInfoCode is the hub's answer to a group info request.
type GroupInfoCode uint8

// The codes.
const (
	GroupInfoSuccess       GroupInfoCode = 1
	GroupInfoNotAuthorized GroupInfoCode = 2
	GroupInfoNoSuchRoom    GroupInfoCode = 3
)

// PendingProposal is a proposal the hub accepted in the current epoch.
type PendingProposal struct {
	Proposal        wire.MLSMessage
	HubAcceptedTime uint64
}

// GroupInfoRatchetTreeTBE is what the hub encrypts to the requester.
type GroupInfoRatchetTreeTBE struct {
	GroupInfo         wire.GroupInfo
	RatchetTreeOption RatchetTreeOption
	PendingProposals  []PendingProposal
}

// MarshalMLS implements codec.Marshaler.
func (t *GroupInfoRatchetTreeTBE) MarshalMLS(w *codec.Writer) {
	t.GroupInfo.MarshalMLS(w)
	t.RatchetTreeOption.MarshalMLS(w)
	w.Vector(func(w *codec.Writer) {
		for i := range t.PendingProposals {
			t.PendingProposals[i].Proposal.MarshalMLS(w)
			w.Uint64(t.PendingProposals[i].HubAcceptedTime)
		}
	})
}

// UnmarshalMLS implements codec.Unmarshaler.
func (t *GroupInfoRatchetTreeTBE) UnmarshalMLS(r *codec.Reader) {
	t.GroupInfo.UnmarshalMLS(r)
	t.RatchetTreeOption.UnmarshalMLS(r)
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			var p PendingProposal
			p.Proposal.UnmarshalMLS(r)
			p.HubAcceptedTime = r.Uint64()
			if r.Err() == nil && handshakeKind(&p.Proposal) != wire.ContentProposal {
				r.Fail(fmt.Errorf("%w: pending proposal is not a proposal in a PublicMessage", ErrWrongMessage))
			}
			t.PendingProposals = append(t.PendingProposals, p)
		}
	})
}

// GroupInfoResponse is the response to POST /groupInfo. Only a success carries the
// encrypted GroupInfo and the hub's signature.
type GroupInfoResponse struct {
	RoomID      []byte
	Status      GroupInfoCode
	CipherSuite uint16
	HubSender   wire.ExternalSender
	Encrypted   wire.HPKECiphertext
	Signature   []byte
}

// TBS is the GroupInfoResponseTBS the hub signs.
func (g *GroupInfoResponse) TBS() []byte {
	var w codec.Writer
	writeProtocol(&w)
	w.Opaque(g.RoomID)
	w.Uint8(uint8(g.Status))
	w.Uint16(g.CipherSuite)
	g.HubSender.MarshalMLS(&w)
	g.Encrypted.MarshalMLS(&w)
	return w.Bytes()
}

// MarshalMLS implements codec.Marshaler.
func (g *GroupInfoResponse) MarshalMLS(w *codec.Writer) {
	writeProtocol(w)
	w.Opaque(g.RoomID)
	w.Uint8(uint8(g.Status))
	if g.Status == GroupInfoSuccess {
		w.Uint16(g.CipherSuite)
		g.HubSender.MarshalMLS(w)
		g.Encrypted.MarshalMLS(w)
		w.Opaque(g.Signature)
	}
}

// UnmarshalMLS implements codec.Unmarshaler.
func (g *GroupInfoResponse) UnmarshalMLS(r *codec.Reader) {
	readProtocol(r)
	g.RoomID = r.Opaque()
	g.Status = GroupInfoCode(readCode(r, "group info code", uint8(GroupInfoNoSuchRoom)))
	if r.Err() == nil && g.Status == 0 {
		r.Fail(fmt.Errorf("%w: group info code 0 is reserved", ErrUnknownCode))
	}
	if g.Status == GroupInfoSuccess {
		g.CipherSuite = r.Uint16()
		g.HubSender.UnmarshalMLS(r)
		g.Encrypted.UnmarshalMLS(r)
		g.Signature = r.Opaque()
	}
}

// Seal encrypts tbe to the requester's groupInfoPublicKey and signs the response with the
// hub's signature private key (whose public key is HubSender.SignatureKey).
func (g *GroupInfoResponse) Seal(s *ciphersuite.Suite, requesterPub []byte, tbe *GroupInfoRatchetTreeTBE, hubPriv []byte) error {
	pt, err := encode("group info and ratchet tree", tbe)
	if err != nil {
		return err
	}
	kem, ct, err := s.EncryptWithLabel(requesterPub, groupInfoEncLabel, g.RoomID, pt)
	if err != nil {
		return fmt.Errorf("encrypting group info: %w", err)
	}
	g.Status, g.CipherSuite = GroupInfoSuccess, uint16(s.ID())
	g.Encrypted = wire.HPKECiphertext{KEMOutput: kem, Ciphertext: ct}
	if g.Signature, err = s.SignWithLabel(hubPriv, groupInfoResponseLabel, g.TBS()); err != nil {
		return fmt.Errorf("signing group info response: %w", err)
	}
	return nil
}

// Open verifies the hub's signature and decrypts the GroupInfo with the requester's
// private key.
func (g *GroupInfoResponse) Open(s *ciphersuite.Suite, requesterPriv []byte) (*GroupInfoRatchetTreeTBE, error) {
	if g.Status != GroupInfoSuccess {
		return nil, fmt.Errorf("opening group info response: %w: status %d", ErrUnexpectedField, g.Status)
	}
	if err := s.VerifyWithLabel(g.HubSender.SignatureKey, groupInfoResponseLabel, g.TBS(), g.Signature); err != nil {
		return nil, fmt.Errorf("verifying group info response: %w: %w", wire.ErrInvalidSignature, err)
	}
	pt, err := s.DecryptWithLabel(requesterPriv, groupInfoEncLabel, g.RoomID, g.Encrypted.KEMOutput, g.Encrypted.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("decrypting group info: %w", err)
	}
	return decodeBody[GroupInfoRatchetTreeTBE]("group info and ratchet tree", pt)
}

// Encode checks and encodes the response.
func (g *GroupInfoResponse) Encode() ([]byte, error) { return encode("group info response", g) }

// DecodeGroupInfoResponse parses a response body.
func DecodeGroupInfoResponse(b []byte) (*GroupInfoResponse, error) {
	return decodeBody[GroupInfoResponse]("group info response", b)
}
