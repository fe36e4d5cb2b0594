// Package testca is a throwaway certificate authority for the tests and the demo of mutually authenticated TLS
// between MIMI providers: a CA and certificates for domains, good for server and client authentication, in memory or
// as PEM files. The T functions fail the test on an error.
package testca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// CA is a certificate authority that lives for one test.
type CA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	// Pool holds the CA's certificate, for the peers' side of the handshake.
	Pool *x509.CertPool

	mu     sync.Mutex
	serial int64
}

// NewT is New for a test.
func NewT(t testing.TB) *CA {
	t.Helper()
	ca, err := New()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// New makes a CA valid for a day.
func New() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("making the CA key: %w", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lmbridge test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("making the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("reading the CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{key: key, cert: cert, Pool: pool, serial: 1}, nil
}

// IssueT makes a certificate for domain, good for TLS server and client authentication, for a test.
func (ca *CA) IssueT(t testing.TB, domain string) tls.Certificate {
	t.Helper()
	der, key, err := ca.issue(domain)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (ca *CA) issue(domain string) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("making a key for %s: %w", domain, err)
	}
	ca.mu.Lock()
	ca.serial++
	sn := ca.serial
	ca.mu.Unlock()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(sn), Subject: pkix.Name{CommonName: domain}, DNSNames: []string{domain},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("making a certificate for %s: %w", domain, err)
	}
	return der, key, nil
}

// Files is a certificate, its key and the CA bundle as PEM files.
type Files struct {
	Cert, Key, CA string
}

// WriteFilesT is WriteFiles for a test.
func (ca *CA) WriteFilesT(t testing.TB, dir, domain string) Files {
	t.Helper()
	f, err := ca.WriteFiles(dir, domain)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// WriteFiles issues a certificate for domain and writes it, its key and the CA's certificate into dir.
func (ca *CA) WriteFiles(dir, domain string) (Files, error) {
	der, key, err := ca.issue(domain)
	if err != nil {
		return Files{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Files{}, fmt.Errorf("encoding the key for %s: %w", domain, err)
	}
	f := Files{Cert: filepath.Join(dir, domain+".crt"), Key: filepath.Join(dir, domain+".key"), CA: filepath.Join(dir, "ca.crt")}
	for path, block := range map[string]*pem.Block{
		f.Cert: {Type: "CERTIFICATE", Bytes: der},
		f.Key:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
		f.CA:   {Type: "CERTIFICATE", Bytes: ca.cert.Raw},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			return Files{}, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return f, nil
}
