package federation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation"
)

// selfSignedCert writes a certificate for 127.0.0.1 and returns its paths and a pool that trusts it.
func selfSignedCert(t *testing.T) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "lmbridge test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(priv)
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

func TestServeTLS(t *testing.T) {
	certPath, keyPath, pool := selfSignedCert(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	name := ln.Addr().String()
	key := federation.GenerateSigningKey()
	handler := &recordingHandler{}
	cfg := ListenOptions{TLSCert: certPath, TLSKey: keyPath}
	client := NewClient(name, key, ClientOptions{TLSConfig: &tls.Config{RootCAs: pool}})
	server := NewServer(name, NewKeyServer(name, key), NewKeyRing(client), handler, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var protoMajor atomic.Int32
	recordProto := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protoMajor.Store(int32(r.ProtoMajor))
		server.ServeHTTP(w, r)
	})
	go func() { done <- Serve(ctx, ln, cfg, recordProto) }()

	// The server talks to itself over TLS: key fetch, then a signed request verified with the fetched key.
	if _, err := client.GetEvent(ctx, name, "$ev"); err != nil {
		t.Fatalf("signed request over TLS: %v", err)
	}
	if protoMajor.Load() != 2 {
		t.Errorf("our client spoke HTTP/%d, want HTTP/2", protoMajor.Load())
	}
	// HTTP/2 and TLS 1.3 are negotiated.
	raw := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	resp, err := raw.Get("https://" + name + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
		t.Errorf("proto %s, TLS %+v", resp.Proto, resp.TLS)
	}
	// Plain HTTP is not spoken on the TLS listener.
	if resp, err := http.Get("http://" + name + "/_matrix/key/v2/server"); err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP answered 200 on the TLS listener")
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if conn, err := net.Dial("tcp", name); err == nil {
		_ = conn.Close()
		t.Error("listener still accepts after shutdown")
	}
}

func TestServeRefusesPlainHTTPUnlessAllowed(t *testing.T) {
	err := ListenAndServe(context.Background(), ListenOptions{Listen: "127.0.0.1:0"}, http.NotFoundHandler())
	if !errors.Is(err, ErrNoTLS) {
		t.Errorf("no TLS, plain HTTP not allowed: got %v", err)
	}
	err = ListenAndServe(context.Background(), ListenOptions{Listen: "127.0.0.1:0", TLSCert: "only-cert.pem"}, http.NotFoundHandler())
	if err == nil {
		t.Error("certificate without key accepted")
	}
	err = ListenAndServe(context.Background(), ListenOptions{Listen: "127.0.0.1:0", TLSCert: "/nonexistent.pem", TLSKey: "/nonexistent.key"}, http.NotFoundHandler())
	if err == nil {
		t.Error("missing certificate files accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err = ListenAndServe(ctx, ListenOptions{Listen: "127.0.0.1:0", AllowPlainHTTP: true}, http.NotFoundHandler()); err != nil {
		t.Errorf("plain HTTP allowed, cancelled at once: %v", err)
	}
}
