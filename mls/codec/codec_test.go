package codec

import (
	"bytes"
	"errors"
	"testing"

	"github.com/lmbridge/lmbridge/mls/internal/vectors"
)

func TestDeserializationVectors(t *testing.T) {
	var cases []struct {
		Header vectors.Hex `json:"vlbytes_header"`
		Length int         `json:"length"`
	}
	if err := vectors.Load("deserialization.json", &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("no cases")
	}
	for i, c := range cases {
		n, size, err := ParseVarint(c.Header)
		if err != nil || n != c.Length || size != len(c.Header) {
			t.Errorf("case %d: ParseVarint(%x) = %d, %d, %v; want %d, %d", i, c.Header, n, size, err, c.Length, len(c.Header))
		}
		if got := AppendVarint(nil, c.Length); !bytes.Equal(got, c.Header) {
			t.Errorf("case %d: AppendVarint(%d) = %x, want %x", i, c.Length, got, c.Header)
		}
		// The header followed by that many bytes decodes as one vector.
		if c.Length <= 1<<16 {
			in := append(append([]byte{}, c.Header...), make([]byte, c.Length)...)
			r := NewReader(in)
			if got := r.Opaque(); len(got) != c.Length || r.Finish() != nil {
				t.Errorf("case %d: Opaque read %d bytes, err %v", i, len(got), r.Finish())
			}
		}
	}
	if !t.Failed() {
		t.Logf("deserialization.json: %d/%d cases passed", len(cases), len(cases))
	}
}

func TestRejections(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		read func(r *Reader)
		want error
	}{
		{"non-minimal 2-byte varint", []byte{0x40, 0x3f}, func(r *Reader) { r.Opaque() }, ErrNonMinimalVarint},
		{"non-minimal 2-byte zero", []byte{0x40, 0x00}, func(r *Reader) { r.Opaque() }, ErrNonMinimalVarint},
		{"non-minimal 4-byte varint", []byte{0x80, 0x00, 0x3f, 0xff}, func(r *Reader) { r.Opaque() }, ErrNonMinimalVarint},
		{"8-byte varint prefix", []byte{0xc0, 0, 0, 0, 0, 0, 0, 1}, func(r *Reader) { r.Opaque() }, ErrTooLong},
		{"vector longer than input", []byte{0x05, 1, 2, 3}, func(r *Reader) { r.Opaque() }, ErrShort},
		{"oversize vector 4-byte header", []byte{0xbf, 0xff, 0xff, 0xff, 0}, func(r *Reader) { r.Opaque() }, ErrShort},
		{"truncated varint", []byte{0x80, 0x01}, func(r *Reader) { r.Opaque() }, ErrShort},
		{"trailing bytes", []byte{0x01, 0xaa, 0xbb}, func(r *Reader) { r.Opaque() }, ErrTrailingBytes},
		{"short uint32", []byte{1, 2, 3}, func(r *Reader) { r.Uint32() }, ErrShort},
		{"bad optional", []byte{2}, func(r *Reader) { r.Optional() }, ErrInvalidOptional},
		{"vector content not consumed", []byte{0x03, 0, 1, 2}, func(r *Reader) {
			r.Vector(func(r *Reader) { r.Uint16() })
		}, ErrTrailingBytes},
		{"vector content too short", []byte{0x01, 0}, func(r *Reader) {
			r.Vector(func(r *Reader) { r.Uint16() })
		}, ErrShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(tt.in)
			tt.read(r)
			err := r.Finish()
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestStickyError(t *testing.T) {
	r := NewReader([]byte{0x40})
	if r.Opaque() != nil {
		t.Fatal("want nil on error")
	}
	if r.Uint8() != 0 || r.Uint64() != 0 || r.Optional() || !r.Empty() {
		t.Fatal("reads after an error must return zero values")
	}
	if !errors.Is(r.Err(), ErrShort) {
		t.Fatalf("err = %v", r.Err())
	}
}

type sample struct {
	A    uint8
	B    uint16
	C    uint32
	D    uint64
	Blob []byte
	List [][]byte
	Opt  *uint32
}

func (s *sample) MarshalMLS(w *Writer) {
	w.Uint8(s.A)
	w.Uint16(s.B)
	w.Uint32(s.C)
	w.Uint64(s.D)
	w.Opaque(s.Blob)
	w.Vector(func(w *Writer) {
		for _, e := range s.List {
			w.Opaque(e)
		}
	})
	w.Optional(s.Opt != nil, func(w *Writer) { w.Uint32(*s.Opt) })
}

func (s *sample) UnmarshalMLS(r *Reader) {
	s.A = r.Uint8()
	s.B = r.Uint16()
	s.C = r.Uint32()
	s.D = r.Uint64()
	s.Blob = r.Opaque()
	s.List = nil
	r.Vector(func(r *Reader) {
		for !r.Empty() {
			s.List = append(s.List, r.Opaque())
		}
	})
	s.Opt = nil
	if r.Optional() {
		v := r.Uint32()
		s.Opt = &v
	}
}

func TestRoundTrip(t *testing.T) {
	v := uint32(7)
	for _, n := range []int{0, 1, 63, 64, 300, 16383, 16384, 70000} {
		in := sample{A: 1, B: 0x0203, C: 0x04050607, D: 0x08090a0b0c0d0e0f, Blob: bytes.Repeat([]byte{9}, n),
			List: [][]byte{{1}, bytes.Repeat([]byte{2}, n)}, Opt: &v}
		b := Marshal(&in)
		var out sample
		if err := Unmarshal(b, &out); err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !bytes.Equal(Marshal(&out), b) || *out.Opt != 7 || len(out.List) != 2 {
			t.Fatalf("n=%d: round trip mismatch", n)
		}
	}
}

func TestVectorLengthBoundaries(t *testing.T) {
	for _, n := range []int{0, 63, 64, 16383, 16384} {
		var w Writer
		w.Vector(func(w *Writer) { w.Raw(make([]byte, n)) })
		if len(w.Bytes()) != n+VarintSize(n) {
			t.Fatalf("n=%d: length %d", n, len(w.Bytes()))
		}
		got, size, err := ParseVarint(w.Bytes())
		if err != nil || got != n || size != VarintSize(n) {
			t.Fatalf("n=%d: header decodes as %d (%d bytes), %v", n, got, size, err)
		}
	}
}

func FuzzReader(f *testing.F) {
	f.Add(Marshal(&sample{Blob: []byte("x"), List: [][]byte{{1, 2}}}))
	f.Add([]byte{0x40, 0x3f})
	f.Fuzz(func(t *testing.T, in []byte) {
		var s sample
		if err := Unmarshal(in, &s); err != nil {
			return
		}
		// Strict decoding accepts one encoding per value.
		if out := Marshal(&s); !bytes.Equal(out, in) {
			t.Fatalf("re-encoding %x gave %x", in, out)
		}
	})
}
