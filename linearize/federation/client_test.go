package federation

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestClientTimeoutsAndLimits(t *testing.T) {
	release := make(chan struct{})
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/event/slow"):
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case strings.Contains(r.URL.Path, "/event/huge"):
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"type":"x","content":{"body":"` + strings.Repeat("a", 4096) + `"}}`))
		case strings.Contains(r.URL.Path, "/event/notjson"):
			_, _ = w.Write([]byte(`<html>`))
		case strings.Contains(r.URL.Path, "/event/ratelimited"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":1500}`))
		}
	}))
	t.Cleanup(func() { close(release); peer.Close() })
	dest := strings.TrimPrefix(peer.URL, "http://")
	client := NewClient("a.example", mustKey(t), ClientOptions{AllowHTTPPeers: true, Timeout: 200 * time.Millisecond})
	client.MaxResponseBytes = 1024
	ctx := context.Background()

	if _, err := client.GetEvent(ctx, dest, "slow"); err == nil {
		t.Error("a request that never gets an answer did not time out")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := client.GetEvent(cancelled, dest, "slow"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: got %v", err)
	}
	if _, err := client.GetEvent(ctx, dest, "huge"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversize answer: got %v", err)
	}
	if _, err := client.GetEvent(ctx, dest, "notjson"); err == nil {
		t.Error("a non-JSON 200 answer was accepted")
	}
	_, err := client.GetEvent(ctx, dest, "ratelimited")
	var fedErr *Error
	if !errors.As(err, &fedErr) || fedErr.Status != 429 || fedErr.ErrCode != ErrCodeLimitExceeded || fedErr.RetryAfterMS != 1500 {
		t.Errorf("429: got %#v", err)
	}
	// Plain HTTP is not used unless allowed: without it the client speaks TLS to the plain listener and fails.
	strict := NewClient("a.example", mustKey(t), ClientOptions{Timeout: time.Second})
	if _, err := strict.GetEvent(ctx, dest, "huge"); err == nil {
		t.Error("client without allow_http_peers reached a plain-HTTP peer")
	}
}
