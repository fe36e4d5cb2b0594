package provider

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// ExternalContentPath is where a provider serves the objects its users' external parts point at (draft-ietf-mimi-
// content's external content): <public URL>/v1/content/<ID>.
const ExternalContentPath = "/v1/content/"

// ErrUnknownContent is what Config.ExternalContent returns for an ID it does not have: the request gets a 404.
var ErrUnknownContent = errors.New("mimi provider: no external content with that ID")

// maxContentID bounds the IDs looked up, so that a long path reaches no database.
const maxContentID = 128

// ContentURL is the URL under which other providers fetch the external content with this ID (call it after Start,
// which fixes the public URL).
func (p *Provider) ContentURL(id string) string { return p.baseURL + ExternalContentPath + id }

// PeerClient is the HTTP client the provider reaches other providers with: its TLS client certificate, its peers'
// CA pool, and the configured Dial. External parts other providers host are fetched with it.
func (p *Provider) PeerClient() *http.Client { return p.peers.client }

// serveContent answers GET /v1/content/{id} from Config.ExternalContent. The caller must be a provider: a verified
// TLS client certificate is what the listener demands of every connection, and it is checked again here so that the
// rule does not rest on the listener's configuration alone. Objects are sealed (AEAD) and their IDs unguessable, so
// which provider asks is not checked against the rooms the object was sent to.
func (p *Provider) serveContent(w http.ResponseWriter, r *http.Request) {
	log := zerolog.Ctx(r.Context()).With().Str("path", r.URL.Path).Logger()
	fail := func(status int, msg string) {
		log.Debug().Int("status", status).Str("reason", msg).Msg("MIMI content request refused")
		http.Error(w, msg, status)
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		fail(http.StatusForbidden, ErrPeerAuth.Error()+": no client certificate")
		return
	}
	id := r.PathValue("id")
	if id == "" || len(id) > maxContentID || strings.ContainsAny(id, "/.") {
		fail(http.StatusNotFound, ErrUnknownContent.Error())
		return
	}
	if p.cfg.ExternalContent == nil {
		fail(http.StatusNotFound, ErrUnknownContent.Error())
		return
	}
	data, err := p.cfg.ExternalContent(log.WithContext(r.Context()), id)
	switch {
	case errors.Is(err, ErrUnknownContent):
		fail(http.StatusNotFound, ErrUnknownContent.Error())
		return
	case errors.Is(err, context.Canceled):
		fail(http.StatusServiceUnavailable, err.Error())
		return
	case err != nil:
		log.Warn().Err(err).Msg("Failed to read external content")
		fail(http.StatusInternalServerError, "reading external content failed")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
}
