package protocol

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

const keyMaterialLabel = "KeyMaterialRequestTBS"

// KeyMaterialRequest is the body of POST /keyMaterial/{targetUser}.
type KeyMaterialRequest struct {
	RequestingUser, TargetUser, RoomID string
	AcceptableCiphersuites             []uint16
	RequiredCapabilities               wire.RequiredCapabilities
	RequesterSignatureKey              []byte
	RequesterCredential                wire.Credential
	Signature                          []byte
}

func (k *KeyMaterialRequest) marshalTBS(w *codec.Writer) {
	writeProtocol(w)
	writeURI(w, k.RequestingUser)
	writeURI(w, k.TargetUser)
	writeURI(w, k.RoomID)
	writeSuites(w, k.AcceptableCiphersuites)
	k.RequiredCapabilities.MarshalMLS(w)
	w.Opaque(k.RequesterSignatureKey)
	k.RequesterCredential.MarshalMLS(w)
}

// MarshalMLS implements codec.Marshaler.
func (k *KeyMaterialRequest) MarshalMLS(w *codec.Writer) {
	k.marshalTBS(w)
	w.Opaque(k.Signature)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (k *KeyMaterialRequest) UnmarshalMLS(r *codec.Reader) {
	readProtocol(r)
	k.RequestingUser, k.TargetUser, k.RoomID = readURI(r), readURI(r), readURI(r)
	k.AcceptableCiphersuites = readSuites(r)
	if r.Err() == nil && len(k.AcceptableCiphersuites) == 0 {
		r.Fail(fmt.Errorf("%w: no acceptable ciphersuites", ErrUnexpectedField))
	}
	k.RequiredCapabilities.UnmarshalMLS(r)
	k.RequesterSignatureKey = r.Opaque()
	k.RequesterCredential.UnmarshalMLS(r)
	k.Signature = r.Opaque()
}

// TBS is the KeyMaterialRequestTBS the signature covers.
func (k *KeyMaterialRequest) TBS() []byte {
	var w codec.Writer
	k.marshalTBS(&w)
	return w.Bytes()
}

// Sign signs the request with the requester's signature private key.
func (k *KeyMaterialRequest) Sign(s *ciphersuite.Suite, priv []byte) error {
	sig, err := s.SignWithLabel(priv, keyMaterialLabel, k.TBS())
	if err != nil {
		return fmt.Errorf("signing key material request: %w", err)
	}
	k.Signature = sig
	return nil
}

// Verify checks the signature against RequesterSignatureKey.
func (k *KeyMaterialRequest) Verify(s *ciphersuite.Suite) error {
	if err := s.VerifyWithLabel(k.RequesterSignatureKey, keyMaterialLabel, k.TBS(), k.Signature); err != nil {
		return fmt.Errorf("verifying key material request: %w: %w", wire.ErrInvalidSignature, err)
	}
	return nil
}

// Encode checks and encodes the request.
func (k *KeyMaterialRequest) Encode() ([]byte, error) { return encode("key material request", k) }

// DecodeKeyMaterialRequest parses a request body.
func DecodeKeyMaterialRequest(b []byte) (*KeyMaterialRequest, error) {
	return decodeBody[KeyMaterialRequest]("key material request", b)
}

// KeyMaterialUserCode is the per-user result of a key material request.
type KeyMaterialUserCode uint8

// The user codes.
const (
	UserSuccess              KeyMaterialUserCode = 0
	UserPartialSuccess       KeyMaterialUserCode = 1
	UserIncompatibleProtocol KeyMaterialUserCode = 2
	UserNoCompatibleMaterial KeyMaterialUserCode = 3
	UserUnknown              KeyMaterialUserCode = 4
	UserNoConsent            KeyMaterialUserCode = 5
	UserNoConsentForThisRoom KeyMaterialUserCode = 6
	UserDeleted              KeyMaterialUserCode = 7
)

// KeyMaterialClientCode is the per-client result.
type KeyMaterialClientCode uint8

// The client codes.
const (
	ClientSuccess              KeyMaterialClientCode = 0
	ClientKeyMaterialExhausted KeyMaterialClientCode = 1
	ClientNothingCompatible    KeyMaterialClientCode = 2
)

// ClientKeyMaterial is one client's entry in a KeyMaterialResponse.
type ClientKeyMaterial struct {
	Status     KeyMaterialClientCode
	ClientURI  string
	KeyPackage *wire.KeyPackage   // ClientSuccess
	Capability *wire.Capabilities // ClientNothingCompatible, optional
}

// MarshalMLS implements codec.Marshaler.
func (c *ClientKeyMaterial) MarshalMLS(w *codec.Writer) {
	w.Uint8(uint8(c.Status))
	writeURI(w, c.ClientURI)
	switch c.Status {
	case ClientSuccess:
		if c.KeyPackage != nil {
			c.KeyPackage.MarshalMLS(w)
		}
	case ClientNothingCompatible:
		w.Optional(c.Capability != nil, func(w *codec.Writer) { c.Capability.MarshalMLS(w) })
	}
}

// UnmarshalMLS implements codec.Unmarshaler.
func (c *ClientKeyMaterial) UnmarshalMLS(r *codec.Reader) {
	c.Status = KeyMaterialClientCode(readCode(r, "client code", uint8(ClientNothingCompatible)))
	c.ClientURI = readURI(r)
	switch c.Status {
	case ClientSuccess:
		c.KeyPackage = new(wire.KeyPackage)
		c.KeyPackage.UnmarshalMLS(r)
	case ClientNothingCompatible:
		if r.Optional() {
			c.Capability = new(wire.Capabilities)
			c.Capability.UnmarshalMLS(r)
		}
	}
}

// KeyMaterialResponse is the response to POST /keyMaterial.
type KeyMaterialResponse struct {
	UserStatus KeyMaterialUserCode
	UserURI    string
	Clients    []ClientKeyMaterial
}

// MarshalMLS implements codec.Marshaler.
func (k *KeyMaterialResponse) MarshalMLS(w *codec.Writer) {
	writeProtocol(w)
	w.Uint8(uint8(k.UserStatus))
	writeURI(w, k.UserURI)
	w.Vector(func(w *codec.Writer) {
		for i := range k.Clients {
			k.Clients[i].MarshalMLS(w)
		}
	})
}

// UnmarshalMLS implements codec.Unmarshaler. Clients are refused for user codes other
// than success, partialSuccess and noCompatibleMaterial, which the draft forbids.
func (k *KeyMaterialResponse) UnmarshalMLS(r *codec.Reader) {
	readProtocol(r)
	k.UserStatus = KeyMaterialUserCode(readCode(r, "user code", uint8(UserDeleted)))
	k.UserURI = readURI(r)
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			var c ClientKeyMaterial
			c.UnmarshalMLS(r)
			k.Clients = append(k.Clients, c)
		}
	})
	if r.Err() == nil && len(k.Clients) > 0 && k.UserStatus != UserSuccess && k.UserStatus != UserPartialSuccess && k.UserStatus != UserNoCompatibleMaterial {
		r.Fail(fmt.Errorf("%w: clients listed with user code %d", ErrUnexpectedField, k.UserStatus))
	}
}

// Encode checks and encodes the response.
func (k *KeyMaterialResponse) Encode() ([]byte, error) { return encode("key material response", k) }

// DecodeKeyMaterialResponse parses a response body.
func DecodeKeyMaterialResponse(b []byte) (*KeyMaterialResponse, error) {
	return decodeBody[KeyMaterialResponse]("key material response", b)
}
