package ciphersuite

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"

	"github.com/cloudflare/circl/sign/ed448"
)

// SignWithLabel signs SignContent{"MLS 1.0 " + label, content} (RFC 9420
// §5.1.2) with priv in the suite's signature scheme.
func (s *Suite) SignWithLabel(priv []byte, label string, content []byte) ([]byte, error) {
	msg := labeled(label, content)
	switch s.sig {
	case sigEd25519:
		if len(priv) != ed25519.SeedSize {
			return nil, fmt.Errorf("signing: Ed25519 seed of %d bytes: %w", len(priv), ErrInvalidKey)
		}
		return ed25519.Sign(ed25519.NewKeyFromSeed(priv), msg), nil
	case sigEd448:
		if len(priv) != ed448.SeedSize {
			return nil, fmt.Errorf("signing: Ed448 seed of %d bytes: %w", len(priv), ErrInvalidKey)
		}
		return ed448.Sign(ed448.NewKeyFromSeed(priv), msg, ""), nil
	default:
		k, err := s.ecdsaPrivate(priv)
		if err != nil {
			return nil, err
		}
		h := s.sigHash()
		h.Write(msg)
		sig, err := ecdsa.SignASN1(rand.Reader, k, h.Sum(nil))
		if err != nil {
			return nil, fmt.Errorf("signing: %w", err)
		}
		return sig, nil
	}
}

// VerifyWithLabel checks sig over SignContent{"MLS 1.0 " + label, content}
// with pub; a bad signature is ErrInvalidSignature.
func (s *Suite) VerifyWithLabel(pub []byte, label string, content, sig []byte) error {
	msg := labeled(label, content)
	var ok bool
	switch s.sig {
	case sigEd25519:
		if len(pub) != ed25519.PublicKeySize {
			return fmt.Errorf("verifying: Ed25519 public key of %d bytes: %w", len(pub), ErrInvalidKey)
		}
		ok = ed25519.Verify(pub, msg, sig)
	case sigEd448:
		if len(pub) != ed448.PublicKeySize {
			return fmt.Errorf("verifying: Ed448 public key of %d bytes: %w", len(pub), ErrInvalidKey)
		}
		ok = ed448.Verify(pub, msg, sig, "")
	default:
		k, err := ecdsa.ParseUncompressedPublicKey(s.curve, pub)
		if err != nil {
			return fmt.Errorf("verifying: %w: %w", ErrInvalidKey, err)
		}
		h := s.sigHash()
		h.Write(msg)
		ok = ecdsa.VerifyASN1(k, h.Sum(nil), sig)
	}
	if !ok {
		return ErrInvalidSignature
	}
	return nil
}

// ecdsaPrivate parses a big-endian scalar, accepting one shorter than the
// field size (some encoders strip leading zeros).
func (s *Suite) ecdsaPrivate(priv []byte) (*ecdsa.PrivateKey, error) {
	if len(priv) < s.scalarSz {
		p := make([]byte, s.scalarSz)
		copy(p[s.scalarSz-len(priv):], priv)
		priv = p
	}
	k, err := ecdsa.ParseRawPrivateKey(s.curve, priv)
	if err != nil {
		return nil, fmt.Errorf("decoding ECDSA private key: %w: %w", ErrInvalidKey, err)
	}
	return k, nil
}

// SignaturePublicKey derives the public key of a signature private key.
func (s *Suite) SignaturePublicKey(priv []byte) ([]byte, error) {
	switch s.sig {
	case sigEd25519:
		if len(priv) != ed25519.SeedSize {
			return nil, fmt.Errorf("Ed25519 seed of %d bytes: %w", len(priv), ErrInvalidKey)
		}
		return []byte(ed25519.NewKeyFromSeed(priv).Public().(ed25519.PublicKey)), nil
	case sigEd448:
		if len(priv) != ed448.SeedSize {
			return nil, fmt.Errorf("Ed448 seed of %d bytes: %w", len(priv), ErrInvalidKey)
		}
		return []byte(ed448.NewKeyFromSeed(priv).Public().(ed448.PublicKey)), nil
	default:
		k, err := s.ecdsaPrivate(priv)
		if err != nil {
			return nil, err
		}
		pub, err := k.PublicKey.Bytes()
		if err != nil {
			return nil, fmt.Errorf("encoding ECDSA public key: %w", err)
		}
		return pub, nil
	}
}

// GenerateSignatureKeyPair makes a random signature key pair.
func (s *Suite) GenerateSignatureKeyPair() (priv, pub []byte, err error) {
	switch s.sig {
	case sigEd25519:
		pk, sk, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("generating Ed25519 key: %w", err)
		}
		return sk.Seed(), pk, nil
	case sigEd448:
		pk, sk, err := ed448.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("generating Ed448 key: %w", err)
		}
		return sk.Seed(), pk, nil
	default:
		k, err := ecdsa.GenerateKey(s.curve, rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("generating ECDSA key: %w", err)
		}
		if priv, err = k.Bytes(); err != nil {
			return nil, nil, fmt.Errorf("encoding ECDSA key: %w", err)
		}
		if pub, err = k.PublicKey.Bytes(); err != nil {
			return nil, nil, fmt.Errorf("encoding ECDSA key: %w", err)
		}
		return priv, pub, nil
	}
}
