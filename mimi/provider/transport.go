package provider

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lmbridge/lmbridge/mimi/protocol"
)

// maxBody bounds every request and response body read.
const maxBody = 4 << 20

// TLSConfig is a provider's certificate (whose names must include its domain, for both server and client
// authentication) and the CA pool its peers' certificates must chain to.
type TLSConfig struct {
	Certificate tls.Certificate
	Roots       *x509.CertPool
}

// LoadTLS reads a PEM certificate chain, its key and a PEM CA bundle.
func LoadTLS(certFile, keyFile, caFile string) (*TLSConfig, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading MIMI TLS certificate: %w", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("loading MIMI CA bundle: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("loading MIMI CA bundle: no certificates in %s", caFile)
	}
	return &TLSConfig{Certificate: cert, Roots: roots}, nil
}

func (t *TLSConfig) server() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{t.Certificate},
		ClientCAs:    t.Roots,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
}

// peers is the client side of the provider protocol: mutual TLS, the From header, directory discovery.
type peers struct {
	domain string
	locate func(domain string) string
	client *http.Client
	mu     sync.Mutex
	dirs   map[string]*protocol.Directory
}

func newPeers(domain string, t *TLSConfig, locate func(string) string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *peers {
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{t.Certificate}, RootCAs: t.Roots},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	if dial != nil {
		tr.DialContext = dial
	}
	if locate == nil {
		locate = func(d string) string { return "https://" + d }
	}
	return &peers{domain: domain, locate: locate, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, dirs: map[string]*protocol.Directory{}}
}

func (p *peers) do(ctx context.Context, method, url string, body []byte) (int, []byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	req.Header.Set("From", "mimi@"+p.domain)
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%w: reading response: %w", ErrUnreachable, err)
	}
	return resp.StatusCode, b, resp.Header, nil
}

func (p *peers) directory(ctx context.Context, domain string) (*protocol.Directory, error) {
	p.mu.Lock()
	d := p.dirs[domain]
	p.mu.Unlock()
	if d != nil {
		return d, nil
	}
	status, b, _, err := p.do(ctx, http.MethodGet, p.locate(domain)+protocol.WellKnownDirectory, nil)
	if err != nil {
		return nil, fmt.Errorf("fetching directory of %s: %w", domain, err)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("fetching directory of %s: %w: HTTP %d", domain, ErrUnreachable, status)
	}
	if d, err = protocol.ParseDirectory(b); err != nil {
		return nil, fmt.Errorf("fetching directory of %s: %w", domain, err)
	}
	p.mu.Lock()
	p.dirs[domain] = d
	p.mu.Unlock()
	return d, nil
}

// post sends body to one of domain's endpoints (chosen from its directory) and returns the status and body.
func (p *peers) post(ctx context.Context, domain string, endpoint func(*protocol.Directory) string, vars map[string]string, body []byte) (int, []byte, http.Header, error) {
	d, err := p.directory(ctx, domain)
	if err != nil {
		return 0, nil, nil, err
	}
	url, err := protocol.Expand(endpoint(d), vars)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return p.do(ctx, http.MethodPost, url, body)
}

// peerError turns a non-2xx answer into an error.
func peerError(what string, status int, body []byte) error {
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200]
	}
	switch status {
	case http.StatusNotFound:
		return fmt.Errorf("%s: %w: HTTP %d: %s", what, ErrUnknownRoom, status, msg)
	case http.StatusBadRequest:
		return fmt.Errorf("%s: %w: HTTP %d: %s", what, ErrBadRequest, status, msg)
	case http.StatusForbidden:
		return fmt.Errorf("%s: %w: HTTP %d: %s", what, ErrNotAllowed, status, msg)
	}
	return fmt.Errorf("%s: %w: HTTP %d: %s", what, ErrUnreachable, status, msg)
}

// retryAfter reads a Retry-After header in seconds.
func retryAfter(h http.Header) time.Duration {
	if h == nil {
		return 0
	}
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

// peerDomain authenticates a request's source: the From header names a provider, and the verified TLS client
// certificate must be valid for that name (RFC 6125).
func peerDomain(r *http.Request) (string, error) {
	from := r.Header.Get("From")
	domain, ok := strings.CutPrefix(from, "mimi@")
	if !ok || domain == "" || strings.ContainsAny(domain, "@/ ") {
		return "", fmt.Errorf("%w: From header %q is not mimi@<domain>", ErrPeerAuth, from)
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", fmt.Errorf("%w: no client certificate", ErrPeerAuth)
	}
	if err := r.TLS.PeerCertificates[0].VerifyHostname(domain); err != nil {
		return "", fmt.Errorf("%w: client certificate is not valid for %s: %w", ErrPeerAuth, domain, err)
	}
	return domain, nil
}

func directoryFor(base string) []byte {
	d := protocol.Directory{
		KeyMaterial:   base + "/v1/keyMaterial/{targetUser}",
		Update:        base + "/v1/update/{roomId}",
		Notify:        base + "/v1/notify/{roomId}",
		SubmitMessage: base + "/v1/submitMessage/{roomId}",
		GroupInfo:     base + "/v1/groupInfo/{roomId}",
		// The draft's directory example names the consent paths' variables after users, its consent section after
		// domains; a consent entry names both users, so the path carries the receiving provider's domain.
		RequestConsent:  base + "/v1/requestConsent/{targetDomain}",
		UpdateConsent:   base + "/v1/updateConsent/{requesterDomain}",
		IdentifierQuery: base + "/v1/identifierQuery/{domain}",
	}
	b, _ := json.Marshal(d)
	return b
}

// httpError is an error with the HTTP status to answer it with.
type httpError struct {
	status int
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func statusOf(err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrBadURI):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnknownRoom):
		return http.StatusNotFound
	case errors.Is(err, ErrPeerAuth):
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}
