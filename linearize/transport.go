package linearize

import (
	"context"
	"errors"
	"net/http"
)

// httpServer is the federation listener while the engine runs.
type httpServer struct {
	srv *http.Server
}

var errNoTransport = errors.New("no federation transport configured")

// setupTransport builds the default Remote and key lookup when Options gave none.
func (e *Engine) setupTransport(ctx context.Context) error {
	if e.remote == nil || e.keys == nil {
		return errNoTransport
	}
	return nil
}

func (e *Engine) startHTTP(ctx context.Context) error {
	return nil
}

func (e *Engine) stopHTTP(ctx context.Context) error {
	if e.http == nil {
		return nil
	}
	return e.http.srv.Shutdown(ctx)
}
