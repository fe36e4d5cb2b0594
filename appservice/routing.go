package appservice

import (
	"net/http"
	"path"
	"strings"

	"maunium.net/go/mautrix"

	"github.com/lmbridge/lmbridge/internal/httpguard"
)

// catchAllPattern is the route that answers unknown paths under /_matrix/app/.
const catchAllPattern = "/_matrix/app/"

// serveHTTP is the listener's handler: the mux, except that what it has no route for is answered as Matrix asks
// (404 M_UNRECOGNIZED for an unknown path, 405 M_UNRECOGNIZED for a known one with the wrong method) in JSON, where
// the standard mux would answer in plain text or not say that the method was wrong.
func (as *AppService) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.Path; p == "" || path.Clean(p) != p {
		as.unrecognized(w, r)
		return
	}
	if _, pattern := as.mux.Handler(r); pattern == "" || pattern == catchAllPattern {
		var allowed []string
		for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = method
			if _, pattern := as.mux.Handler(probe); pattern != "" && pattern != catchAllPattern {
				allowed = append(allowed, method)
			}
		}
		if len(allowed) > 0 {
			httpguard.CloseAfterAnswer(w, r)
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			mautrix.MUnrecognized.WithMessage("Method %s is not allowed on %s", r.Method, r.URL.Path).
				WithStatus(http.StatusMethodNotAllowed).Write(w)
			return
		}
		as.unrecognized(w, r)
		return
	}
	as.mux.ServeHTTP(w, r)
}
