package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/mimi/protocol"
)

// handler serves the provider endpoints. Every request must come over mutual TLS from a provider whose certificate
// matches its From header, to this provider's name in Host.
func (p *Provider) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+protocol.WellKnownDirectory, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(directoryFor(p.baseURL))
	})
	mux.HandleFunc("GET "+ExternalContentPath+"{id}", p.serveContent)
	mux.HandleFunc("POST /v1/update/{roomId}", p.endpoint(func(ctx context.Context, from string, r *http.Request, body []byte) (int, []byte, error) {
		req, err := protocol.DecodeUpdateRequest(body)
		if err != nil {
			return 0, nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
		resp, err := p.hub.update(ctx, from, r.PathValue("roomId"), req, nil)
		if err != nil {
			return 0, nil, err
		}
		b, err := resp.Encode()
		return http.StatusOK, b, err
	}))
	mux.HandleFunc("POST /v1/submitMessage/{roomId}", p.endpoint(func(ctx context.Context, from string, r *http.Request, body []byte) (int, []byte, error) {
		req, err := protocol.DecodeSubmitMessageRequest(body)
		if err != nil {
			return 0, nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
		resp, err := p.hub.submit(ctx, from, r.PathValue("roomId"), req)
		if err != nil {
			return 0, nil, err
		}
		b, err := resp.Encode()
		return http.StatusOK, b, err
	}))
	mux.HandleFunc("POST /v1/groupInfo/{roomId}", p.endpoint(func(ctx context.Context, from string, r *http.Request, body []byte) (int, []byte, error) {
		req, err := protocol.DecodeGroupInfoRequest(body)
		if err != nil {
			return 0, nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
		resp, err := p.hub.groupInfo(ctx, from, r.PathValue("roomId"), req)
		if err != nil {
			return 0, nil, err
		}
		b, err := resp.Encode()
		return http.StatusOK, b, err
	}))
	mux.HandleFunc("POST /v1/keyMaterial/{targetUser}", p.endpoint(func(ctx context.Context, from string, r *http.Request, body []byte) (int, []byte, error) {
		resp, err := p.serveKeyMaterial(ctx, from, r.PathValue("targetUser"), body)
		if err != nil {
			return 0, nil, err
		}
		b, err := resp.Encode()
		return http.StatusOK, b, err
	}))
	mux.HandleFunc("POST /v1/requestConsent/{targetDomain}", p.endpoint(func(ctx context.Context, from string, r *http.Request, body []byte) (int, []byte, error) {
		return http.StatusCreated, nil, p.receiveConsent(ctx, from, r.PathValue("targetDomain"), false, body)
	}))
	mux.HandleFunc("POST /v1/updateConsent/{requesterDomain}", p.endpoint(func(ctx context.Context, from string, r *http.Request, body []byte) (int, []byte, error) {
		return http.StatusCreated, nil, p.receiveConsent(ctx, from, r.PathValue("requesterDomain"), true, body)
	}))
	mux.HandleFunc("POST /v1/identifierQuery/{domain}", p.endpoint(func(ctx context.Context, _ string, r *http.Request, body []byte) (int, []byte, error) {
		resp, err := p.identifierQuery(ctx, r.PathValue("domain"), body)
		if err != nil {
			return 0, nil, err
		}
		b, err := resp.Encode()
		return http.StatusOK, b, err
	}))
	mux.HandleFunc("POST /v1/notify/{roomId}", p.endpoint(func(ctx context.Context, from string, r *http.Request, body []byte) (int, []byte, error) {
		if err := p.receiveNotify(ctx, from, r.PathValue("roomId"), body); err != nil {
			return 0, nil, err
		}
		return http.StatusCreated, nil, nil
	}))
	return mux
}

type endpointFunc func(ctx context.Context, from string, r *http.Request, body []byte) (int, []byte, error)

func (p *Provider) endpoint(fn endpointFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		log := zerolog.Ctx(ctx).With().Str("path", r.URL.Path).Logger()
		fail := func(status int, err error) {
			log.Debug().Err(err).Int("status", status).Msg("MIMI request refused")
			http.Error(w, err.Error(), status)
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host != p.domain {
			fail(http.StatusMisdirectedRequest, fmt.Errorf("%w: request for %q at %s", ErrBadRequest, r.Host, p.domain))
			return
		}
		from, err := peerDomain(r)
		if err != nil {
			fail(http.StatusForbidden, err)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			fail(http.StatusRequestEntityTooLarge, fmt.Errorf("%w: reading body: %w", ErrBadRequest, err))
			return
		}
		status, out, err := fn(log.WithContext(ctx), from, r, body)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				fail(http.StatusServiceUnavailable, err)
				return
			}
			fail(statusOf(err), err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(status)
		_, _ = w.Write(out)
	}
}
