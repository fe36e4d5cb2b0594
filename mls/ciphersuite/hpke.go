package ciphersuite

import (
	"crypto/rand"
	"fmt"

	"github.com/cloudflare/circl/kem"
)

// Seal encrypts plaintext with the suite's AEAD.
func (s *Suite) Seal(key, nonce, aad, plaintext []byte) ([]byte, error) {
	if len(key) != s.nk || len(nonce) != s.nn {
		return nil, fmt.Errorf("sealing: key or nonce size: %w", ErrInvalidKey)
	}
	a, err := s.aead.New(key)
	if err != nil {
		return nil, fmt.Errorf("sealing: %w", err)
	}
	return a.Seal(make([]byte, 0, len(plaintext)+a.Overhead()), nonce, plaintext, aad), nil
}

// Open decrypts ciphertext with the suite's AEAD; a wrong key or a changed
// ciphertext is ErrDecrypt.
func (s *Suite) Open(key, nonce, aad, ciphertext []byte) ([]byte, error) {
	if len(key) != s.nk || len(nonce) != s.nn {
		return nil, fmt.Errorf("opening: key or nonce size: %w", ErrInvalidKey)
	}
	a, err := s.aead.New(key)
	if err != nil {
		return nil, fmt.Errorf("opening: %w", err)
	}
	pt, err := a.Open(nil, nonce, ciphertext, aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// DeriveKeyPair is the KEM's DeriveKeyPair(ikm) (RFC 9180 §7.1.3). circl
// implements it only for an ikm of exactly Nsk bytes, while MLS feeds it Nh
// bytes (64 against P-521's 66, X448's 56), so it is done here.
func (s *Suite) DeriveKeyPair(ikm []byte) (priv, pub []byte, err error) {
	// LabeledExtract("", "dkp_prk", ikm) under the KEM's suite_id.
	dkp := extract(s.kemHash, s.kemHash().Size(), nil, concat([]byte("HPKE-v1"), s.kemSuite[:], []byte("dkp_prk"), ikm))
	labeledExpand := func(label string, ctx []byte) []byte {
		l := []byte{byte(s.nsk >> 8), byte(s.nsk)}
		return expand(s.kemHash, s.kemHash().Size(), dkp, s.nsk, l, []byte("HPKE-v1"), s.kemSuite[:], []byte(label), ctx)
	}
	var sk kem.PrivateKey
	if s.kemBitmask == 0 {
		sk, err = s.kem.UnmarshalBinaryPrivateKey(labeledExpand("sk", nil))
	} else {
		for ctr := 0; ctr < 256; ctr++ {
			cand := labeledExpand("candidate", []byte{byte(ctr)})
			cand[0] &= s.kemBitmask
			// Rejects zero and values not below the group order.
			if sk, err = s.kem.UnmarshalBinaryPrivateKey(cand); err == nil {
				break
			}
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("deriving HPKE key pair: %w", err)
	}
	return marshalKEMPair(sk)
}

func marshalKEMPair(sk kem.PrivateKey) (priv, pub []byte, err error) {
	if priv, err = sk.MarshalBinary(); err != nil {
		return nil, nil, fmt.Errorf("encoding HPKE private key: %w", err)
	}
	if pub, err = sk.Public().MarshalBinary(); err != nil {
		return nil, nil, fmt.Errorf("encoding HPKE public key: %w", err)
	}
	return priv, pub, nil
}

// GenerateKeyPair makes a random HPKE key pair.
func (s *Suite) GenerateKeyPair() (priv, pub []byte, err error) {
	_, sk, err := s.kem.GenerateKeyPair()
	if err != nil {
		return nil, nil, fmt.Errorf("generating HPKE key pair: %w", err)
	}
	return marshalKEMPair(sk)
}

// HPKEPublicKey derives the public key of an HPKE private key.
func (s *Suite) HPKEPublicKey(priv []byte) ([]byte, error) {
	sk, err := s.kem.UnmarshalBinaryPrivateKey(s.padScalar(priv))
	if err != nil {
		return nil, fmt.Errorf("decoding HPKE private key: %w: %w", ErrInvalidKey, err)
	}
	pub, err := sk.Public().MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encoding HPKE public key: %w", err)
	}
	return pub, nil
}

func (s *Suite) publicKey(pub []byte) (kem.PublicKey, error) {
	pk, err := s.kem.UnmarshalBinaryPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("decoding HPKE public key: %w: %w", ErrInvalidKey, err)
	}
	return pk, nil
}

func (s *Suite) privateKey(priv []byte) (kem.PrivateKey, error) {
	sk, err := s.kem.UnmarshalBinaryPrivateKey(s.padScalar(priv))
	if err != nil {
		return nil, fmt.Errorf("decoding HPKE private key: %w: %w", ErrInvalidKey, err)
	}
	return sk, nil
}

// EncryptWithLabel is SealBase(pub, EncryptContext{label, context}, "",
// plaintext) (RFC 9420 §5.1.3).
func (s *Suite) EncryptWithLabel(pub []byte, label string, context, plaintext []byte) (kemOutput, ciphertext []byte, err error) {
	pk, err := s.publicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	snd, err := s.hpke.NewSender(pk, labeled(label, context))
	if err != nil {
		return nil, nil, fmt.Errorf("setting up HPKE sender: %w", err)
	}
	enc, sealer, err := snd.Setup(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("setting up HPKE sender: %w", err)
	}
	ct, err := sealer.Seal(plaintext, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("HPKE seal: %w", err)
	}
	return enc, ct, nil
}

// DecryptWithLabel is OpenBase(kemOutput, priv, EncryptContext{label,
// context}, "", ciphertext); failure is ErrDecrypt.
func (s *Suite) DecryptWithLabel(priv []byte, label string, context, kemOutput, ciphertext []byte) ([]byte, error) {
	sk, err := s.privateKey(priv)
	if err != nil {
		return nil, err
	}
	rcv, err := s.hpke.NewReceiver(sk, labeled(label, context))
	if err != nil {
		return nil, fmt.Errorf("setting up HPKE receiver: %w", err)
	}
	opener, err := rcv.Setup(kemOutput)
	if err != nil {
		return nil, fmt.Errorf("setting up HPKE receiver: %w: %w", ErrDecrypt, err)
	}
	pt, err := opener.Open(ciphertext, nil)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// ExportSecretSender sets up an HPKE base-mode sender to pub with info and
// exports length bytes under exporterContext (external init, RFC 9420 §8.3).
func (s *Suite) ExportSecretSender(pub, info, exporterContext []byte, length int) (kemOutput, secret []byte, err error) {
	pk, err := s.publicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	snd, err := s.hpke.NewSender(pk, info)
	if err != nil {
		return nil, nil, fmt.Errorf("setting up HPKE sender: %w", err)
	}
	enc, sealer, err := snd.Setup(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("setting up HPKE sender: %w", err)
	}
	return enc, sealer.Export(exporterContext, uint(length)), nil
}

// ExportSecretReceiver is the receiving side of ExportSecretSender.
func (s *Suite) ExportSecretReceiver(priv, kemOutput, info, exporterContext []byte, length int) ([]byte, error) {
	sk, err := s.privateKey(priv)
	if err != nil {
		return nil, err
	}
	rcv, err := s.hpke.NewReceiver(sk, info)
	if err != nil {
		return nil, fmt.Errorf("setting up HPKE receiver: %w", err)
	}
	opener, err := rcv.Setup(kemOutput)
	if err != nil {
		return nil, fmt.Errorf("setting up HPKE receiver: %w: %w", ErrDecrypt, err)
	}
	return opener.Export(exporterContext, uint(length)), nil
}

// padScalar left-pads a NIST-curve private key to Nsk bytes: some encoders
// strip the leading zero bytes of the scalar (one P-521 key in 256 has one).
func (s *Suite) padScalar(priv []byte) []byte {
	if s.kemBitmask == 0 || len(priv) >= s.nsk {
		return priv
	}
	p := make([]byte, s.nsk)
	copy(p[s.nsk-len(priv):], priv)
	return p
}

func concat(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}
