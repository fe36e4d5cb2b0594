package protocol

import (
	"errors"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// Sentinel errors of the package; decoders wrap them with the value met.
var (
	ErrUnknownProtocol = errors.New("mimi protocol: unknown protocol")
	ErrUnknownCode     = errors.New("mimi protocol: unknown status code")
	ErrWrongMessage    = errors.New("mimi protocol: MLS message of the wrong kind")
	ErrUnexpectedField = errors.New("mimi protocol: field not allowed with this status")
	ErrBadDirectory    = errors.New("mimi protocol: malformed directory")
	ErrInvalidURI      = errors.New("mimi protocol: identifier URI is not valid UTF-8 or empty")
)

// Protocol selects the end-to-end protocol of a request (the draft's Protocol enum).
type Protocol uint8

// MLS10 is the only protocol defined.
const MLS10 Protocol = 1

func readProtocol(r *codec.Reader) Protocol {
	p := Protocol(r.Uint8())
	if r.Err() == nil && p != MLS10 {
		r.Fail(fmt.Errorf("%w: %d", ErrUnknownProtocol, p))
	}
	return p
}

func writeProtocol(w *codec.Writer) { w.Uint8(uint8(MLS10)) }

// readCode reads a uint8 status code that must be at most max.
func readCode(r *codec.Reader, what string, max uint8) uint8 {
	c := r.Uint8()
	if r.Err() == nil && c > max {
		r.Fail(fmt.Errorf("%w: %s %d", ErrUnknownCode, what, c))
	}
	return c
}

// readURI reads an IdentifierUri (struct { opaque uri<V>; }) as a string.
func readURI(r *codec.Reader) string { return string(r.Opaque()) }

func writeURI(w *codec.Writer, uri string) { w.Opaque([]byte(uri)) }

func readSuites(r *codec.Reader) []uint16 {
	var out []uint16
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			out = append(out, r.Uint16())
		}
	})
	return out
}

func writeSuites(w *codec.Writer, s []uint16) {
	w.Vector(func(w *codec.Writer) {
		for _, v := range s {
			w.Uint16(v)
		}
	})
}

func readMessages(r *codec.Reader) []wire.MLSMessage {
	var out []wire.MLSMessage
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			var m wire.MLSMessage
			m.UnmarshalMLS(r)
			out = append(out, m)
		}
	})
	return out
}

func writeMessages(w *codec.Writer, ms []wire.MLSMessage) {
	w.Vector(func(w *codec.Writer) {
		for i := range ms {
			ms[i].MarshalMLS(w)
		}
	})
}

// handshakeKind is the content type of a PublicMessage, the only framing whose proposals
// and commits a provider can see (SemiPrivateMessage is not implemented by mls/wire).
func handshakeKind(m *wire.MLSMessage) wire.ContentType {
	if m.PublicMessage == nil {
		return 0
	}
	return m.PublicMessage.Content.ContentType
}

// decodeBody decodes b, which it must consume exactly, into a new T.
func decodeBody[T any, P interface {
	*T
	body
}](what string, b []byte) (*T, error) {
	var v T
	if err := codec.Unmarshal(b, P(&v)); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", what, err)
	}
	return &v, nil
}

// body is an endpoint body: it encodes itself and decodes into a fresh value.
type body interface {
	codec.Marshaler
	codec.Unmarshaler
}

// encode marshals v and decodes the result again, so that nothing this package writes
// (an unknown code, a missing MLS message) is something it would refuse to read.
func encode[T any, P interface {
	*T
	body
}](what string, v P) ([]byte, error) {
	b := codec.Marshal(v)
	var check T
	if err := codec.Unmarshal(b, P(&check)); err != nil {
		return nil, fmt.Errorf("encoding %s: %w", what, err)
	}
	return b, nil
}
