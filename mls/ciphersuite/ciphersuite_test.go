package ciphersuite

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/lmbridge/lmbridge/mls/internal/vectors"
)

type hx = vectors.Hex

type cryptoBasics struct {
	CipherSuite ID `json:"cipher_suite"`
	RefHash     struct {
		Label string
		Value hx
		Out   hx
	} `json:"ref_hash"`
	ExpandWithLabel struct {
		Secret  hx
		Label   string
		Context hx
		Length  int
		Out     hx
	} `json:"expand_with_label"`
	DeriveSecret struct {
		Secret hx
		Label  string
		Out    hx
	} `json:"derive_secret"`
	DeriveTreeSecret struct {
		Secret     hx
		Label      string
		Generation uint32
		Length     int
		Out        hx
	} `json:"derive_tree_secret"`
	SignWithLabel struct {
		Priv      hx
		Pub       hx
		Content   hx
		Label     string
		Signature hx
	} `json:"sign_with_label"`
	EncryptWithLabel struct {
		Priv       hx
		Pub        hx
		Label      string
		Context    hx
		Plaintext  hx
		KEMOutput  hx `json:"kem_output"`
		Ciphertext hx
	} `json:"encrypt_with_label"`
}

func TestCryptoBasicsVectors(t *testing.T) {
	var cases []cryptoBasics
	if err := vectors.Load("crypto-basics.json", &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) != 7 {
		t.Fatalf("%d cases, want one per suite (7)", len(cases))
	}
	passed := 0
	for _, c := range cases {
		if t.Run(fmt.Sprintf("suite%d", c.CipherSuite), func(t *testing.T) { checkCryptoBasics(t, c) }) {
			passed++
		}
	}
	t.Logf("crypto-basics.json: %d/%d cases (one per suite) passed", passed, len(cases))
}

func checkCryptoBasics(t *testing.T, c cryptoBasics) {
	{
		s, err := Lookup(c.CipherSuite)
		if err != nil {
			t.Fatalf("suite %d: %v", c.CipherSuite, err)
		}
		r := c.RefHash
		if got := s.RefHash(r.Label, r.Value); !bytes.Equal(got, r.Out) {
			t.Errorf("suite %d: RefHash = %x, want %x", c.CipherSuite, got, r.Out)
		}
		e := c.ExpandWithLabel
		if got := s.ExpandWithLabel(e.Secret, e.Label, e.Context, e.Length); !bytes.Equal(got, e.Out) {
			t.Errorf("suite %d: ExpandWithLabel = %x, want %x", c.CipherSuite, got, e.Out)
		}
		d := c.DeriveSecret
		if got := s.DeriveSecret(d.Secret, d.Label); !bytes.Equal(got, d.Out) {
			t.Errorf("suite %d: DeriveSecret = %x, want %x", c.CipherSuite, got, d.Out)
		}
		dt := c.DeriveTreeSecret
		if got := s.DeriveTreeSecret(dt.Secret, dt.Label, dt.Generation, dt.Length); !bytes.Equal(got, dt.Out) {
			t.Errorf("suite %d: DeriveTreeSecret = %x, want %x", c.CipherSuite, got, dt.Out)
		}

		sg := c.SignWithLabel
		if pub, err := s.SignaturePublicKey(sg.Priv); err != nil || !bytes.Equal(pub, sg.Pub) {
			t.Errorf("suite %d: SignaturePublicKey = %x, %v; want %x", c.CipherSuite, pub, err, sg.Pub)
		}
		if err := s.VerifyWithLabel(sg.Pub, sg.Label, sg.Content, sg.Signature); err != nil {
			t.Errorf("suite %d: vector signature: %v", c.CipherSuite, err)
		}
		sig, err := s.SignWithLabel(sg.Priv, sg.Label, sg.Content)
		if err != nil {
			t.Errorf("suite %d: SignWithLabel: %v", c.CipherSuite, err)
		} else if err := s.VerifyWithLabel(sg.Pub, sg.Label, sg.Content, sig); err != nil {
			t.Errorf("suite %d: own signature: %v", c.CipherSuite, err)
		}
		if err := s.VerifyWithLabel(sg.Pub, sg.Label+"x", sg.Content, sg.Signature); !errors.Is(err, ErrInvalidSignature) {
			t.Errorf("suite %d: signature under another label: %v", c.CipherSuite, err)
		}

		en := c.EncryptWithLabel
		if pt, err := s.DecryptWithLabel(en.Priv, en.Label, en.Context, en.KEMOutput, en.Ciphertext); err != nil || !bytes.Equal(pt, en.Plaintext) {
			t.Errorf("suite %d: DecryptWithLabel = %x, %v; want %x", c.CipherSuite, pt, err, en.Plaintext)
		}
		if pub, err := s.HPKEPublicKey(en.Priv); err != nil || !bytes.Equal(pub, en.Pub) {
			t.Errorf("suite %d: HPKEPublicKey = %x, %v", c.CipherSuite, pub, err)
		}
		kem, ct, err := s.EncryptWithLabel(en.Pub, en.Label, en.Context, en.Plaintext)
		if err != nil {
			t.Errorf("suite %d: EncryptWithLabel: %v", c.CipherSuite, err)
		} else if pt, err := s.DecryptWithLabel(en.Priv, en.Label, en.Context, kem, ct); err != nil || !bytes.Equal(pt, en.Plaintext) {
			t.Errorf("suite %d: own ciphertext: %v", c.CipherSuite, err)
		}
		if _, err := s.DecryptWithLabel(en.Priv, en.Label, append([]byte{1}, en.Context...), en.KEMOutput, en.Ciphertext); !errors.Is(err, ErrDecrypt) {
			t.Errorf("suite %d: decrypt under another context: %v", c.CipherSuite, err)
		}
	}
}

func TestLookupUnsupported(t *testing.T) {
	for _, id := range []ID{0, 8, 0xffff} {
		if _, err := Lookup(id); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Lookup(%d): %v", id, err)
		}
	}
}

func TestKeyPairs(t *testing.T) {
	for id := ID(1); id <= 7; id++ {
		s, _ := Lookup(id)
		priv, pub, err := s.GenerateSignatureKeyPair()
		if err != nil {
			t.Fatalf("suite %d: %v", id, err)
		}
		if p, err := s.SignaturePublicKey(priv); err != nil || !bytes.Equal(p, pub) {
			t.Fatalf("suite %d: public key mismatch", id)
		}
		// DeriveKeyPair takes Nh bytes, which differs from Nsk for X448 and P-521.
		ikm := bytes.Repeat([]byte{byte(id)}, s.HashSize())
		hpriv, hpub, err := s.DeriveKeyPair(ikm)
		if err != nil {
			t.Fatalf("suite %d: DeriveKeyPair: %v", id, err)
		}
		hpriv2, _, _ := s.DeriveKeyPair(ikm)
		if !bytes.Equal(hpriv, hpriv2) {
			t.Fatalf("suite %d: DeriveKeyPair not deterministic", id)
		}
		kemOut, secret, err := s.ExportSecretSender(hpub, []byte("info"), []byte("ctx"), s.HashSize())
		if err != nil {
			t.Fatalf("suite %d: export: %v", id, err)
		}
		got, err := s.ExportSecretReceiver(hpriv, kemOut, []byte("info"), []byte("ctx"), s.HashSize())
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("suite %d: export mismatch: %v", id, err)
		}
		key, nonce := make([]byte, s.KeySize()), make([]byte, s.NonceSize())
		ct, err := s.Seal(key, nonce, []byte("aad"), []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Open(key, nonce, []byte("aae"), ct); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("suite %d: open with wrong aad: %v", id, err)
		}
	}
}
