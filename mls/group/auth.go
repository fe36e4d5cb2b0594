package group

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

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
