package federation

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/internal/httpguard"
)

var ErrNoTLS = errors.New("federation listener has no TLS certificate and plain HTTP is not allowed")

// ListenOptions are the federation listener's settings (the application's lm config section carries them).
type ListenOptions struct {
	// Listen is the address ListenAndServe binds.
	Listen string
	// TLSCert and TLSKey are PEM files, set together; without them AllowPlainHTTP must be set.
	TLSCert, TLSKey string
	AllowPlainHTTP  bool
	// MaxRequestBytes bounds a request body; MaxRequestsPerIP the requests in flight from one address until they
	// are authenticated, MaxRequestsPerOrigin those of one authenticated server (zero is no bound).
	MaxRequestBytes      int64
	MaxRequestsPerIP     int
	MaxRequestsPerOrigin int
}

// shutdownGrace bounds how long Serve waits for requests in flight to finish at shutdown before closing their
// connections: a stop must not hang on a slow peer. Our senders retry a transaction whose answer they lost, under the
// same txnId.
var shutdownGrace = 3 * time.Second

// ListenAndServe binds cfg.Listen and serves handler until ctx is cancelled (see Serve).
func ListenAndServe(ctx context.Context, cfg ListenOptions, handler http.Handler) error {
	if err := checkListenConfig(cfg); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", cfg.Listen, err)
	}
	return Serve(ctx, ln, cfg, handler)
}

func checkListenConfig(cfg ListenOptions) error {
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return errors.New("lm.tls_cert and lm.tls_key must be set together")
	} else if cfg.TLSCert == "" && !cfg.AllowPlainHTTP {
		return ErrNoTLS
	}
	return nil
}

// Serve serves handler on ln: TLS (1.3, HTTP/2) with cfg.TLSCert and cfg.TLSKey, or plain HTTP only when
// cfg.AllowPlainHTTP, within the bounds of Limits(cfg). It returns once ctx is cancelled and in-flight requests have
// finished (for at most shutdownGrace, then their connections are closed), or when serving fails. The listener is
// closed on return. Request contexts carry ctx's values (the logger).
func Serve(ctx context.Context, ln net.Listener, cfg ListenOptions, handler http.Handler) error {
	return serve(ctx, ln, cfg, httpguard.New(ctx, "federation", Limits(cfg)), handler)
}

// Bounds of the federation listener (see Limits). A key document is a few KB and a /send transaction at most
// max_request_bytes, so a peer that needs more than 30 s to send one is too slow to be told apart from an attack;
// the write timeout leaves a handler time for a join that waits for its room.
const (
	listenReadHeaderTimeout = 10 * time.Second
	listenReadTimeout       = 30 * time.Second
	listenWriteTimeout      = 2 * time.Minute
	listenIdleTimeout       = 90 * time.Second
	listenMaxHeaderBytes    = 64 << 10
	// listenMaxConns and listenMaxRequests bound the goroutines and buffers of connections: a connection with a
	// request waiting for its body costs about 20 KiB (measured, see docs/RELIABILITY.md).
	listenMaxConns    = 8192
	listenMaxRequests = 4096
	// listenBodyBudget bounds the request bodies held at once, whatever their number.
	listenBodyBudget = 64 << 20
	listenRetryAfter = time.Second
)

// Limits are the federation listener's bounds for cfg: cfg.MaxRequestsPerIP requests in flight per address until
// they are authenticated (and four times as many connections), cfg.MaxRequestsPerOrigin per authenticated origin,
// request bodies of at most cfg.MaxRequestBytes.
func Limits(cfg ListenOptions) httpguard.Limits {
	return httpguard.Limits{
		ReadHeaderTimeout:    listenReadHeaderTimeout,
		ReadTimeout:          listenReadTimeout,
		WriteTimeout:         listenWriteTimeout,
		IdleTimeout:          listenIdleTimeout,
		MaxHeaderBytes:       listenMaxHeaderBytes,
		MaxConns:             listenMaxConns,
		MaxConnsPerIP:        4 * cfg.MaxRequestsPerIP,
		MaxRequests:          listenMaxRequests,
		MaxRequestsPerIP:     cfg.MaxRequestsPerIP,
		MaxRequestsPerOrigin: cfg.MaxRequestsPerOrigin,
		BodyBudget:           max(listenBodyBudget, 4*cfg.MaxRequestBytes),
		RetryAfter:           listenRetryAfter,
	}
}

// serve is Serve behind guard, which tests build with limits of their own and read the state of.
func serve(ctx context.Context, ln net.Listener, cfg ListenOptions, guard *httpguard.Guard, handler http.Handler) error {
	if err := checkListenConfig(cfg); err != nil {
		_ = ln.Close()
		return err
	}
	srv := guard.Server(handler)
	srv.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }
	fresh := trackFreshConns(srv)
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("failed to load federation TLS certificate: %w", err)
		}
		srv.TLSConfig = &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS13,
			NextProtos:   []string{"h2", "http/1.1"},
		}
	}
	log := zerolog.Ctx(ctx)
	// net/http's own complaints (TLS handshakes from scanners and the like) go to our log, not to stderr.
	srv.ErrorLog = stdlog.New(log.With().Str("component", "federation_http").Logger(), "", 0)
	useTLS := srv.TLSConfig != nil
	serveErr := make(chan error, 1)
	go func() {
		if useTLS {
			serveErr <- srv.ServeTLS(ln, "", "")
		} else {
			serveErr <- srv.Serve(ln)
		}
	}()
	log.Info().Str("address", ln.Addr().String()).Bool("tls", useTLS).Msg("Federation listener started")
	select {
	case err := <-serveErr:
		return fmt.Errorf("federation listener failed: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	shutdownErr := make(chan error, 1)
	go func() { shutdownErr <- srv.Shutdown(shutdownCtx) }()
	// Shutdown counts a connection accepted but without a request yet as busy for its first 5 seconds, and would wait
	// for it. It carries nothing to finish: close it now. Shutdown has closed the listener, or does so at once.
	fresh.closeAll()
	if err := <-shutdownErr; err != nil {
		_ = srv.Close()
		log.Warn().Err(err).Dur("grace", shutdownGrace).Msg("Requests still in flight at shutdown, closed their connections")
	}
	log.Info().Msg("Federation listener stopped")
	return nil
}

// freshConns tracks the server's connections that have not started a request yet (http.StateNew).
type freshConns struct {
	lock    sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool
}

func trackFreshConns(srv *http.Server) *freshConns {
	f := &freshConns{conns: make(map[net.Conn]struct{})}
	next := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		if next != nil {
			next(c, st)
		}
		f.lock.Lock()
		defer f.lock.Unlock()
		switch {
		case st == http.StateNew && f.closing:
			_ = c.Close()
		case st == http.StateNew:
			f.conns[c] = struct{}{}
		default:
			delete(f.conns, c)
		}
	}
	return f
}

// closeAll closes the fresh connections, and any accepted from now on.
func (f *freshConns) closeAll() {
	f.lock.Lock()
	defer f.lock.Unlock()
	f.closing = true
	for c := range f.conns {
		_ = c.Close()
	}
	clear(f.conns)
}
