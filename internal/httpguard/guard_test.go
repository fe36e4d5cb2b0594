package httpguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// serveGuarded serves handler behind a Guard with limits on loopback and returns the Guard and the address.
func serveGuarded(t *testing.T, limits Limits, handler http.Handler) (*Guard, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := New(context.Background(), "test", limits)
	srv := g.Server(handler)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return g, ln.Addr().String()
}

func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	conn, err := dialer.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// bodyBytes is what the Guard's requests hold of its body budget.
func (g *Guard) heldBodyBytes() int64 {
	g.lock.Lock()
	defer g.lock.Unlock()
	return g.bodyBytes
}

// A body's buffer grows with the bytes that arrived, not with its declared Content-Length; its budget is given back
// when the request ends; a body over the budget is refused 429.
func TestBodyMemoryFollowsTheBytesReceived(t *testing.T) {
	read := make(chan error, 1)
	got := make(chan int, 1)
	g, addr := serveGuarded(t, Limits{ReadTimeout: 10 * time.Second, BodyBudget: 64 << 10, RetryAfter: time.Second},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := ReadBody(w, r, 1<<20)
			read <- err
			var refusal *Refusal
			if errors.As(err, &refusal) {
				refusal.Write(w, r)
				return
			}
			got <- len(body)
		}))
	conn := dialFrom(t, "127.0.0.1", addr)
	const declared = 1 << 20
	fmt.Fprintf(conn, "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", declared, strings.Repeat("a", 100))
	time.Sleep(200 * time.Millisecond)
	if held := g.heldBodyBytes(); held <= 0 || held > 4*initialBodyBuffer {
		t.Fatalf("a request declaring %d bytes and sending 100 holds %d bytes of the budget", declared, held)
	}
	// 100 KiB more: past the 64 KiB budget.
	if _, err := conn.Write([]byte(strings.Repeat("a", 100<<10))); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-read:
		if !errors.Is(err, ErrLimitExceeded) {
			t.Fatalf("a body over the budget: %v, want ErrLimitExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a body over the budget was not refused")
	}
	data, _ := io.ReadAll(conn)
	if !strings.Contains(string(data), "429") || !strings.Contains(string(data), `"retry_after_ms":1000`) {
		t.Errorf("answer to a body over the budget: %q", data)
	}
	deadline := time.Now().Add(5 * time.Second)
	for g.heldBodyBytes() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if held := g.heldBodyBytes(); held != 0 {
		t.Errorf("%d bytes of the budget still held after the request ended", held)
	}
	// A body within the budget is read whole.
	conn = dialFrom(t, "127.0.0.1", addr)
	fmt.Fprintf(conn, "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 30000\r\n\r\n%s", strings.Repeat("b", 30000))
	if err := <-read; err != nil {
		t.Fatalf("a body within the budget: %v", err)
	}
	if n := <-got; n != 30000 {
		t.Errorf("read %d bytes of a 30000-byte body", n)
	}
}

// Connections over MaxConnsPerIP or MaxConns are closed as they arrive; other addresses keep being served.
func TestConnectionCaps(t *testing.T) {
	_, addr := serveGuarded(t, Limits{MaxConns: 4, MaxConnsPerIP: 2, ReadHeaderTimeout: 10 * time.Second},
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	closedAtOnce := func(conn net.Conn) bool {
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := conn.Read(make([]byte, 1))
		return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(fmt.Sprint(err), "reset")
	}
	dialFrom(t, "127.0.0.5", addr)
	dialFrom(t, "127.0.0.5", addr)
	if !closedAtOnce(dialFrom(t, "127.0.0.5", addr)) {
		t.Error("a third connection from one address was kept, over MaxConnsPerIP 2")
	}
	answered := func(from string) bool {
		conn := dialFrom(t, from, addr)
		fmt.Fprint(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		data, _ := io.ReadAll(conn)
		return strings.HasPrefix(string(data), "HTTP/1.1 200")
	}
	if !answered("127.0.0.6") {
		t.Fatal("another address was not served")
	}
	dialFrom(t, "127.0.0.7", addr)
	dialFrom(t, "127.0.0.8", addr)
	if !closedAtOnce(dialFrom(t, "127.0.0.9", addr)) {
		t.Error("a fifth connection was kept, over MaxConns 4")
	}
}

// Requests count against their address until Authenticated, then against their origin.
func TestRequestBoundsMoveFromAddressToOrigin(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	g, addr := serveGuarded(t, Limits{MaxRequestsPerIP: 2, MaxRequestsPerOrigin: 1, RetryAfter: 2 * time.Second},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if origin := r.Header.Get("Origin-Name"); origin != "" {
				var refusal *Refusal
				if err := Authenticated(r, origin); errors.As(err, &refusal) {
					refusal.Write(w, r)
					return
				}
			}
			<-release
		}))
	const from = "127.0.0.10"
	send := func(origin string) net.Conn {
		conn := dialFrom(t, from, addr)
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nOrigin-Name: %s\r\n\r\n", origin)
		return conn
	}
	// status reads what a connection was answered within wait: "" for a request still held.
	status := func(conn net.Conn, wait time.Duration) string {
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		data, _ := io.ReadAll(conn)
		return string(data)
	}
	// waitFor waits on the guard's own counts rather than on timing, so that a loaded machine cannot reorder the
	// requests that the bounds are about.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (in flight %d, from %s %d)", what, g.InFlight(), from,
					g.InFlightFrom(netip.MustParseAddr(from)))
			}
		}
	}
	// Three authenticated requests of three origins from one address: the address's bound of 2 no longer applies.
	held := make([]net.Conn, 0, 3)
	for _, origin := range []string{"a", "b", "c"} {
		held = append(held, send(origin))
		n := len(held)
		waitFor(fmt.Sprintf("%d authenticated requests held", n), func() bool {
			return g.InFlight() == n && g.InFlightFrom(netip.MustParseAddr(from)) == 0
		})
	}
	for i, conn := range held {
		if got := status(conn, 100*time.Millisecond); got != "" {
			t.Fatalf("request %d answered %q, want it held", i, got)
		}
	}
	if got := status(send("a"), 30*time.Second); !strings.Contains(got, "429") || !strings.Contains(got, "Retry-After: 2") ||
		!strings.Contains(got, `"errcode":"M_LIMIT_EXCEEDED"`) || !strings.Contains(got, `"retry_after_ms":2000`) {
		t.Errorf("second request of origin a: %q, want 429 M_LIMIT_EXCEEDED with retry_after_ms", got)
	}
	// Unauthenticated ones count against the address: of three, one is refused.
	conns := []net.Conn{send(""), send(""), send("")}
	waitFor("two unauthenticated requests held", func() bool { return g.InFlightFrom(netip.MustParseAddr(from)) == 2 })
	answers := make([]string, len(conns))
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = status(conn, 2*time.Second)
		}()
	}
	wg.Wait()
	refused := 0
	for _, got := range answers {
		if strings.Contains(got, "429") {
			refused++
		}
	}
	if refused != 1 {
		t.Errorf("%d of three unauthenticated requests from one address refused, want 1 (MaxRequestsPerIP 2)", refused)
	}
}

// InFlightFrom counts an address's requests while they are in flight and not authenticated: not those of other
// addresses, not one that authenticated, none once they are answered.
func TestInFlightFromCountsTheAddressesUnauthenticatedRequests(t *testing.T) {
	entered := make(chan string, 4)
	release := make(chan struct{})
	g, addr := serveGuarded(t, Limits{MaxRequestsPerIP: 8},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if origin := r.Header.Get("Origin-Name"); origin != "" {
				_ = Authenticated(r, origin)
			}
			entered <- r.Header.Get("Origin-Name")
			<-release
		}))
	from, other := netip.MustParseAddr("127.0.0.11"), netip.MustParseAddr("127.0.0.12")
	send := func(origin string) net.Conn {
		conn := dialFrom(t, from.String(), addr)
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nOrigin-Name: %s\r\nConnection: close\r\n\r\n", origin)
		return conn
	}
	conns := []net.Conn{send(""), send(""), send("a")}
	for range conns {
		select {
		case <-entered:
		case <-time.After(30 * time.Second):
			t.Fatal("the requests did not reach the handler")
		}
	}
	if n := g.InFlightFrom(from); n != 2 {
		t.Errorf("InFlightFrom(%s) with two unauthenticated requests and one authenticated in flight: %d, want 2", from, n)
	}
	if n := g.InFlightFrom(netip.AddrFrom16(from.As16())); n != 2 {
		t.Errorf("InFlightFrom(%s), the IPv4-mapped form: %d, want 2", netip.AddrFrom16(from.As16()), n)
	}
	if n := g.InFlightFrom(other); n != 0 {
		t.Errorf("InFlightFrom(%s), an address with no requests: %d, want 0", other, n)
	}
	close(release)
	for i, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		if data, err := io.ReadAll(conn); err != nil || !strings.HasPrefix(string(data), "HTTP/1.1 200") {
			t.Fatalf("request %d once released: %q %v", i, data, err)
		}
	}
	// The Guard uncounts a request before its answer is written.
	if n := g.InFlightFrom(from); n != 0 {
		t.Errorf("InFlightFrom(%s) once its requests are answered: %d, want 0", from, n)
	}
}
