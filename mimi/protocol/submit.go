package protocol

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// SubmitMessageRequest is the body of POST /submitMessage/{roomId}: an application
// message in a PrivateMessage and the sender's URI.
type SubmitMessageRequest struct {
	AppMessage wire.MLSMessage
	SendingURI string
}

// MarshalMLS implements codec.Marshaler.
func (s *SubmitMessageRequest) MarshalMLS(w *codec.Writer) {
	writeProtocol(w)
	s.AppMessage.MarshalMLS(w)
	writeURI(w, s.SendingURI)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (s *SubmitMessageRequest) UnmarshalMLS(r *codec.Reader) {
	readProtocol(r)
	s.AppMessage.UnmarshalMLS(r)
	if r.Err() == nil && (s.AppMessage.PrivateMessage == nil || s.AppMessage.PrivateMessage.ContentType != wire.ContentApplication) {
		r.Fail(fmt.Errorf("%w: submitMessage needs an application PrivateMessage", ErrWrongMessage))
	}
	s.SendingURI = readURI(r)
}

// Encode checks and encodes the request.
func (s *SubmitMessageRequest) Encode() ([]byte, error) { return encode("submit message request", s) }

// DecodeSubmitMessageRequest parses a request body.
func DecodeSubmitMessageRequest(b []byte) (*SubmitMessageRequest, error) {
	return decodeBody[SubmitMessageRequest]("submit message request", b)
}

// Frank is the hub's franking of a message (draft §"Message Franking").
type Frank struct {
	ServerFrank                  [32]byte
	FrankingSignatureCiphersuite uint16
	FrankingIntegritySignature   []byte
}

// MarshalMLS implements codec.Marshaler.
func (f *Frank) MarshalMLS(w *codec.Writer) {
	w.Raw(f.ServerFrank[:])
	w.Uint16(f.FrankingSignatureCiphersuite)
	w.Opaque(f.FrankingIntegritySignature)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (f *Frank) UnmarshalMLS(r *codec.Reader) {
	copy(f.ServerFrank[:], r.Raw(32))
	f.FrankingSignatureCiphersuite = r.Uint16()
	f.FrankingIntegritySignature = r.Opaque()
}

// SubmitResponseCode is the hub's answer to a submitted message.
type SubmitResponseCode uint8

// The response codes ("accepted" is the draft's "success" of the select).
const (
	SubmitAccepted    SubmitResponseCode = 0
	SubmitNotAllowed  SubmitResponseCode = 1
	SubmitEpochTooOld SubmitResponseCode = 2
)

// SubmitMessageResponse is the response to POST /submitMessage.
type SubmitMessageResponse struct {
	Code              SubmitResponseCode
	AcceptedTimestamp uint64 // SubmitAccepted
	Frank             *Frank // SubmitAccepted, optional
	CurrentEpoch      uint64 // SubmitEpochTooOld
}

// MarshalMLS implements codec.Marshaler.
func (s *SubmitMessageResponse) MarshalMLS(w *codec.Writer) {
	writeProtocol(w)
	w.Uint8(uint8(s.Code))
	switch s.Code {
	case SubmitAccepted:
		w.Uint64(s.AcceptedTimestamp)
		w.Optional(s.Frank != nil, func(w *codec.Writer) { s.Frank.MarshalMLS(w) })
	case SubmitEpochTooOld:
		w.Uint64(s.CurrentEpoch)
	}
}

// UnmarshalMLS implements codec.Unmarshaler.
func (s *SubmitMessageResponse) UnmarshalMLS(r *codec.Reader) {
	readProtocol(r)
	s.Code = SubmitResponseCode(readCode(r, "submit response code", uint8(SubmitEpochTooOld)))
	switch s.Code {
	case SubmitAccepted:
		s.AcceptedTimestamp = r.Uint64()
		if r.Optional() {
			s.Frank = new(Frank)
			s.Frank.UnmarshalMLS(r)
		}
	case SubmitEpochTooOld:
		s.CurrentEpoch = r.Uint64()
	}
}

// Encode checks and encodes the response.
func (s *SubmitMessageResponse) Encode() ([]byte, error) { return encode("submit message response", s) }

// DecodeSubmitMessageResponse parses a response body.
func DecodeSubmitMessageResponse(b []byte) (*SubmitMessageResponse, error) {
	return decodeBody[SubmitMessageResponse]("submit message response", b)
}
