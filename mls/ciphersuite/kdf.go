package ciphersuite

import (
	"crypto/hmac"
	"hash"

	"github.com/lmbridge/lmbridge/mls/codec"
)

// labelPrefix is prepended to every label in ExpandWithLabel,
// SignWithLabel and EncryptWithLabel (RFC 9420 §5.1.2, §5.1.3, §5.2).
const labelPrefix = "MLS 1.0 "

// MAC is HMAC with the suite's hash.
func (s *Suite) MAC(key, data []byte) []byte {
	m := hmac.New(s.newHash, key)
	m.Write(data)
	return m.Sum(make([]byte, 0, s.nh))
}

// NewMAC returns an HMAC with the suite's hash keyed with key, for MACs
// over input written in pieces.
func (s *Suite) NewMAC(key []byte) hash.Hash { return hmac.New(s.newHash, key) }

// Extract is HKDF-Extract(salt, ikm). An empty salt is a string of Nh
// zeros, as HMAC pads it anyway.
func (s *Suite) Extract(salt, ikm []byte) []byte {
	return extract(s.newHash, s.nh, salt, ikm)
}

func extract(newHash func() hash.Hash, nh int, salt, ikm []byte) []byte {
	m := hmac.New(newHash, salt)
	m.Write(ikm)
	return m.Sum(make([]byte, 0, nh))
}

// expand is HKDF-Expand (RFC 5869 §2.3) with info written in parts, so
// callers need not concatenate.
func expand(newHash func() hash.Hash, nh int, prk []byte, length int, info ...[]byte) []byte {
	if length > 255*nh {
		panic("ciphersuite: HKDF-Expand length too large")
	}
	m := hmac.New(newHash, prk)
	out := make([]byte, 0, (length+nh-1)/nh*nh)
	var t []byte
	for i := byte(1); len(out) < length; i++ {
		m.Reset()
		m.Write(t)
		for _, p := range info {
			m.Write(p)
		}
		m.Write([]byte{i})
		out = m.Sum(out)
		t = out[len(out)-nh:]
	}
	return out[:length:length]
}

// ExpandWithLabel is HKDF-Expand(secret, KDFLabel, length) where KDFLabel is
// {uint16 length; opaque label<V> = "MLS 1.0 " + label; opaque context<V>}.
func (s *Suite) ExpandWithLabel(secret []byte, label string, context []byte, length int) []byte {
	var buf [128]byte
	b := append(buf[:0], byte(length>>8), byte(length))
	b = codec.AppendVarint(b, len(labelPrefix)+len(label))
	b = append(b, labelPrefix...)
	b = append(b, label...)
	b = codec.AppendVarint(b, len(context))
	return expand(s.newHash, s.nh, secret, length, b, context)
}

// DeriveSecret is ExpandWithLabel(secret, label, "", Nh).
func (s *Suite) DeriveSecret(secret []byte, label string) []byte {
	return s.ExpandWithLabel(secret, label, nil, s.nh)
}

// DeriveTreeSecret is ExpandWithLabel(secret, label, generation, length),
// with generation as a big-endian uint32 (RFC 9420 §9).
func (s *Suite) DeriveTreeSecret(secret []byte, label string, generation uint32, length int) []byte {
	g := [4]byte{byte(generation >> 24), byte(generation >> 16), byte(generation >> 8), byte(generation)}
	return s.ExpandWithLabel(secret, label, g[:], length)
}

// RefHash is Hash(RefHashInput{opaque label<V>; opaque value<V>}) (§5.2).
// The label is used as given, e.g. "MLS 1.0 KeyPackage Reference".
func (s *Suite) RefHash(label string, value []byte) []byte {
	h := s.newHash()
	var buf [8]byte
	h.Write(codec.AppendVarint(buf[:0], len(label)))
	h.Write([]byte(label))
	h.Write(codec.AppendVarint(buf[:0], len(value)))
	h.Write(value)
	return h.Sum(make([]byte, 0, s.nh))
}

// labeled encodes {opaque label<V> = "MLS 1.0 " + label; opaque content<V>},
// the SignContent and EncryptContext structs.
func labeled(label string, content []byte) []byte {
	n := len(labelPrefix) + len(label)
	b := make([]byte, 0, codec.VarintSize(n)+n+codec.VarintSize(len(content))+len(content))
	b = codec.AppendVarint(b, n)
	b = append(b, labelPrefix...)
	b = append(b, label...)
	b = codec.AppendVarint(b, len(content))
	return append(b, content...)
}
