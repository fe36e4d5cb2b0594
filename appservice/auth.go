package appservice

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"maunium.net/go/mautrix"
)

// checkHSToken checks the homeserver's hs_token, from the Authorization header or the legacy access_token query
// parameter. As the application service spec says: no token is 401, a token that does not match is 403 M_FORBIDDEN,
// and when both are given both must match.
func (as *AppService) checkHSToken(w http.ResponseWriter, r *http.Request) bool {
	var tokens []string
	if header := r.Header.Get("Authorization"); header != "" {
		token, ok := strings.CutPrefix(header, "Bearer ")
		if !ok {
			mautrix.MMissingToken.WithMessage("Authorization header is not a Bearer token").Write(w)
			return false
		}
		tokens = append(tokens, token)
	}
	if query := r.URL.Query(); query.Has("access_token") {
		tokens = append(tokens, query.Get("access_token"))
	}
	if len(tokens) == 0 {
		mautrix.MMissingToken.WithMessage("Missing hs_token: no Authorization header and no access_token parameter").Write(w)
		return false
	}
	for _, token := range tokens {
		if subtle.ConstantTimeCompare([]byte(token), []byte(as.reg.ServerToken)) != 1 {
			mautrix.MForbidden.WithMessage("The hs_token does not match the registration").Write(w)
			return false
		}
	}
	return true
}
