package protocol

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// ConsentOperation is what a ConsentEntry does (draft §"Convey explicit consent").
type ConsentOperation uint8

// Consent operations: cancel and request go to the target's provider (requestConsent), grant and revoke to the
// requester's (updateConsent).
const (
	ConsentCancel  ConsentOperation = 0
	ConsentRequest ConsentOperation = 1
	ConsentGrant   ConsentOperation = 2
	ConsentRevoke  ConsentOperation = 3
)

// Component is one entry of an AppDataDictionary (draft-ietf-mls-extensions: ComponentData, a component ID and its
// opaque data), the extension point of the consent and identifier-query bodies.
type Component struct {
	ID   uint16
	Data []byte
}

func writeDictionary(w *codec.Writer, d []Component) {
	w.Vector(func(w *codec.Writer) {
		for _, c := range d {
			w.Uint16(c.ID)
			w.Opaque(c.Data)
		}
	})
}

// readDictionary reads an AppDataDictionary, whose components are sorted by ID without repeats.
func readDictionary(r *codec.Reader) []Component {
	var out []Component
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			c := Component{ID: r.Uint16(), Data: r.Opaque()}
			if r.Err() == nil && len(out) > 0 && c.ID <= out[len(out)-1].ID {
				r.Fail(fmt.Errorf("%w: dictionary component %d after %d", ErrUnexpectedField, c.ID, out[len(out)-1].ID))
			}
			out = append(out, c)
		}
	})
	return out
}

// ConsentEntry is the body of POST /requestConsent/{targetDomain} (request, cancel) and POST
// /updateConsent/{requesterDomain} (grant, revoke). RoomID empty means any room (the optional is absent).
type ConsentEntry struct {
	Operation         ConsentOperation
	RequesterURI      string
	TargetURI         string
	RoomID            string
	ClientKeyPackages []*wire.KeyPackage // grant only
	Extensions        []Component
}

// MarshalMLS implements codec.Marshaler.
func (c *ConsentEntry) MarshalMLS(w *codec.Writer) {
	w.Uint8(uint8(c.Operation))
	writeURI(w, c.RequesterURI)
	writeURI(w, c.TargetURI)
	w.Optional(c.RoomID != "", func(w *codec.Writer) { w.Opaque([]byte(c.RoomID)) })
	if c.Operation == ConsentGrant {
		w.Vector(func(w *codec.Writer) {
			for _, kp := range c.ClientKeyPackages {
				kp.MarshalMLS(w)
			}
		})
	}
	writeDictionary(w, c.Extensions)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (c *ConsentEntry) UnmarshalMLS(r *codec.Reader) {
	c.Operation = ConsentOperation(readCode(r, "consent operation", uint8(ConsentRevoke)))
	c.RequesterURI, c.TargetURI = readURI(r), readURI(r)
	if r.Err() == nil && (c.RequesterURI == "" || c.TargetURI == "") {
		r.Fail(fmt.Errorf("%w: consent entry without requester or target", ErrInvalidURI))
	}
	if r.Optional() {
		c.RoomID = string(r.Opaque())
		if r.Err() == nil && c.RoomID == "" {
			r.Fail(fmt.Errorf("%w: empty room ID (absent is written as absent)", ErrInvalidURI))
		}
	}
	if c.Operation == ConsentGrant {
		r.Vector(func(r *codec.Reader) {
			for !r.Empty() {
				kp := new(wire.KeyPackage)
				kp.UnmarshalMLS(r)
				c.ClientKeyPackages = append(c.ClientKeyPackages, kp)
			}
		})
	}
	c.Extensions = readDictionary(r)
}

// Encode checks and encodes the entry.
func (c *ConsentEntry) Encode() ([]byte, error) { return encode("consent entry", c) }

// DecodeConsentEntry parses a requestConsent or updateConsent body.
func DecodeConsentEntry(b []byte) (*ConsentEntry, error) {
	return decodeBody[ConsentEntry]("consent entry", b)
}
