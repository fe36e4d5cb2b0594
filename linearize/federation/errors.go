package federation

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/internal/httpguard"
)

// Error codes beyond the draft's list (§12.2) that Matrix uses for bad query parameters.
const (
	ErrCodeMissingParam = "M_MISSING_PARAM"
	ErrCodeInvalidParam = "M_INVALID_PARAM"
)

// WriteJSON writes body as a JSON answer with the given status.
func WriteJSON(w http.ResponseWriter, status int, body any) {
	data, err := marshalJSON(body)
	if err != nil {
		status = http.StatusInternalServerError
		data = []byte(`{"errcode":"M_UNKNOWN","error":"Failed to encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// writeError writes err as a Matrix error: an *Error as itself, anything else as a 500 M_UNKNOWN whose details stay in
// our log, never in the answer.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var refusal *httpguard.Refusal
	if errors.As(err, &refusal) {
		refusal.Write(w, r)
		return
	}
	var fedErr *Error
	if errors.As(err, &fedErr) {
		status := fedErr.Status
		if status < 400 || status > 599 {
			status = http.StatusInternalServerError
		}
		WriteJSON(w, status, fedErr)
		return
	}
	if database.IsFull(err) {
		// Nothing was committed; the sender keeps what it sent and retries, which only freeing space will end.
		zerolog.Ctx(r.Context()).Error().Err(err).Str("method", r.Method).Str("path", r.URL.Path).
			Msg("Failed to handle federation request: the database is full (free disk space)")
		WriteJSON(w, http.StatusServiceUnavailable, &Error{ErrCode: ErrCodeUnknown,
			Message: "The server's database is full; retry later"})
		return
	}
	zerolog.Ctx(r.Context()).Err(err).Str("method", r.Method).Str("path", r.URL.Path).
		Msg("Failed to handle federation request")
	WriteJSON(w, http.StatusInternalServerError, &Error{ErrCode: ErrCodeUnknown, Message: "Internal server error"})
}

// marshalJSON is json.Marshal without HTML escaping, so that events keep the bytes their senders gave them.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
