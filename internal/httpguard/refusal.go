package httpguard

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// Matrix error codes of the refusals.
const (
	ErrCodeLimitExceeded = "M_LIMIT_EXCEEDED"
	ErrCodeTooLarge      = "M_TOO_LARGE"
)

var (
	// ErrLimitExceeded is what a request over one of the Guard's bounds gets (a *Refusal wrapping it).
	ErrLimitExceeded = errors.New("request limit exceeded")
	// ErrBodyTooLarge is what a body over ReadBody's limit gets (a *Refusal wrapping it).
	ErrBodyTooLarge = errors.New("request body is too large")
)

// Refusal is a request refused for one of the bounds, with what the client is told.
type Refusal struct {
	Status  int
	ErrCode string
	Message string
	// RetryAfter goes with 429: when the client may try again.
	RetryAfter time.Duration

	err error
}

func (r *Refusal) Error() string {
	return r.err.Error() + ": " + r.Message
}

func (r *Refusal) Unwrap() error {
	return r.err
}

// RetryAfterMS is RetryAfter in milliseconds, at least 1 for a 429 so that the field is always present there.
func (r *Refusal) RetryAfterMS() int64 {
	ms := r.RetryAfter.Milliseconds()
	if r.Status == http.StatusTooManyRequests && ms < 1 {
		ms = 1
	}
	return ms
}

// Write answers the refusal as a Matrix error: {"errcode", "error", "retry_after_ms"} and a Retry-After header on a
// 429. The connection is closed after the answer (see CloseAfterAnswer).
func (r *Refusal) Write(w http.ResponseWriter, req *http.Request) {
	body := struct {
		ErrCode      string `json:"errcode"`
		Error        string `json:"error"`
		RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
	}{r.ErrCode, r.Message, r.RetryAfterMS()}
	data, _ := json.Marshal(&body)
	CloseAfterAnswer(w, req)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	if r.Status == http.StatusTooManyRequests {
		// Whole seconds, rounded up.
		w.Header().Set("Retry-After", strconv.FormatInt((r.RetryAfterMS()+999)/1000, 10))
	}
	w.WriteHeader(r.Status)
	_, _ = w.Write(data)
}

// CloseAfterAnswer makes an HTTP/1 connection close once the answer is written, without reading any more of the
// request: it is for answers given before the body was read through. net/http would otherwise read up to 256 KiB of
// the rest of the body, at whatever pace the client sends it, to keep the connection, before the answer (when the
// length is known) or after it (when the body is chunked). Call it before writing the answer, and only when the
// body will not be read. HTTP/2 resets the stream instead and needs nothing.
func CloseAfterAnswer(w http.ResponseWriter, req *http.Request) {
	if req.ProtoMajor != 1 {
		return
	}
	w.Header().Set("Connection", "close")
	// Reads fail from now on; the answer is still written.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}
