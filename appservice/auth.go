package appservice

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"maunium.net/go/mautrix"

	"github.com/lmbridge/lmbridge/internal/httpguard"
)

// checkHSToken checks the homeserver's hs_token, from the Authorization header or the legacy access_token query
// parameter. As the application service spec says: no token is 401, a token that does not match is 403 M_FORBIDDEN,
// and when both are given both must match. A request that passes no longer counts against its address's bound; one
// that fails has its connection closed after the answer, its body unread.
func (as *AppService) checkHSToken(w http.ResponseWriter, r *http.Request) bool {
	if refusal, ok := as.hsTokenMatches(r); !ok {
		httpguard.CloseAfterAnswer(w, r)
		refusal.Write(w)
		return false
	}
	// The homeserver is not bounded as an origin: the listener's bounds are its own.
	_ = httpguard.Authenticated(r, "")
	return true
}

func (as *AppService) hsTokenMatches(r *http.Request) (mautrix.RespError, bool) {
	var tokens []string
	if header := r.Header.Get("Authorization"); header != "" {
		token, ok := strings.CutPrefix(header, "Bearer ")
		if !ok {
			return mautrix.MMissingToken.WithMessage("Authorization header is not a Bearer token"), false
		}
		tokens = append(tokens, token)
	}
	if query := r.URL.Query(); query.Has("access_token") {
		tokens = append(tokens, query.Get("access_token"))
	}
	if len(tokens) == 0 {
		return mautrix.MMissingToken.WithMessage("Missing hs_token: no Authorization header and no access_token parameter"), false
	}
	for _, token := range tokens {
		if subtle.ConstantTimeCompare([]byte(token), []byte(as.reg.ServerToken)) != 1 {
			return mautrix.MForbidden.WithMessage("The hs_token does not match the registration"), false
		}
	}
	return mautrix.RespError{}, true
}
