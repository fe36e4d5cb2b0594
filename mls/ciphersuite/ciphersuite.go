// Package ciphersuite provides the cryptographic operations of the seven
// RFC 9420 ciphersuites (§5.1, §17.1): hash, HKDF with MLS labels, MAC,
// AEAD, HPKE (with the MLS labeled encryption and HPKE export), and
// signatures with MLS labels.
//
// Keys travel as bytes in the encodings the RFC and its test vectors use:
// HPKE keys as SerializePublicKey/SerializePrivateKey (RFC 9180 §7.1.1),
// Ed25519/Ed448 private keys as their RFC 8032 seeds, ECDSA private keys as
// fixed-length big-endian scalars and public keys as uncompressed points, and
// ECDSA signatures DER-encoded.
//
// A Suite is immutable and safe for concurrent use; Lookup returns one
// shared value per ciphersuite.
package ciphersuite

import (
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"

	"github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/kem"
)

// ID is a ciphersuite's registered uint16 value.
type ID uint16

// The ciphersuites of RFC 9420 §17.1.
const (
	MLS128DHKEMX25519AES128GCMSHA256Ed25519        ID = 1
	MLS128DHKEMP256AES128GCMSHA256P256             ID = 2
	MLS128DHKEMX25519ChaCha20Poly1305SHA256Ed25519 ID = 3
	MLS256DHKEMX448AES256GCMSHA512Ed448            ID = 4
	MLS256DHKEMP521AES256GCMSHA512P521             ID = 5
	MLS256DHKEMX448ChaCha20Poly1305SHA512Ed448     ID = 6
	MLS256DHKEMP384AES256GCMSHA384P384             ID = 7
)

// Sentinel errors.
var (
	// ErrUnsupported is returned by Lookup for a ciphersuite not in 1–7.
	ErrUnsupported = errors.New("ciphersuite: unsupported ciphersuite")
	// ErrInvalidKey means a key's encoding is wrong for the suite.
	ErrInvalidKey = errors.New("ciphersuite: invalid key")
	// ErrInvalidSignature means a signature did not verify.
	ErrInvalidSignature = errors.New("ciphersuite: invalid signature")
	// ErrDecrypt means AEAD or HPKE decryption failed (wrong key or tampered
	// ciphertext).
	ErrDecrypt = errors.New("ciphersuite: decryption failed")
)

type sigScheme uint8

const (
	sigEd25519 sigScheme = iota + 1
	sigEd448
	sigECDSA
)

// Suite is one ciphersuite's set of algorithms.
type Suite struct {
	id      ID
	newHash func() hash.Hash
	nh      int

	hpke   hpke.Suite
	kemID  hpke.KEM
	kem    kem.Scheme
	aead   hpke.AEAD
	nk, nn int
	// The KEM's own KDF, its suite_id and its private key size, for
	// DeriveKeyPair (RFC 9180 §7.1.3).
	kemHash  func() hash.Hash
	kemSuite [5]byte
	nsk      int
	// kemBitmask is the top-byte mask for the NIST curves' rejection
	// sampling (0 for the X curves, which need none).
	kemBitmask byte

	sig      sigScheme
	curve    elliptic.Curve
	sigHash  func() hash.Hash
	scalarSz int
}

var suites = func() [8]*Suite {
	var s [8]*Suite
	mk := func(id ID, newHash func() hash.Hash, nh int, k hpke.KEM, kdf hpke.KDF, aead hpke.AEAD, sig sigScheme, curve elliptic.Curve) {
		su := &Suite{id: id, newHash: newHash, nh: nh, hpke: hpke.NewSuite(k, kdf, aead), kemID: k, kem: k.Scheme(),
			aead: aead, nk: int(aead.KeySize()), nn: int(aead.NonceSize()), sig: sig, curve: curve, sigHash: newHash}
		su.kemSuite = [5]byte{'K', 'E', 'M', byte(k >> 8), byte(k)}
		switch k {
		case hpke.KEM_X25519_HKDF_SHA256:
			su.kemHash, su.nsk = sha256.New, 32
		case hpke.KEM_X448_HKDF_SHA512:
			su.kemHash, su.nsk = sha512.New, 56
		case hpke.KEM_P256_HKDF_SHA256:
			su.kemHash, su.nsk, su.kemBitmask = sha256.New, 32, 0xff
		case hpke.KEM_P384_HKDF_SHA384:
			su.kemHash, su.nsk, su.kemBitmask = sha512.New384, 48, 0xff
		case hpke.KEM_P521_HKDF_SHA512:
			su.kemHash, su.nsk, su.kemBitmask = sha512.New, 66, 0x01
		}
		if curve != nil {
			su.scalarSz = (curve.Params().N.BitLen() + 7) / 8
		}
		s[id] = su
	}
	mk(1, sha256.New, 32, hpke.KEM_X25519_HKDF_SHA256, hpke.KDF_HKDF_SHA256, hpke.AEAD_AES128GCM, sigEd25519, nil)
	mk(2, sha256.New, 32, hpke.KEM_P256_HKDF_SHA256, hpke.KDF_HKDF_SHA256, hpke.AEAD_AES128GCM, sigECDSA, elliptic.P256())
	mk(3, sha256.New, 32, hpke.KEM_X25519_HKDF_SHA256, hpke.KDF_HKDF_SHA256, hpke.AEAD_ChaCha20Poly1305, sigEd25519, nil)
	mk(4, sha512.New, 64, hpke.KEM_X448_HKDF_SHA512, hpke.KDF_HKDF_SHA512, hpke.AEAD_AES256GCM, sigEd448, nil)
	mk(5, sha512.New, 64, hpke.KEM_P521_HKDF_SHA512, hpke.KDF_HKDF_SHA512, hpke.AEAD_AES256GCM, sigECDSA, elliptic.P521())
	mk(6, sha512.New, 64, hpke.KEM_X448_HKDF_SHA512, hpke.KDF_HKDF_SHA512, hpke.AEAD_ChaCha20Poly1305, sigEd448, nil)
	mk(7, sha512.New384, 48, hpke.KEM_P384_HKDF_SHA384, hpke.KDF_HKDF_SHA384, hpke.AEAD_AES256GCM, sigECDSA, elliptic.P384())
	return s
}()

// Lookup returns the suite with the given ID, or ErrUnsupported.
func Lookup(id ID) (*Suite, error) {
	if id == 0 || int(id) >= len(suites) {
		return nil, fmt.Errorf("looking up ciphersuite %d: %w", id, ErrUnsupported)
	}
	return suites[id], nil
}

// ID is the suite's registered value.
func (s *Suite) ID() ID { return s.id }

// HashSize is Nh, the output size of the suite's hash and KDF.
func (s *Suite) HashSize() int { return s.nh }

// KeySize is Nk, the AEAD key size.
func (s *Suite) KeySize() int { return s.nk }

// NonceSize is Nn, the AEAD nonce size.
func (s *Suite) NonceSize() int { return s.nn }

// Hash is the suite's hash of data.
func (s *Suite) Hash(data []byte) []byte {
	switch s.nh {
	case 32:
		h := sha256.Sum256(data)
		return h[:]
	case 48:
		h := sha512.Sum384(data)
		return h[:]
	default:
		h := sha512.Sum512(data)
		return h[:]
	}
}

// NewHash returns a fresh instance of the suite's hash, for hashing input
// written in pieces (transcript hashes, tree hashes).
func (s *Suite) NewHash() hash.Hash { return s.newHash() }

// String is the suite's RFC 9420 name.
func (id ID) String() string {
	switch id {
	case MLS128DHKEMX25519AES128GCMSHA256Ed25519:
		return "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"
	case MLS128DHKEMP256AES128GCMSHA256P256:
		return "MLS_128_DHKEMP256_AES128GCM_SHA256_P256"
	case MLS128DHKEMX25519ChaCha20Poly1305SHA256Ed25519:
		return "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519"
	case MLS256DHKEMX448AES256GCMSHA512Ed448:
		return "MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448"
	case MLS256DHKEMP521AES256GCMSHA512P521:
		return "MLS_256_DHKEMP521_AES256GCM_SHA512_P521"
	case MLS256DHKEMX448ChaCha20Poly1305SHA512Ed448:
		return "MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448"
	case MLS256DHKEMP384AES256GCMSHA384P384:
		return "MLS_256_DHKEMP384_AES256GCM_SHA384_P384"
	}
	return fmt.Sprintf("ciphersuite(%d)", uint16(id))
}
