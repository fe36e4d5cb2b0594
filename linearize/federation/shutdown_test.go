package federation

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// serveForShutdown serves handler on 127.0.0.1 and returns the address, the cancel that stops Serve, and Serve's result.
func serveForShutdown(t *testing.T, handler http.Handler) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, ListenOptions{AllowPlainHTTP: true}, handler) }()
	t.Cleanup(cancel)
	return ln.Addr().String(), cancel, done
}

func waitServe(t *testing.T, done <-chan error, limit time.Duration, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: Serve returned %v", what, err)
		}
	case <-time.After(limit):
		t.Fatalf("%s: Serve still running %s after its context was cancelled", what, limit)
	}
}

// A connection accepted but idle (no request yet) must not hold Serve: net/http's Shutdown alone waits 5 seconds for
// one. A request in flight still gets its answer.
func TestServeStopsPastIdleConnectionsAndFinishesRequests(t *testing.T) {
	started := make(chan struct{})
	addr, cancel, done := serveForShutdown(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		_, _ = io.WriteString(w, "finished")
	}))
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	answer := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			answer <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		answer <- string(body)
	}()
	<-started
	cancel()
	// The request takes 300 ms; the idle connection would hold Shutdown for 5 s.
	waitServe(t, done, 2*time.Second, "idle connection")
	if got := <-answer; got != "finished" {
		t.Fatalf("request in flight at shutdown got %q, want its answer", got)
	}
}

// A request that does not finish within the grace period has its connection closed, and Serve returns.
func TestServeBoundsTheGracePeriod(t *testing.T) {
	old := shutdownGrace
	shutdownGrace = 200 * time.Millisecond
	defer func() { shutdownGrace = old }()
	started := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	addr, cancel, done := serveForShutdown(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	}))
	go func() {
		if resp, err := http.Get("http://" + addr + "/"); err == nil {
			_ = resp.Body.Close()
		}
	}()
	<-started
	cancel()
	waitServe(t, done, 2*time.Second, "stuck request")
}
