package bridge

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/remote"
)

// ProvisioningPrefix is where the provisioning API lives on the application-service listener.
const ProvisioningPrefix = "/_lmbridge/provision/v1"

// maxProvisioningBody caps request bodies; a link request is a few hundred bytes.
const maxProvisioningBody = 64 * 1024

// provisioningError is a Matrix-style JSON error.
type provisioningError struct {
	ErrCode string `json:"errcode"`
	Error   string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func writeError(w http.ResponseWriter, status int, errcode, msg string) {
	writeJSON(w, status, provisioningError{ErrCode: errcode, Error: msg})
}

// LinkRequest is the body of POST /links: without lm_room_id a new LM room is created with us as hub; with it (and
// hub_server) the DAG room joins that LM room, as user_id.
type LinkRequest struct {
	DAGRoomID id.RoomID `json:"dag_room_id"`
	LMRoomID  string    `json:"lm_room_id,omitempty"`
	HubServer string    `json:"hub_server,omitempty"`
	UserID    id.UserID `json:"user_id,omitempty"`
	// Protocol is "lm" (the default) or "mimi": a MIMI room is created on this bridge's provider, or lm_room_id names
	// one (mimi://<hub>/r/<name>) that user_id is in already.
	Protocol string `json:"protocol,omitempty"`
}

// ProvisioningHandler serves the provisioning API (mount it at ProvisioningPrefix + "/"):
//
//	GET    /links               every link
//	POST   /links               create one (LinkRequest; "protocol": "mimi" for a MIMI room)
//	GET    /links/{dag_room_id} one link with its members
//	DELETE /links/{dag_room_id} end one
//
// Every request needs Authorization: Bearer <bridge.provisioning.shared_secret>; an empty secret disables the API.
func (br *Bridge) ProvisioningHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+ProvisioningPrefix+"/links", br.provListLinks)
	mux.HandleFunc("POST "+ProvisioningPrefix+"/links", br.provCreateLink)
	mux.HandleFunc("GET "+ProvisioningPrefix+"/links/{roomID}", br.provGetLink)
	mux.HandleFunc("DELETE "+ProvisioningPrefix+"/links/{roomID}", br.provDeleteLink)
	// Anything the routes above do not take: a known path with the wrong method, or an unknown path.
	mux.HandleFunc(ProvisioningPrefix+"/", func(w http.ResponseWriter, r *http.Request) {
		if isKnownPath(r.URL.Path) {
			writeError(w, http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Method "+r.Method+" is not allowed here")
			return
		}
		writeError(w, http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret := br.cfg.Provisioning.SharedSecret
		if secret == "" {
			writeError(w, http.StatusNotFound, "M_UNRECOGNIZED", "The provisioning API is disabled (bridge.provisioning.shared_secret is empty)")
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			writeError(w, http.StatusUnauthorized, "M_MISSING_TOKEN", "Missing Authorization: Bearer <shared secret>")
			return
		}
		if subtle.ConstantTimeCompare([]byte(token), []byte(secret)) != 1 {
			writeError(w, http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Wrong provisioning secret")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func isKnownPath(path string) bool {
	rest, ok := strings.CutPrefix(path, ProvisioningPrefix+"/links")
	return ok && (rest == "" || strings.Count(rest, "/") == 1 && len(rest) > 1)
}

func (br *Bridge) provListLinks(w http.ResponseWriter, r *http.Request) {
	links, err := br.db.ListLinks(r.Context())
	if err != nil {
		br.provInternal(w, r, err)
		return
	}
	if links == nil {
		links = []*bridgedb.Link{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"links": links})
}

func (br *Bridge) provGetLink(w http.ResponseWriter, r *http.Request) {
	roomID := id.RoomID(r.PathValue("roomID"))
	st, err := br.Status(r.Context(), roomID)
	if errors.Is(err, ErrNotLinked) {
		writeError(w, http.StatusNotFound, "M_NOT_FOUND", "Room "+string(roomID)+" is not linked")
		return
	} else if err != nil {
		br.provInternal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (br *Bridge) provCreateLink(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxProvisioningBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "M_BAD_JSON", "Failed to read request body: "+err.Error())
		return
	} else if len(body) > maxProvisioningBody {
		writeError(w, http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "Request body is larger than 64 KiB")
		return
	}
	if !json.Valid(body) {
		writeError(w, http.StatusBadRequest, "M_NOT_JSON", "Request body is not JSON")
		return
	} else if !utf8.Valid(body) {
		// encoding/json would replace the invalid bytes and look up a room nobody named.
		writeError(w, http.StatusBadRequest, "M_NOT_JSON", "Request body is not valid UTF-8")
		return
	} else if trimmed := bytes.TrimSpace(body); trimmed[0] != '{' {
		// null decodes into an empty request, which would be refused for its missing room, not its shape.
		writeError(w, http.StatusBadRequest, "M_BAD_JSON", "Request body must be a JSON object (a link request)")
		return
	}
	var req LinkRequest
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err = dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "M_BAD_JSON", "Request body does not match a link request: "+err.Error())
		return
	}
	pr, msg := br.provProtocol(&req)
	if msg == "" {
		msg = req.validate()
	}
	if msg != "" {
		writeError(w, http.StatusBadRequest, "M_INVALID_PARAM", msg)
		return
	}
	var link *bridgedb.Link
	if req.LMRoomID == "" {
		by := string(req.UserID)
		if by == "" {
			by = "provisioning API"
		}
		link, err = br.linkAsHub(r.Context(), pr, req.DAGRoomID, by, nil)
	} else {
		link, err = br.linkTo(r.Context(), pr, req.DAGRoomID, req.LMRoomID, req.HubServer, req.UserID)
	}
	if err == nil {
		writeJSON(w, http.StatusCreated, link)
		return
	}
	status, errcode, msg := linkErrorAnswer(err, req.HubServer)
	if status >= http.StatusInternalServerError {
		zerolog.Ctx(r.Context()).Err(err).Str("path", r.URL.Path).Int("status", status).Msg("Provisioning request failed")
	}
	writeError(w, status, errcode, msg)
}

// linkErrorAnswer is the answer to a link request that failed: what the caller can change (the request, the room's
// power levels, a hub that is blocked, unknown or refuses the join) is a 4xx with the error code that names it; what
// failed in the bridge is a 500, and a hub that failed or could not be reached a 502 or 504.
func linkErrorAnswer(err error, hub string) (int, string, string) {
	msg := err.Error()
	var peerErr *remote.PeerError
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, ErrAlreadyLinked):
		return http.StatusConflict, "M_ROOM_IN_USE", msg
	case errors.Is(err, ErrEncryptedRoom), errors.Is(err, ErrUnencryptedRoom), errors.Is(err, ErrBotLacksPower):
		return http.StatusForbidden, "M_FORBIDDEN", msg
	case errors.Is(err, ErrInvalidLinkRequest), errors.Is(err, ErrInvalidUserID), errors.Is(err, ErrUserIDTooLong),
		errors.Is(err, ErrNotOurs):
		return http.StatusBadRequest, "M_INVALID_PARAM", msg
	case !errors.Is(err, ErrLMJoinFailed):
		return http.StatusInternalServerError, "M_UNKNOWN", "Internal error: " + msg
	case errors.Is(err, remote.ErrBlocked):
		return http.StatusForbidden, "M_FORBIDDEN", "The address of hub " + hub + " is blocked by this bridge's " +
			"lm.ip_range_blocklist, so it may not connect there: " + msg
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return http.StatusBadRequest, "M_INVALID_PARAM", "The hub server name " + hub + " does not resolve: " + msg
	case errors.As(err, &peerErr) && !errors.Is(err, remote.ErrBadAnswer) &&
		(peerErr.Status == http.StatusBadRequest || peerErr.Status == http.StatusForbidden || peerErr.Status == http.StatusNotFound):
		// The hub refused the join itself (not invited, banned, no such room, a room version we lack): the caller's
		// to change, under the hub's own error code. An answer we could not verify is the hub's failure, not this.
		return peerErr.Status, peerErr.Code, "The hub " + hub + " refused the join: " + msg
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return http.StatusGatewayTimeout, "M_UNKNOWN", "The hub " + hub + " did not answer in time: " + msg
	default:
		return http.StatusBadGateway, "M_UNKNOWN", "The hub " + hub + " failed: " + msg
	}
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// provProtocol picks the request's protocol; for MIMI it reads a room URI into the seam's form (and its hub).
func (br *Bridge) provProtocol(req *LinkRequest) (*protocol, string) {
	switch req.Protocol {
	case "", bridgedb.ProtocolLM:
		return br.lmProto, ""
	case bridgedb.ProtocolMIMI:
		if br.mimi == nil {
			return nil, ErrNoMIMI.Error()
		}
		if req.LMRoomID != "" {
			roomID, hub, err := seamRoomOf(req.LMRoomID)
			if err != nil {
				return nil, "lm_room_id must be a MIMI room URI (mimi://<hub>/r/<name>)"
			}
			if req.HubServer == "" {
				req.HubServer = hub
			}
			req.LMRoomID = roomID
		}
		return br.mimi, ""
	}
	return nil, "protocol must be lm or mimi"
}

func (req *LinkRequest) validate() string {
	switch {
	case !strings.HasPrefix(string(req.DAGRoomID), "!") || len(req.DAGRoomID) < 2:
		return "dag_room_id must be a room ID (!…)"
	case req.LMRoomID == "" && req.HubServer != "":
		return "hub_server needs lm_room_id"
	case req.LMRoomID != "" && (req.HubServer == "" || req.UserID == ""):
		return "linking to an existing LM room needs hub_server and the user_id of a joined Matrix user who joins it first"
	case req.LMRoomID != "" && !strings.HasPrefix(req.LMRoomID, "!"):
		return "lm_room_id must be a room ID (!…)"
	case req.UserID != "":
		if _, _, err := splitUserID(string(req.UserID)); err != nil {
			return "user_id must be a user ID (@localpart:server)"
		}
	}
	return ""
}

func (br *Bridge) provDeleteLink(w http.ResponseWriter, r *http.Request) {
	roomID := id.RoomID(r.PathValue("roomID"))
	link, err := br.Unlink(r.Context(), roomID)
	if errors.Is(err, ErrNotLinked) {
		writeError(w, http.StatusNotFound, "M_NOT_FOUND", "Room "+string(roomID)+" is not linked")
		return
	} else if err != nil {
		br.provInternal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, link)
}

func (br *Bridge) provInternal(w http.ResponseWriter, r *http.Request, err error) {
	zerolog.Ctx(r.Context()).Err(err).Str("path", r.URL.Path).Msg("Provisioning request failed")
	writeError(w, http.StatusInternalServerError, "M_UNKNOWN", "Internal error: "+err.Error())
}
