package group

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// testCA issues certificates for members' signature keys.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// identity makes an x509 identity in suite s whose certificate the CA signs.
func (ca *testCA) identity(t *testing.T, s *ciphersuite.Suite, name string) *Identity {
	id, err := NewIdentity(s, []byte(name))
	if err != nil {
		t.Fatal(err)
	}
	var pub crypto.PublicKey
	switch s.ID() {
	case 1, 3:
		pub = ed25519.NewKeyFromSeed(id.SigPriv).Public()
	default:
		k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), id.SigPub)
		if err != nil {
			t.Fatal(err)
		}
		pub = k
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	id.Credential = wire.Credential{Type: wire.CredentialX509, Certificates: [][]byte{der}}
	return id
}

func TestX509Auth(t *testing.T) {
	for _, sid := range []ciphersuite.ID{1, 2} {
		s, _ := ciphersuite.Lookup(sid)
		ca := newTestCA(t)
		auth := &X509Auth{Roots: ca.pool}
		alice := ca.identity(t, s, "alice")
		if err := auth.ValidateCredential(&alice.Credential, alice.SigPub); err != nil {
			t.Fatalf("suite %d: valid credential: %v", sid, err)
		}
		bob := ca.identity(t, s, "bob")
		if err := auth.ValidateCredential(&alice.Credential, bob.SigPub); err == nil {
			t.Fatal("credential accepted for another key")
		}
		other := newTestCA(t)
		if err := (&X509Auth{Roots: other.pool}).ValidateCredential(&alice.Credential, alice.SigPub); err == nil {
			t.Fatal("credential accepted under an untrusted root")
		}
		basic := wire.BasicCredential([]byte("x"))
		if err := auth.ValidateCredential(&basic, alice.SigPub); !errors.Is(err, ErrUnsupportedCredential) {
			t.Fatalf("basic credential: %v", err)
		}

		// In a group: Alice adds Bob; a member with a basic credential is
		// refused.
		a, err := Create(Config{Auth: auth}, s, []byte("g"), alice, nil)
		if err != nil {
			t.Fatal(err)
		}
		bkp, bpriv, _ := NewKeyPackage(s, bob)
		res, err := a.Commit(CommitOptions{Add: []*wire.KeyPackage{bkp}, RatchetTreeInWelcome: true})
		if err != nil {
			t.Fatal(err)
		}
		_ = a.MergePendingCommit()
		if _, err := Join(Config{Auth: auth}, res.Welcome, bkp, bpriv, JoinOptions{}); err != nil {
			t.Fatal(err)
		}
		_, ckp, _ := newMember(t, s, "carol")
		if _, err := a.Commit(CommitOptions{Add: []*wire.KeyPackage{ckp}}); !errors.Is(err, ErrCredential) {
			t.Fatalf("basic credential in an x509 group: %v", err)
		}
	}
}

// refuseName is an AuthService that refuses one basic identity.
type refuseName string

func (r refuseName) ValidateCredential(c *wire.Credential, _ []byte) error {
	if string(c.Identity) == string(r) {
		return errors.New("refused")
	}
	return nil
}

// TestExternalSenderCredential: external senders' credentials go through
// the authentication service, in a new group and in a GroupContextExtensions
// commit.
func TestExternalSenderCredential(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	_, dsPub, _ := s.GenerateSignatureKeyPair()
	exts := wire.Extensions{wire.NewExtension(wire.ExtensionExternalSenders,
		&wire.ExternalSenders{{SignatureKey: dsPub, Credential: wire.BasicCredential([]byte("rogue-ds"))}})}
	alice, _, _ := newMember(t, s, "alice")
	cfg := Config{Auth: refuseName("rogue-ds")}
	if _, err := Create(cfg, s, []byte("g"), alice, exts); !errors.Is(err, ErrCredential) {
		t.Fatalf("creating a group with a refused external sender: %v", err)
	}
	a, err := Create(cfg, s, []byte("g"), alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Commit(CommitOptions{Extensions: &exts}); !errors.Is(err, ErrCredential) {
		t.Fatalf("committing a refused external sender: %v", err)
	}
}
