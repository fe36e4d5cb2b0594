package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/internal/httpguard"
)

const (
	// DefaultMaxRequestBytes is used when config lm.max_request_bytes is not set.
	DefaultMaxRequestBytes = 1 << 20
	maxPDUsPerTransaction  = 50
	maxEDUsPerTransaction  = 100
	defaultBackfillLimit   = 10
)

// Server is the federation http.Handler: the key endpoint, and every LM endpoint (unstable and stable paths) routed
// to a Handler after X-Matrix verification. Every answer is JSON, errors included.
type Server struct {
	ServerName      string
	Keys            KeyLookup
	KeyServer       http.Handler
	Handler         Handler
	MaxRequestBytes int64
	// Now is the clock for the v1 event wrapper's origin_server_ts.
	Now func() time.Time

	mux *http.ServeMux
}

// NewServer builds the federation handler. keys finds the origins' keys (a *KeyRing in production).
func NewServer(serverName string, keyServer http.Handler, keys KeyLookup, handler Handler, maxRequestBytes int64) *Server {
	if maxRequestBytes <= 0 {
		maxRequestBytes = DefaultMaxRequestBytes
	}
	s := &Server{
		ServerName:      serverName,
		Keys:            keys,
		KeyServer:       keyServer,
		Handler:         handler,
		MaxRequestBytes: maxRequestBytes,
		Now:             time.Now,
		mux:             http.NewServeMux(),
	}
	s.routes()
	return s
}

// inbound is an authenticated federation request.
type inbound struct {
	r      *http.Request
	origin string
	body   []byte
}

type route func(ctx context.Context, in *inbound) (any, error)

func (s *Server) routes() {
	s.mux.Handle("GET /_matrix/key/v2/server", s.KeyServer)
	v1, v2, v3 := "/_matrix/federation/v1", "/_matrix/federation/v2", "/_matrix/federation/v3"
	for _, prefix := range []string{UnstablePrefix, v2, v1} {
		s.handle(http.MethodPut, prefix+"/send/{txnId}", s.send)
		s.handle(http.MethodGet, prefix+"/backfill/{roomId}", s.backfill)
	}
	for _, prefix := range []string{UnstablePrefix, v2} {
		s.handle(http.MethodGet, prefix+"/event/{eventId}", s.event)
	}
	s.handle(http.MethodGet, v1+"/event/{eventId}", s.eventV1)
	s.handle(http.MethodGet, v1+"/state/{roomId}", s.state)
	s.handle(http.MethodGet, v1+"/state_ids/{roomId}", s.stateIDs)
	for _, membership := range []string{"join", "leave", "knock"} {
		s.handle(http.MethodGet, v1+"/make_"+membership+"/{roomId}/{userId}", s.makeMembership(membership))
		for _, prefix := range []string{UnstablePrefix, v3} {
			s.handle(http.MethodPost, prefix+"/send_"+membership+"/{txnId}", s.sendMembership(membership))
		}
	}
	for _, prefix := range []string{UnstablePrefix, v3} {
		s.handle(http.MethodPost, prefix+"/invite/{txnId}", s.invite)
	}
}

func (s *Server) handle(method, pattern string, fn route) {
	s.mux.HandleFunc(method+" "+pattern, func(w http.ResponseWriter, r *http.Request) {
		received := time.Now()
		in, err := s.authenticate(w, r)
		if err != nil {
			// The body may be unread: the connection is not kept for a client that did not authenticate.
			httpguard.CloseAfterAnswer(w, r)
			writeError(w, r, err)
			return
		}
		ctx := zerolog.Ctx(r.Context()).With().Str("origin", in.origin).Logger().WithContext(r.Context())
		ctx = context.WithValue(ctx, receivedAtKey{}, received)
		resp, err := fn(ctx, in)
		if err == nil && isNil(resp) {
			err = fmt.Errorf("handler for %s returned neither an answer nor an error", pattern)
		}
		if err != nil {
			writeError(w, r, err)
			return
		}
		WriteJSON(w, http.StatusOK, resp)
	})
}

type receivedAtKey struct{}

// ReceivedAt is when the request a handler's ctx belongs to reached the server, before its body was read and its
// X-Matrix signature checked.
func ReceivedAt(ctx context.Context) (time.Time, bool) {
	t, ok := ctx.Value(receivedAtKey{}).(time.Time)
	return t, ok
}

// ServeHTTP answers unknown paths 404 M_UNRECOGNIZED and known paths with the wrong method 405 M_UNRECOGNIZED, as
// JSON; the standard mux would answer them in plain text.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			zerolog.Ctx(r.Context()).Error().Any("panic", p).Str("path", r.URL.Path).Msg("Panic in federation handler")
			WriteJSON(w, http.StatusInternalServerError, &Error{ErrCode: ErrCodeUnknown, Message: "Internal server error"})
		}
	}()
	// Unclean paths would get the mux's HTML redirect; trailing slashes are unknown endpoints (§12.1).
	if p := r.URL.Path; p == "" || path.Clean(p) != p {
		writeUnrecognized(w, http.StatusNotFound, r)
		return
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		var allowed []string
		for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodPost} {
			probe := r.Clone(r.Context())
			probe.Method = method
			if _, pattern := s.mux.Handler(probe); pattern != "" {
				allowed = append(allowed, method)
			}
		}
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			writeUnrecognized(w, http.StatusMethodNotAllowed, r)
		} else {
			writeUnrecognized(w, http.StatusNotFound, r)
		}
		return
	}
	s.mux.ServeHTTP(w, r)
}

func writeUnrecognized(w http.ResponseWriter, status int, r *http.Request) {
	// Whatever body it has is not read.
	httpguard.CloseAfterAnswer(w, r)
	msg := "Unrecognized request"
	if status == http.StatusMethodNotAllowed {
		msg = "Method " + r.Method + " is not allowed here"
	}
	WriteJSON(w, status, &Error{ErrCode: ErrCodeUnrecognized, Message: msg})
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*inbound, error) {
	headers := r.Header.Values("Authorization")
	if len(headers) == 0 {
		// One place in the draft says Authentication.
		headers = r.Header.Values("Authentication")
	}
	if len(headers) == 0 {
		return nil, forbidden("Missing X-Matrix Authorization header")
	}
	// The body is read as it arrives, through the limit; its buffer is never sized from Content-Length, which
	// is only the client's word.
	body, err := httpguard.ReadBody(w, r, s.MaxRequestBytes)
	var refusal *httpguard.Refusal
	if errors.As(err, &refusal) {
		return nil, refusal
	} else if err != nil {
		return nil, Errorf(http.StatusBadRequest, ErrCodeNotJSON, "Failed to read request body")
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		body = nil
	} else {
		trimmed := bytes.TrimSpace(body)
		if len(trimmed) == 0 {
			return nil, Errorf(http.StatusBadRequest, ErrCodeNotJSON, "Request body is empty; %s needs a JSON object", r.Method)
		} else if !json.Valid(trimmed) {
			return nil, Errorf(http.StatusBadRequest, ErrCodeNotJSON, "Request body is not valid JSON")
		} else if !utf8.Valid(trimmed) {
			// encoding/json takes invalid UTF-8 in strings and replaces it, so the content signed and the content
			// stored would differ; JSON is UTF-8 (RFC 8259 §8.1).
			return nil, Errorf(http.StatusBadRequest, ErrCodeNotJSON, "Request body is not valid UTF-8")
		} else if trimmed[0] != '{' {
			return nil, Errorf(http.StatusBadRequest, ErrCodeBadJSON, "Request body is not a JSON object")
		}
		body = trimmed
	}
	uris := []string{r.RequestURI}
	if alt := r.URL.RequestURI(); alt != r.RequestURI {
		uris = append(uris, alt)
	}
	origin, err := VerifyRequest(r.Context(), s.Keys, s.ServerName, r.Method, uris, headers, body)
	if err != nil {
		zerolog.Ctx(r.Context()).Debug().Err(err).Str("method", r.Method).Str("path", r.URL.Path).
			Msg("Refused federation request")
		return nil, err
	}
	// From here the request counts against its origin, no longer against its address.
	if err = httpguard.Authenticated(r, origin); err != nil {
		zerolog.Ctx(r.Context()).Debug().Err(err).Str("origin", origin).Str("path", r.URL.Path).
			Msg("Refused federation request over the origin's bound")
		return nil, err
	}
	return &inbound{r: r, origin: origin, body: body}, nil
}

func decodeBody(in *inbound, into any) error {
	if err := json.Unmarshal(in.body, into); err != nil {
		return Errorf(http.StatusBadRequest, ErrCodeBadJSON, "Request body does not have the expected shape: %s", err.Error())
	}
	return nil
}

func (s *Server) send(ctx context.Context, in *inbound) (any, error) {
	var txn Transaction
	if !splitTransaction(in.body, &txn) {
		txn = Transaction{}
		if err := decodeBody(in, &txn); err != nil {
			return nil, err
		}
	}
	if len(txn.PDUs) > maxPDUsPerTransaction || len(txn.EDUs) > maxEDUsPerTransaction {
		return nil, Errorf(http.StatusBadRequest, ErrCodeBadJSON, "A transaction holds at most %d PDUs and %d EDUs", maxPDUsPerTransaction, maxEDUsPerTransaction)
	}
	for _, pdu := range txn.PDUs {
		if len(pdu) == 0 || pdu[0] != '{' {
			return nil, Errorf(http.StatusBadRequest, ErrCodeBadJSON, "Every PDU must be a JSON object")
		}
	}
	for _, edu := range txn.EDUs {
		if len(edu) == 0 || edu[0] != '{' {
			return nil, Errorf(http.StatusBadRequest, ErrCodeBadJSON, "Every EDU must be a JSON object")
		}
	}
	resp, err := s.Handler.Send(ctx, in.origin, in.r.PathValue("txnId"), &txn)
	if err != nil {
		return nil, err
	}
	if resp == nil {
		resp = &SendResponse{}
	}
	if resp.FailedPDUs == nil {
		resp.FailedPDUs = map[string]FailedPDU{}
	}
	return resp, nil
}

func (s *Server) event(ctx context.Context, in *inbound) (any, error) {
	return s.Handler.GetEvent(ctx, in.origin, in.r.PathValue("eventId"))
}

// eventV1 answers in Matrix's v1 wrapper, as eigen does on that path.
func (s *Server) eventV1(ctx context.Context, in *inbound) (any, error) {
	event, err := s.Handler.GetEvent(ctx, in.origin, in.r.PathValue("eventId"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"origin": s.ServerName, "origin_server_ts": s.Now().UnixMilli(), "pdus": []json.RawMessage{event}}, nil
}

func (s *Server) state(ctx context.Context, in *inbound) (any, error) {
	eventID, err := stateEventID(in)
	if err != nil {
		return nil, err
	}
	return s.Handler.State(ctx, in.origin, in.r.PathValue("roomId"), eventID)
}

func (s *Server) stateIDs(ctx context.Context, in *inbound) (any, error) {
	eventID, err := stateEventID(in)
	if err != nil {
		return nil, err
	}
	return s.Handler.StateIDs(ctx, in.origin, in.r.PathValue("roomId"), eventID)
}

// stateEventID is the event_id query parameter /state and /state_ids require; without it the handler would look
// for an event with an empty ID and answer 404, which does not say what was wrong.
func stateEventID(in *inbound) (string, error) {
	eventID := in.r.URL.Query().Get("event_id")
	if eventID == "" {
		return "", Errorf(http.StatusBadRequest, ErrCodeMissingParam, "Missing event_id query parameter")
	}
	return eventID, nil
}

func (s *Server) backfill(ctx context.Context, in *inbound) (any, error) {
	query := in.r.URL.Query()
	from := query["v"]
	if len(from) == 0 {
		return nil, Errorf(http.StatusBadRequest, ErrCodeMissingParam, "Missing v query parameter")
	}
	limit := defaultBackfillLimit
	if l := query.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return nil, Errorf(http.StatusBadRequest, ErrCodeInvalidParam, "limit must be a positive integer")
		}
		limit = n
	}
	resp, err := s.Handler.Backfill(ctx, in.origin, in.r.PathValue("roomId"), from, limit)
	if err == nil && resp != nil && resp.PDUs == nil {
		resp.PDUs = []json.RawMessage{}
	}
	return resp, err
}

func (s *Server) invite(ctx context.Context, in *inbound) (any, error) {
	var req InviteRequest
	if err := decodeBody(in, &req); err != nil {
		return nil, err
	}
	if len(req.Event) == 0 || req.Event[0] != '{' {
		// The draft's own field name for the answer is pdu; a sender using it in the request is read too.
		var alt struct {
			PDU json.RawMessage `json:"pdu"`
		}
		_ = json.Unmarshal(in.body, &alt)
		if len(alt.PDU) == 0 || alt.PDU[0] != '{' {
			return nil, Errorf(http.StatusBadRequest, ErrCodeBadJSON, "Invite request has no event object")
		}
		req.Event = alt.PDU
	}
	resp, err := s.Handler.Invite(ctx, in.origin, in.r.PathValue("txnId"), &req)
	if err != nil {
		return nil, err
	} else if resp == nil {
		return nil, fmt.Errorf("invite handler returned no answer")
	}
	// Emit the draft's pdu and Matrix's event both.
	out := *resp
	if out.PDU == nil {
		out.PDU = out.Event
	} else if out.Event == nil {
		out.Event = out.PDU
	}
	return &out, nil
}

func (s *Server) makeMembership(membership string) route {
	return func(ctx context.Context, in *inbound) (any, error) {
		return s.Handler.MakeMembership(ctx, in.origin, membership, in.r.PathValue("roomId"), in.r.PathValue("userId"), in.r.URL.Query()["ver"])
	}
}

func (s *Server) sendMembership(membership string) route {
	return func(ctx context.Context, in *inbound) (any, error) {
		resp, err := s.Handler.SendMembership(ctx, in.origin, membership, in.r.PathValue("txnId"), json.RawMessage(in.body))
		if err != nil {
			return nil, err
		} else if resp == nil {
			return struct{}{}, nil
		}
		return resp, nil
	}
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
		return rv.IsNil()
	}
	return false
}
