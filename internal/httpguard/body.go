package httpguard

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
)

// initialBodyBuffer is what ReadBody allocates before any byte of a body has arrived: a declared Content-Length is
// the client's word, not bytes received, and sizing buffers by it let idle connections reserve a megabyte each.
const initialBodyBuffer = 1 << 10

// ReadBody reads r's body, refusing one over limit bytes with a 413 *Refusal (at once when its Content-Length says
// so). The buffer grows as bytes arrive, doubling, so it is never more than about twice what the client has sent,
// and each growth is charged to the listener's BodyBudget until the request's handler returns; a body that would
// take the listener over its budget is refused with a 429 *Refusal. Other errors are the client's connection
// failing (or its ReadTimeout expiring) mid-body. w must be r's ResponseWriter: over the limit, the connection is
// closed after the answer.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, tooLarge(r.ContentLength, limit)
	}
	st := requestOf(r.Context())
	body := http.MaxBytesReader(w, r.Body, limit)
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			// One byte past the limit lets MaxBytesReader see that a body is over it.
			grow := min(max(int64(cap(buf)), initialBodyBuffer), limit+1-int64(cap(buf)))
			if err := st.charge(grow); err != nil {
				return nil, err
			}
			buf = slices.Grow(buf, int(grow))
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		var maxErr *http.MaxBytesError
		switch {
		case errors.Is(err, io.EOF):
			return buf, nil
		case errors.As(err, &maxErr):
			return nil, tooLarge(-1, limit)
		case err != nil:
			return nil, fmt.Errorf("failed to read request body: %w", err)
		}
	}
}

func tooLarge(declared, limit int64) *Refusal {
	msg := fmt.Sprintf("Request body is larger than the limit of %d bytes", limit)
	if declared > 0 {
		msg = fmt.Sprintf("Request body of %d bytes is larger than the limit of %d bytes", declared, limit)
	}
	return &Refusal{Status: http.StatusRequestEntityTooLarge, ErrCode: ErrCodeTooLarge, Message: msg, err: ErrBodyTooLarge}
}

// charge takes n bytes from the listener's body budget for st, until st finishes. A nil st (a request that did not
// come through a Guard) has no budget.
func (st *request) charge(n int64) error {
	if st == nil {
		return nil
	}
	g := st.guard
	g.lock.Lock()
	defer g.lock.Unlock()
	if g.limits.BodyBudget > 0 && g.bodyBytes+n > g.limits.BodyBudget {
		return g.busy("The server is reading too many request bodies at once")
	}
	g.bodyBytes += n
	st.bodyBytes += n
	return nil
}
