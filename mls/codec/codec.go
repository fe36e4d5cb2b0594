// Package codec implements the TLS presentation language as RFC 9420 §2.1
// uses it: big-endian integers, variable-length vectors with a QUIC-style
// varint length prefix, and optional values.
//
// Decoding is strict, because MLS hashes and signs encodings: a length prefix
// that is not in its shortest form, a vector that is longer than what remains,
// a presence byte other than 0 or 1, and bytes left over after a value are all
// errors. A Reader therefore accepts exactly one encoding of each value, and
// decoding then re-encoding reproduces the input.
//
// Slices returned by a Reader alias its input; callers must not modify the
// input while decoded values are in use.
package codec

import (
	"errors"
	"fmt"
)

// Sentinel errors, wrapped with the offset and what was being read.
var (
	// ErrShort means the input ended before the value did.
	ErrShort = errors.New("codec: input too short")
	// ErrTrailingBytes means bytes remained after the value (or after a
	// vector's content).
	ErrTrailingBytes = errors.New("codec: trailing bytes")
	// ErrNonMinimalVarint means a varint length was not in its shortest form.
	ErrNonMinimalVarint = errors.New("codec: non-minimal varint")
	// ErrTooLong means a length is 2^30 or more (the 0b11 varint prefix) or
	// exceeds what the caller allows.
	ErrTooLong = errors.New("codec: length too large")
	// ErrInvalidOptional means an optional's presence byte was neither 0 nor 1.
	ErrInvalidOptional = errors.New("codec: invalid optional presence byte")
)

// MaxVarint is the largest length a varint can carry (2^30 − 1).
const MaxVarint = 1<<30 - 1

// Marshaler is implemented by values that encode themselves.
type Marshaler interface {
	MarshalMLS(w *Writer)
}

// Unmarshaler is implemented by values that decode themselves. Errors are
// recorded on the Reader (see Reader.Fail), not returned.
type Unmarshaler interface {
	UnmarshalMLS(r *Reader)
}

// Marshal encodes v.
func Marshal(v Marshaler) []byte {
	var w Writer
	v.MarshalMLS(&w)
	return w.Bytes()
}

// Unmarshal decodes v from b, which it must consume exactly.
func Unmarshal(b []byte, v Unmarshaler) error {
	r := NewReader(b)
	v.UnmarshalMLS(r)
	return r.Finish()
}

// AppendVarint appends the shortest varint encoding of n (n ≤ MaxVarint).
// It panics for larger n: no MLS value can be that long, so it is a bug.
func AppendVarint(b []byte, n int) []byte {
	switch {
	case n < 0:
		panic("codec: negative varint")
	case n < 1<<6:
		return append(b, byte(n))
	case n < 1<<14:
		return append(b, byte(n>>8)|0x40, byte(n))
	case n <= MaxVarint:
		return append(b, byte(n>>24)|0x80, byte(n>>16), byte(n>>8), byte(n))
	default:
		panic("codec: varint too large")
	}
}

// VarintSize is the length of the shortest varint encoding of n.
func VarintSize(n int) int {
	switch {
	case n < 1<<6:
		return 1
	case n < 1<<14:
		return 2
	default:
		return 4
	}
}

// ParseVarint decodes a varint from the start of b, returning its value and
// the number of bytes it occupied.
func ParseVarint(b []byte) (n int, size int, err error) {
	if len(b) == 0 {
		return 0, 0, ErrShort
	}
	switch b[0] >> 6 {
	case 0:
		return int(b[0]), 1, nil
	case 1:
		if len(b) < 2 {
			return 0, 0, ErrShort
		}
		n = int(b[0]&0x3f)<<8 | int(b[1])
		if n < 1<<6 {
			return 0, 0, ErrNonMinimalVarint
		}
		return n, 2, nil
	case 2:
		if len(b) < 4 {
			return 0, 0, ErrShort
		}
		n = int(b[0]&0x3f)<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		if n < 1<<14 {
			return 0, 0, ErrNonMinimalVarint
		}
		return n, 4, nil
	default:
		return 0, 0, ErrTooLong
	}
}

// Writer appends encodings to a buffer. The zero value is ready to use.
type Writer struct {
	buf []byte
}

// NewWriter returns a Writer that appends to buf (which may be nil), so a
// caller can reuse a buffer across messages.
func NewWriter(buf []byte) *Writer { return &Writer{buf: buf} }

// Bytes returns what has been written. It aliases the Writer's buffer.
func (w *Writer) Bytes() []byte { return w.buf }

// Len is the number of bytes written.
func (w *Writer) Len() int { return len(w.buf) }

// Uint8 writes v.
func (w *Writer) Uint8(v uint8) { w.buf = append(w.buf, v) }

// Uint16 writes v big-endian.
func (w *Writer) Uint16(v uint16) { w.buf = append(w.buf, byte(v>>8), byte(v)) }

// Uint32 writes v big-endian.
func (w *Writer) Uint32(v uint32) {
	w.buf = append(w.buf, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// Uint64 writes v big-endian.
func (w *Writer) Uint64(v uint64) {
	w.buf = append(w.buf, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32),
		byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// Raw writes b with no length prefix.
func (w *Writer) Raw(b []byte) { w.buf = append(w.buf, b...) }

// Opaque writes b as opaque<V>: a varint length, then the bytes.
func (w *Writer) Opaque(b []byte) {
	w.buf = AppendVarint(w.buf, len(b))
	w.buf = append(w.buf, b...)
}

// Vector writes what fn writes, prefixed with its length as a varint.
func (w *Writer) Vector(fn func(w *Writer)) {
	// Reserve the 1-byte prefix (the common case for MLS's many short
	// vectors) and shift the content right if it turns out longer.
	start := len(w.buf)
	w.buf = append(w.buf, 0)
	fn(w)
	n := len(w.buf) - start - 1
	size := VarintSize(n)
	if size == 1 {
		w.buf[start] = byte(n)
		return
	}
	var pad [3]byte
	w.buf = append(w.buf, pad[:size-1]...)
	copy(w.buf[start+size:], w.buf[start+1:start+1+n])
	AppendVarint(w.buf[start:start], n)
}

// Optional writes a presence byte (1 if present, else 0), then what fn
// writes if present.
func (w *Writer) Optional(present bool, fn func(w *Writer)) {
	if !present {
		w.buf = append(w.buf, 0)
		return
	}
	w.buf = append(w.buf, 1)
	fn(w)
}

// Reader decodes from a byte slice. Its error is sticky: after the first
// error every method returns zero values and Err reports that error.
type Reader struct {
	b   []byte
	off int
	err error
}

// NewReader returns a Reader over b.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

// Err is the first error met, or nil.
func (r *Reader) Err() error { return r.err }

// Fail records err (if no error is recorded yet), for errors a caller finds
// itself, such as an unknown enum value.
func (r *Reader) Fail(err error) {
	if r.err == nil && err != nil {
		r.err = err
	}
}

// Empty reports whether no bytes remain (or an error has been recorded, so
// that loops over vector elements end).
func (r *Reader) Empty() bool { return r.err != nil || r.off == len(r.b) }

// Len is the number of bytes remaining.
func (r *Reader) Len() int { return len(r.b) - r.off }

// Finish returns Err, or ErrTrailingBytes if input remains.
func (r *Reader) Finish() error {
	if r.err != nil {
		return r.err
	}
	if r.off != len(r.b) {
		return fmt.Errorf("%w: %d bytes after offset %d", ErrTrailingBytes, len(r.b)-r.off, r.off)
	}
	return nil
}

func (r *Reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b)-r.off {
		r.err = fmt.Errorf("reading %s at offset %d: need %d bytes, have %d: %w", what, r.off, n, len(r.b)-r.off, ErrShort)
		return nil
	}
	s := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return s
}

// Uint8 reads a uint8.
func (r *Reader) Uint8() uint8 {
	b := r.take(1, "uint8")
	if b == nil {
		return 0
	}
	return b[0]
}

// Uint16 reads a big-endian uint16.
func (r *Reader) Uint16() uint16 {
	b := r.take(2, "uint16")
	if b == nil {
		return 0
	}
	return uint16(b[0])<<8 | uint16(b[1])
}

// Uint32 reads a big-endian uint32.
func (r *Reader) Uint32() uint32 {
	b := r.take(4, "uint32")
	if b == nil {
		return 0
	}
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// Uint64 reads a big-endian uint64.
func (r *Reader) Uint64() uint64 {
	b := r.take(8, "uint64")
	if b == nil {
		return 0
	}
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// Raw reads n bytes with no length prefix.
func (r *Reader) Raw(n int) []byte {
	if n < 0 {
		r.Fail(fmt.Errorf("reading %d raw bytes at offset %d: %w", n, r.off, ErrTooLong))
		return nil
	}
	b := r.take(n, "raw bytes")
	if b == nil && r.err == nil {
		return []byte{}
	}
	return b
}

// varint reads a vector length prefix.
func (r *Reader) varint() (int, bool) {
	if r.err != nil {
		return 0, false
	}
	n, size, err := ParseVarint(r.b[r.off:])
	if err != nil {
		r.err = fmt.Errorf("reading vector length at offset %d: %w", r.off, err)
		return 0, false
	}
	r.off += size
	return n, true
}

// Opaque reads opaque<V>: a varint length, then that many bytes. An empty
// vector gives a non-nil empty slice.
func (r *Reader) Opaque() []byte {
	n, ok := r.varint()
	if !ok {
		return nil
	}
	return r.take(n, "vector")
}

// Vector reads a varint length, then calls fn with a Reader over exactly
// that many bytes. Content fn leaves unread is ErrTrailingBytes; an error in
// fn becomes this Reader's error.
func (r *Reader) Vector(fn func(r *Reader)) {
	b := r.Opaque()
	if r.err != nil {
		return
	}
	start := r.off - len(b)
	sub := Reader{b: b}
	fn(&sub)
	if sub.err == nil && sub.off != len(sub.b) {
		sub.err = fmt.Errorf("%w: %d bytes inside vector at offset %d", ErrTrailingBytes, len(sub.b)-sub.off, start)
	}
	if sub.err != nil {
		r.err = fmt.Errorf("in vector at offset %d: %w", start, sub.err)
	}
}

// Optional reads a presence byte and reports whether the value follows.
func (r *Reader) Optional() bool {
	off := r.off
	switch r.Uint8() {
	case 0:
		return false
	case 1:
		return true
	default:
		r.Fail(fmt.Errorf("reading optional at offset %d: %w", off, ErrInvalidOptional))
		return false
	}
}
