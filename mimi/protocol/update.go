package protocol

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// UpdateRequest is the body of POST /update/{roomId}: a HandshakeBundle (the draft's
// UpdateRequest selects on the room's protocol, which is not on the wire, so for mls10 the
// body is the bundle itself). The proposal or commit must be a PublicMessage: the hub has to
// read it to check the room's policy.
type UpdateRequest struct {
	ProposalOrCommit wire.MLSMessage
	// For a commit:
	Welcome           *wire.Welcome
	GroupInfoOption   GroupInfoOption
	RatchetTreeOption RatchetTreeOption
	// For a proposal:
	MoreProposals []wire.MLSMessage
}

// MarshalMLS implements codec.Marshaler.
func (u *UpdateRequest) MarshalMLS(w *codec.Writer) {
	u.ProposalOrCommit.MarshalMLS(w)
	switch handshakeKind(&u.ProposalOrCommit) {
	case wire.ContentCommit:
		w.Optional(u.Welcome != nil, func(w *codec.Writer) { u.Welcome.MarshalMLS(w) })
		u.GroupInfoOption.MarshalMLS(w)
		u.RatchetTreeOption.MarshalMLS(w)
	case wire.ContentProposal:
		writeMessages(w, u.MoreProposals)
	}
}

// UnmarshalMLS implements codec.Unmarshaler.
func (u *UpdateRequest) UnmarshalMLS(r *codec.Reader) {
	u.ProposalOrCommit.UnmarshalMLS(r)
	if r.Err() != nil {
		return
	}
	switch handshakeKind(&u.ProposalOrCommit) {
	case wire.ContentCommit:
		if r.Optional() {
			u.Welcome = new(wire.Welcome)
			u.Welcome.UnmarshalMLS(r)
		}
		u.GroupInfoOption.UnmarshalMLS(r)
		u.RatchetTreeOption.UnmarshalMLS(r)
	case wire.ContentProposal:
		u.MoreProposals = readMessages(r)
		for i := range u.MoreProposals {
			if r.Err() == nil && handshakeKind(&u.MoreProposals[i]) != wire.ContentProposal {
				r.Fail(fmt.Errorf("%w: moreProposals[%d] is not a proposal in a PublicMessage", ErrWrongMessage, i))
			}
		}
	default:
		r.Fail(fmt.Errorf("%w: update needs a proposal or commit in a PublicMessage, got wire format %d", ErrWrongMessage, u.ProposalOrCommit.WireFormat()))
	}
}

// Encode checks and encodes the request.
func (u *UpdateRequest) Encode() ([]byte, error) { return encode("update request", u) }

// DecodeUpdateRequest parses a request body.
func DecodeUpdateRequest(b []byte) (*UpdateRequest, error) {
	return decodeBody[UpdateRequest]("update request", b)
}

// UpdateResponseCode is the hub's answer to an update.
type UpdateResponseCode uint8

// The response codes.
const (
	UpdateSuccess         UpdateResponseCode = 0
	UpdateWrongEpoch      UpdateResponseCode = 1
	UpdateNotAllowed      UpdateResponseCode = 2
	UpdateInvalidProposal UpdateResponseCode = 3
)

// UpdateRoomResponse is the response to POST /update. The draft's "string
// errorDescription" is not a TLS presentation type; it is read as opaque<V> UTF-8.
type UpdateRoomResponse struct {
	Code              UpdateResponseCode
	ErrorDescription  string
	AcceptedTimestamp uint64   // UpdateSuccess, milliseconds since the UNIX epoch
	CurrentEpoch      uint64   // UpdateWrongEpoch
	InvalidProposals  [][]byte // UpdateInvalidProposal: ProposalRefs
}

// MarshalMLS implements codec.Marshaler.
func (u *UpdateRoomResponse) MarshalMLS(w *codec.Writer) {
	w.Uint8(uint8(u.Code))
	w.Opaque([]byte(u.ErrorDescription))
	switch u.Code {
	case UpdateSuccess:
		w.Uint64(u.AcceptedTimestamp)
	case UpdateWrongEpoch:
		w.Uint64(u.CurrentEpoch)
	case UpdateInvalidProposal:
		w.Vector(func(w *codec.Writer) {
			for _, ref := range u.InvalidProposals {
				w.Opaque(ref)
			}
		})
	}
}

// UnmarshalMLS implements codec.Unmarshaler.
func (u *UpdateRoomResponse) UnmarshalMLS(r *codec.Reader) {
	u.Code = UpdateResponseCode(readCode(r, "update response code", uint8(UpdateInvalidProposal)))
	u.ErrorDescription = string(r.Opaque())
	switch u.Code {
	case UpdateSuccess:
		u.AcceptedTimestamp = r.Uint64()
	case UpdateWrongEpoch:
		u.CurrentEpoch = r.Uint64()
	case UpdateInvalidProposal:
		r.Vector(func(r *codec.Reader) {
			for !r.Empty() {
				u.InvalidProposals = append(u.InvalidProposals, r.Opaque())
			}
		})
	}
}

// Encode checks and encodes the response.
func (u *UpdateRoomResponse) Encode() ([]byte, error) { return encode("update response", u) }

// DecodeUpdateRoomResponse parses a response body.
func DecodeUpdateRoomResponse(b []byte) (*UpdateRoomResponse, error) {
	return decodeBody[UpdateRoomResponse]("update response", b)
}
