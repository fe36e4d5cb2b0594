package protocol

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/codec"
)

// SearchIdentifierType is what a QueryElement matches (draft §"Find internal address").
type SearchIdentifierType uint8

// Search types. Handle is the whole handle URI (im:alice.smith@a.example), Nick its user part.
const (
	SearchHandle       SearchIdentifierType = 1
	SearchNick         SearchIdentifierType = 2
	SearchEmail        SearchIdentifierType = 3
	SearchPhone        SearchIdentifierType = 4
	SearchPartialName  SearchIdentifierType = 5
	SearchWholeProfile SearchIdentifierType = 6
	SearchOIDCStdClaim SearchIdentifierType = 7
	SearchVCardField   SearchIdentifierType = 8
)

// QueryElement is one condition of an identifier query; Name is the claim or property name of the OIDC and vCard
// types.
type QueryElement struct {
	Type  SearchIdentifierType
	Name  string
	Value string
}

// MarshalMLS implements codec.Marshaler.
func (q *QueryElement) MarshalMLS(w *codec.Writer) {
	w.Uint8(uint8(q.Type))
	if q.Type == SearchOIDCStdClaim || q.Type == SearchVCardField {
		w.Opaque([]byte(q.Name))
	}
	w.Opaque([]byte(q.Value))
}

// UnmarshalMLS implements codec.Unmarshaler.
func (q *QueryElement) UnmarshalMLS(r *codec.Reader) {
	q.Type = SearchIdentifierType(r.Uint8())
	if r.Err() == nil && (q.Type == 0 || q.Type > SearchVCardField) {
		r.Fail(fmt.Errorf("%w: search identifier type %d", ErrUnknownCode, q.Type))
	}
	if q.Type == SearchOIDCStdClaim || q.Type == SearchVCardField {
		q.Name = string(r.Opaque())
	}
	q.Value = string(r.Opaque())
}

// IdentifierRequest is the body of POST /identifierQuery/{domain}: every element must match (AND).
type IdentifierRequest struct {
	Elements   []QueryElement
	Extensions []Component
}

// MarshalMLS implements codec.Marshaler.
func (q *IdentifierRequest) MarshalMLS(w *codec.Writer) {
	w.Vector(func(w *codec.Writer) {
		for i := range q.Elements {
			q.Elements[i].MarshalMLS(w)
		}
	})
	writeDictionary(w, q.Extensions)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (q *IdentifierRequest) UnmarshalMLS(r *codec.Reader) {
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			var e QueryElement
			e.UnmarshalMLS(r)
			q.Elements = append(q.Elements, e)
		}
	})
	if r.Err() == nil && len(q.Elements) == 0 {
		r.Fail(fmt.Errorf("%w: identifier query without a query element", ErrUnexpectedField))
	}
	q.Extensions = readDictionary(r)
}

// Encode checks and encodes the request.
func (q *IdentifierRequest) Encode() ([]byte, error) { return encode("identifier request", q) }

// DecodeIdentifierRequest parses a request body.
func DecodeIdentifierRequest(b []byte) (*IdentifierRequest, error) {
	return decodeBody[IdentifierRequest]("identifier request", b)
}

// IdentifierQueryCode is the status of an identifier query.
type IdentifierQueryCode uint8

// Identifier query codes.
const (
	IdentifierSuccess          IdentifierQueryCode = 0
	IdentifierNotFound         IdentifierQueryCode = 1
	IdentifierAmbiguous        IdentifierQueryCode = 2
	IdentifierForbidden        IdentifierQueryCode = 3
	IdentifierUnsupportedField IdentifierQueryCode = 4
)

// ProfileField is one field of a found profile; Source is an OIDC standard claim (7) or a vCard field (8).
type ProfileField struct {
	Source uint8
	Name   string
	Value  []byte
}

// UserProfile is a found user: its stable URI and the fields the provider shows.
type UserProfile struct {
	StableURI string
	Fields    []ProfileField
}

// IdentifierResponse answers an identifier query.
type IdentifierResponse struct {
	Code       IdentifierQueryCode
	URIs       []string
	Profiles   []UserProfile
	Extensions []Component
}

// MarshalMLS implements codec.Marshaler.
func (q *IdentifierResponse) MarshalMLS(w *codec.Writer) {
	w.Uint8(uint8(q.Code))
	w.Vector(func(w *codec.Writer) {
		for _, u := range q.URIs {
			writeURI(w, u)
		}
	})
	w.Vector(func(w *codec.Writer) {
		for _, p := range q.Profiles {
			writeURI(w, p.StableURI)
			w.Vector(func(w *codec.Writer) {
				for _, f := range p.Fields {
					w.Uint8(f.Source)
					w.Opaque([]byte(f.Name))
					w.Opaque(f.Value)
				}
			})
		}
	})
	writeDictionary(w, q.Extensions)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (q *IdentifierResponse) UnmarshalMLS(r *codec.Reader) {
	q.Code = IdentifierQueryCode(readCode(r, "identifier query code", uint8(IdentifierUnsupportedField)))
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			q.URIs = append(q.URIs, readURI(r))
		}
	})
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			p := UserProfile{StableURI: readURI(r)}
			r.Vector(func(r *codec.Reader) {
				for !r.Empty() {
					f := ProfileField{Source: r.Uint8(), Name: string(r.Opaque()), Value: r.Opaque()}
					if r.Err() == nil && f.Source != uint8(SearchOIDCStdClaim) && f.Source != uint8(SearchVCardField) {
						r.Fail(fmt.Errorf("%w: profile field source %d", ErrUnknownCode, f.Source))
					}
					p.Fields = append(p.Fields, f)
				}
			})
			q.Profiles = append(q.Profiles, p)
		}
	})
	if r.Err() == nil && q.Code != IdentifierSuccess && (len(q.URIs) > 0 || len(q.Profiles) > 0) {
		r.Fail(fmt.Errorf("%w: results with identifier query code %d", ErrUnexpectedField, q.Code))
	}
	q.Extensions = readDictionary(r)
}

// Encode checks and encodes the response.
func (q *IdentifierResponse) Encode() ([]byte, error) { return encode("identifier response", q) }

// DecodeIdentifierResponse parses a response body.
func DecodeIdentifierResponse(b []byte) (*IdentifierResponse, error) {
	return decodeBody[IdentifierResponse]("identifier response", b)
}
