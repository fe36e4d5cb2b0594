package group

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// ErrUnsupportedCredential means a credential type an AuthService does not
// accept.
var ErrUnsupportedCredential = errors.New("group: unsupported credential type")

// X509Auth is an AuthService for x509 credentials (RFC 9420 §5.3.1): the
// chain (leaf first) must verify to one of Roots, and the leaf
// certificate's key must be the member's signature key. Basic credentials
// are accepted only with AllowBasic, whose identity is then unchecked.
// Ed448 certificates are not supported (crypto/x509 does not parse them).
type X509Auth struct {
	Roots      *x509.CertPool
	AllowBasic bool
	// Now is the time chains are checked at; nil means time.Now.
	Now func() time.Time
}

// ValidateCredential implements AuthService.
func (a *X509Auth) ValidateCredential(cred *wire.Credential, sigKey []byte) error {
	switch cred.Type {
	case wire.CredentialBasic:
		if a.AllowBasic {
			return nil
		}
		return fmt.Errorf("%w: basic", ErrUnsupportedCredential)
	case wire.CredentialX509:
	default:
		return fmt.Errorf("%w: %d", ErrUnsupportedCredential, cred.Type)
	}
	if len(cred.Certificates) == 0 {
		return errors.New("x509 credential without certificates")
	}
	certs := make([]*x509.Certificate, len(cred.Certificates))
	for i, der := range cred.Certificates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("parsing certificate %d: %w", i, err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	now := time.Now()
	if a.Now != nil {
		now = a.Now()
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: a.Roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("verifying certificate chain: %w", err)
	}
	var key []byte
	switch k := certs[0].PublicKey.(type) {
	case ed25519.PublicKey:
		key = k
	case *ecdsa.PublicKey:
		b, err := k.Bytes()
		if err != nil {
			return fmt.Errorf("encoding certificate key: %w", err)
		}
		key = b
	default:
		return fmt.Errorf("%w: certificate key of type %T", ErrUnsupportedCredential, k)
	}
	if !bytes.Equal(key, sigKey) {
		return errors.New("certificate key is not the member's signature key")
	}
	return nil
}

// sameIdentity is the default successor rule: the same credential type and
// the same identity, a basic credential's identity bytes or an x509
// credential's leaf certificate subject and subject alternative names (so
// a renewed certificate is a successor).
func sameIdentity(old, next *wire.Credential) error {
	if old.Type != next.Type {
		return fmt.Errorf("credential type %d replaced by %d", old.Type, next.Type)
	}
	switch old.Type {
	case wire.CredentialBasic:
		if !bytes.Equal(old.Identity, next.Identity) {
			return fmt.Errorf("identity %q replaced by %q", old.Identity, next.Identity)
		}
		return nil
	case wire.CredentialX509:
		a, err := x509Identity(old)
		if err != nil {
			return err
		}
		b, err := x509Identity(next)
		if err != nil {
			return err
		}
		if !bytes.Equal(a, b) {
			return errors.New("certificate subject or alternative names changed")
		}
		return nil
	}
	if !bytes.Equal(codec.Marshal(old), codec.Marshal(next)) {
		return fmt.Errorf("credential of type %d changed", old.Type)
	}
	return nil
}

// x509Identity is what names an x509 credential's holder: the leaf
// certificate's subject and its subject alternative names.
func x509Identity(c *wire.Credential) ([]byte, error) {
	if len(c.Certificates) == 0 {
		return nil, errors.New("x509 credential without certificates")
	}
	cert, err := x509.ParseCertificate(c.Certificates[0])
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	id := append([]byte(nil), cert.RawSubject...)
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidSubjectAltName) {
			id = append(id, e.Value...)
		}
	}
	return id, nil
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
