package linearize

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// setupTransport builds the federation client (our Remote), the key ring (our KeyLookup) and the federation
// http.Handler, unless Options supplied the first two.
func (e *Engine) setupTransport() {
	client := federation.NewClient(e.serverName, e.key, federation.ClientOptions{AllowHTTPPeers: e.cfg.AllowHTTPPeers,
		BlockedRanges: e.cfg.BlockedRanges()})
	client.EventID = func(raw json.RawMessage) (string, error) {
		p, err := pdu.Parse(raw)
		if err != nil {
			return "", err
		}
		return p.EventID()
	}
	if e.remote == nil {
		e.remote = client
	}
	if e.keys == nil {
		e.keys = newOwnKeyFirst(e.serverName, e.key, federation.NewKeyRing(client))
	}
	e.handler = federation.NewServer(e.serverName, federation.NewKeyServer(e.serverName, e.key), e.keys, inbound{e},
		e.cfg.MaxRequestBytes)
}

// HTTPHandler is the federation http.Handler (key endpoint and every LM endpoint), for mounting elsewhere.
func (e *Engine) HTTPHandler() http.Handler {
	return e.handler
}

// startHTTP serves the federation listener: Options.Listener if given, else lm.listen; neither means no listener (the
// embedding program mounts HTTPHandler itself).
func (e *Engine) startHTTP(ctx context.Context) error {
	ln := e.listener
	if ln == nil && e.cfg.Listen == "" {
		return nil
	}
	// federation.Serve reports a bad certificate only when it returns, which is at Stop: check it now.
	if e.cfg.TLSCert != "" || e.cfg.TLSKey != "" {
		if _, err := tls.LoadX509KeyPair(e.cfg.TLSCert, e.cfg.TLSKey); err != nil {
			return fmt.Errorf("failed to load federation TLS certificate: %w", err)
		}
	} else if !e.cfg.AllowPlainHTTP {
		return federation.ErrNoTLS
	}
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", e.cfg.Listen); err != nil {
			return fmt.Errorf("failed to listen on %s: %w", e.cfg.Listen, err)
		}
	}
	e.listener = nil
	done := make(chan error, 1)
	e.httpDone = done
	go func() {
		done <- federation.Serve(ctx, ln, listenOptions(e.cfg), e.handler)
	}()
	return nil
}

// stopHTTP waits for the listener to shut down; Stop has cancelled its context already.
func (e *Engine) stopHTTP() error {
	if e.httpDone == nil {
		return nil
	}
	err := <-e.httpDone
	e.httpDone = nil
	return err
}

// ownKeyFirst answers for our own current key from the signing key itself, and asks next for anything else: our own
// signatures (on our users' events in a remote hub's state, say) need no request to ourselves over the network, which
// the address blocklist or a NAT without hairpinning could refuse.
type ownKeyFirst struct {
	serverName string
	keyID      string
	public     ed25519.PublicKey
	next       federation.KeyLookup
}

func newOwnKeyFirst(serverName string, key *federation.SigningKey, next federation.KeyLookup) ownKeyFirst {
	return ownKeyFirst{serverName: serverName, keyID: string(key.ID), public: key.Priv.Public().(ed25519.PublicKey), next: next}
}

func (o ownKeyFirst) VerifyKey(ctx context.Context, serverName, keyID string) (ed25519.PublicKey, error) {
	if serverName == o.serverName && keyID == o.keyID {
		return o.public, nil
	}
	return o.next.VerifyKey(ctx, serverName, keyID)
}

// listenOptions are the federation listener's settings from the lm config section.
func listenOptions(cfg config.LM) federation.ListenOptions {
	return federation.ListenOptions{Listen: cfg.Listen, TLSCert: cfg.TLSCert, TLSKey: cfg.TLSKey,
		AllowPlainHTTP: cfg.AllowPlainHTTP, MaxRequestBytes: cfg.MaxRequestBytes, MaxRequestsPerIP: cfg.MaxRequestsPerIP,
		MaxRequestsPerOrigin: cfg.MaxRequestsPerOrigin}
}
