package federation

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation"

	"github.com/lmbridge/lmbridge/internal/httpguard"
)

// serveLimited serves a federation Server named after its own loopback address within limits, and returns that
// address.
func serveLimited(t *testing.T, keys KeyLookup, handler Handler, limits httpguard.Limits) string {
	t.Helper()
	_, name := serveGuarded(t, keys, handler, limits)
	return name
}

// serveGuarded is serveLimited that returns the listener's Guard too, for a test to wait on its state.
func serveGuarded(t *testing.T, keys KeyLookup, handler Handler, limits httpguard.Limits) (*httpguard.Guard, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	name := ln.Addr().String()
	srv := NewServer(name, NewKeyServer(name, mustKey(t)), keys, handler, testMaxRequestBytes)
	ctx, cancel := context.WithCancel(context.Background())
	guard := httpguard.New(ctx, "federation", limits)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, ListenOptions{AllowPlainHTTP: true}, guard, srv) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return guard, name
}

// gateHandler holds every Send of one origin until release is closed.
type gateHandler struct {
	recordingHandler
	held    string
	entered chan string
	release chan struct{}
}

func (h *gateHandler) Send(_ context.Context, origin, txnID string, _ *Transaction) (*SendResponse, error) {
	if origin == h.held {
		h.entered <- txnID
		<-h.release
	}
	return &SendResponse{}, nil
}

// signedSend is a PUT /send signed by origin's key, from the local address from ("" for any).
func signedSend(t *testing.T, key *SigningKey, origin, dest, txnID, from string, timeout time.Duration) (int, *Error, http.Header, error) {
	t.Helper()
	uri := UnstablePrefix + "/send/" + txnID
	body := []byte(`{"pdus":[]}`)
	req, err := http.NewRequest(http.MethodPut, "http://"+dest+uri, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", sign(t, key, origin, dest, http.MethodPut, uri, body))
	dialer := &net.Dialer{}
	if from != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dialer.DialContext}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, nil, resp.Header, nil
	}
	var fedErr Error
	if err = json.Unmarshal(data, &fedErr); err != nil {
		t.Fatalf("error answer is not JSON: %q", data)
	}
	return resp.StatusCode, &fedErr, resp.Header, nil
}

func keysOf(keys map[string]*SigningKey) staticKeys {
	out := staticKeys{}
	for name, key := range keys {
		out[name+" "+string(key.ID)] = key.Priv.Public().(ed25519.PublicKey)
	}
	return out
}

// A flood from one origin fills its bound and is answered 429 M_LIMIT_EXCEEDED with retry_after_ms, while another
// origin is served, and the flooding origin again once its requests finish.
func TestOriginOverItsBoundIsRefusedWhileOthersAreServed(t *testing.T) {
	flooder, other := federation.GenerateSigningKey(), federation.GenerateSigningKey()
	keys := keysOf(map[string]*SigningKey{"flood.example": flooder, "other.example": other})
	handler := &gateHandler{held: "flood.example", entered: make(chan string, 16), release: make(chan struct{})}
	const perOrigin = 4
	limits := Limits(ListenOptions{MaxRequestsPerIP: 64, MaxRequestsPerOrigin: perOrigin, MaxRequestBytes: testMaxRequestBytes})
	dest := serveLimited(t, keys, handler, limits)

	var wg sync.WaitGroup
	held := make([]int, perOrigin)
	for i := range perOrigin {
		wg.Go(func() {
			status, _, _, err := signedSend(t, flooder, "flood.example", dest, fmt.Sprint("held", i), "", 10*time.Second)
			if err != nil {
				t.Errorf("held request %d: %v", i, err)
			}
			held[i] = status
		})
	}
	for range perOrigin {
		select {
		case <-handler.entered:
		case <-time.After(30 * time.Second):
			t.Fatal("the origin's first requests did not reach the handler")
		}
	}
	for i := range 3 {
		status, fedErr, header, err := signedSend(t, flooder, "flood.example", dest, fmt.Sprint("over", i), "", 30*time.Second)
		if err != nil {
			t.Fatalf("request over the bound: %v (it should be answered at once)", err)
		}
		if status != http.StatusTooManyRequests || fedErr.ErrCode != ErrCodeLimitExceeded || fedErr.RetryAfterMS <= 0 ||
			header.Get("Retry-After") == "" {
			t.Fatalf("request over the bound: %d %+v, Retry-After %q; want 429 M_LIMIT_EXCEEDED with retry_after_ms",
				status, fedErr, header.Get("Retry-After"))
		}
	}
	if status, fedErr, _, err := signedSend(t, other, "other.example", dest, "other", "", 30*time.Second); err != nil || status != http.StatusOK {
		t.Fatalf("another origin while the first is at its bound: %d %+v %v", status, fedErr, err)
	}
	close(handler.release)
	wg.Wait()
	for i, status := range held {
		if status != http.StatusOK {
			t.Errorf("held request %d: status %d", i, status)
		}
	}
	if status, fedErr, _, err := signedSend(t, flooder, "flood.example", dest, "after", "", 30*time.Second); err != nil || status != http.StatusOK {
		t.Errorf("the origin once its requests finished: %d %+v %v", status, fedErr, err)
	}
}

// rawConn sends data on a new connection from the local address from and returns the connection.
func rawConn(t *testing.T, addr, from, data string) net.Conn {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 30 * time.Second}
	conn, err := dialer.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if _, err = io.WriteString(conn, data); err != nil {
		t.Fatal(err)
	}
	return conn
}

// Before they authenticate, requests count against their address: an address holding its bound with bodies that
// do not arrive is refused 429, while a request from another address is served.
func TestAddressOverItsBoundIsRefusedBeforeAuthentication(t *testing.T) {
	good := federation.GenerateSigningKey()
	keys := keysOf(map[string]*SigningKey{"good.example": good})
	const perIP = 4
	limits := Limits(ListenOptions{MaxRequestsPerIP: perIP, MaxRequestsPerOrigin: 32, MaxRequestBytes: testMaxRequestBytes})
	// The slow bodies must outlast the wait for them on a loaded machine; the read timeout has its own test.
	limits.ReadTimeout = 5 * time.Minute
	guard, dest := serveGuarded(t, keys, &recordingHandler{}, limits)
	head := "PUT " + UnstablePrefix + "/send/slow HTTP/1.1\r\nHost: " + dest + "\r\n" +
		`Authorization: X-Matrix origin="good.example",destination="` + dest + `",key="ed25519:a",sig="c2ln"` + "\r\n" +
		"Content-Length: 100\r\n\r\n{"
	slow := make([]net.Conn, perIP)
	for i := range perIP {
		slow[i] = rawConn(t, dest, "127.0.0.3", head)
	}
	// The slow requests reach the guard in their own time. A request sent before they all have would take one of
	// their places and have the last of them refused, and the address would never hold its bound with slow bodies.
	from := netip.MustParseAddr("127.0.0.3")
	deadline := time.Now().Add(30 * time.Second)
	for guard.InFlightFrom(from) < perIP {
		if time.Now().After(deadline) {
			for i, conn := range slow {
				_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
					t.Errorf("slow request %d was answered %d before its body arrived", i, resp.StatusCode)
				}
			}
			t.Fatalf("%d of the %d slow requests in flight 30 s after they were sent", guard.InFlightFrom(from), perIP)
		}
		time.Sleep(5 * time.Millisecond)
	}
	status, fedErr, header, err := signedSend(t, good, "good.example", dest, "flood", from.String(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusTooManyRequests || fedErr.ErrCode != ErrCodeLimitExceeded || fedErr.RetryAfterMS <= 0 ||
		header.Get("Retry-After") == "" {
		t.Fatalf("a request from an address with %d requests in flight: %d %+v, Retry-After %q; want 429 M_LIMIT_EXCEEDED with retry_after_ms",
			perIP, status, fedErr, header.Get("Retry-After"))
	}
	if n := guard.InFlightFrom(from); n != perIP {
		t.Errorf("%d requests of the address in flight after the refusal, want its %d slow ones", n, perIP)
	}
	if status, fedErr, _, err := signedSend(t, good, "good.example", dest, "other", "127.0.0.4", 30*time.Second); err != nil || status != http.StatusOK {
		t.Fatalf("a request from another address: %d %+v %v", status, fedErr, err)
	}
}

// readAnswer reads one HTTP answer from conn within timeout.
func readAnswer(t *testing.T, conn net.Conn, timeout time.Duration) (*http.Response, []byte) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer within %s: %v", timeout, err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The server closes the connection after the refusal, rather than read the rest of the body.
	if _, err = br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("connection not closed after the answer: %v", err)
	}
	return resp, data
}

// A body over max_request_bytes is answered 413 M_TOO_LARGE at once, whether its Content-Length says so or it is
// chunked and only goes over partway, and the connection is closed rather than read to its end. The handler never
// sees it.
func TestOversizedBodyIsRefusedAtOnce(t *testing.T) {
	a := federation.GenerateSigningKey()
	handler := &recordingHandler{}
	dest := serveLimited(t, keysOf(map[string]*SigningKey{"a.example": a}), handler,
		Limits(ListenOptions{MaxRequestsPerIP: 64, MaxRequestsPerOrigin: 32, MaxRequestBytes: testMaxRequestBytes}))
	auth := sign(t, a, "a.example", dest, http.MethodPut, UnstablePrefix+"/send/big", []byte(`{"pdus":[]}`))
	head := "PUT " + UnstablePrefix + "/send/big HTTP/1.1\r\nHost: " + dest + "\r\nAuthorization: " + auth + "\r\n"
	over := `{"pdus":[],"x":"` + strings.Repeat("a", testMaxRequestBytes) + `"`
	cases := map[string]string{
		// Nothing of the body is sent: the header alone says it is too large.
		"declared": head + "Content-Length: 10485760\r\n\r\n",
		// The body goes over the limit, then stalls without ending.
		"chunked": head + "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n", len(over), over),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			conn := rawConn(t, dest, "127.0.0.1", data)
			resp, body := readAnswer(t, conn, 2*time.Second)
			var fedErr Error
			_ = json.Unmarshal(body, &fedErr)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || fedErr.ErrCode != ErrCodeTooLarge ||
				!strings.Contains(fedErr.Message, fmt.Sprintf("limit of %d bytes", testMaxRequestBytes)) {
				t.Errorf("got %d %s, want 413 M_TOO_LARGE saying the limit", resp.StatusCode, body)
			}
		})
	}
	if calls := handler.Calls(); len(calls) > 0 {
		t.Errorf("the handler saw oversized requests: %v", calls)
	}
}

// A body trickled a byte at a time cannot hold a connection past the read timeout; nor can headers that do not end,
// past the header timeout, nor an idle kept-alive connection, past the idle timeout.
func TestSlowClientsAreClosedAfterTheirTimeouts(t *testing.T) {
	a := federation.GenerateSigningKey()
	limits := Limits(ListenOptions{MaxRequestsPerIP: 64, MaxRequestsPerOrigin: 32, MaxRequestBytes: testMaxRequestBytes})
	limits.ReadHeaderTimeout, limits.ReadTimeout, limits.IdleTimeout = 500*time.Millisecond, time.Second, time.Second
	dest := serveLimited(t, keysOf(map[string]*SigningKey{"a.example": a}), &recordingHandler{}, limits)
	uri := UnstablePrefix + "/send/slow"
	auth := sign(t, a, "a.example", dest, http.MethodPut, uri, []byte(`{"pdus":[]}`))
	slowBody := rawConn(t, dest, "127.0.0.1", "PUT "+uri+" HTTP/1.1\r\nHost: "+dest+"\r\nAuthorization: "+auth+"\r\nContent-Length: 11\r\n\r\n{")
	slowHeader := rawConn(t, dest, "127.0.0.1", "PUT "+uri+" HTTP/1.1\r\nHost: "+dest+"\r\n")
	idle := rawConn(t, dest, "127.0.0.1", "GET /_matrix/key/v2/server HTTP/1.1\r\nHost: "+dest+"\r\n\r\n")

	closed := make(chan string, 3)
	watch := func(name string, conn net.Conn) {
		go func() {
			_, _ = io.Copy(io.Discard, conn)
			closed <- name
		}()
	}
	watch("slow body", slowBody)
	watch("slow header", slowHeader)
	watch("idle", idle)
	var stillSending atomic.Bool
	stillSending.Store(true)
	go func() {
		// A space every 100 ms: well within any per-read timeout, never done.
		for stillSending.Load() {
			if _, err := slowBody.Write([]byte(" ")); err != nil {
				return
			}
			_, _ = slowHeader.Write([]byte("X"))
			time.Sleep(100 * time.Millisecond)
		}
	}()
	defer stillSending.Store(false)
	// Ten times the longest timeout: the bound is that they close, not how fast.
	deadline := time.After(10 * time.Second)
	for range 3 {
		select {
		case <-closed:
		case <-deadline:
			t.Fatal("a slow connection is still open 10 s later, past its timeout")
		}
	}
}

// keyServerGate is a key server that holds its answers until release is closed, and counts its fetches.
type keyServerGate struct {
	keys    *KeyServer
	hits    atomic.Int32
	first   chan struct{}
	once    sync.Once
	release chan struct{}
}

func (g *keyServerGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.hits.Add(1)
	g.once.Do(func() { close(g.first) })
	<-g.release
	g.keys.ServeHTTP(w, r)
}

// N concurrent requests naming one unknown origin cause one fetch of its keys. That fetch belongs to no request:
// the request that started it going away fails it for no one, and the others are served once it completes.
func TestKeyFetchesAreCoalescedAndOutliveTheirRequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := ln.Addr().String()
	originKey := federation.GenerateSigningKey()
	gate := &keyServerGate{keys: NewKeyServer(origin, originKey), first: make(chan struct{}), release: make(chan struct{})}
	keySrv := &http.Server{Handler: gate, ReadHeaderTimeout: time.Second}
	go func() { _ = keySrv.Serve(ln) }()
	t.Cleanup(func() { _ = keySrv.Close() })
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(gate.release) }) }
	t.Cleanup(release)

	client := NewClient("lm.test", mustKey(t), ClientOptions{AllowHTTPPeers: true, Timeout: 10 * time.Second})
	ring := NewKeyRing(client)
	limits := Limits(ListenOptions{MaxRequestsPerIP: 64, MaxRequestsPerOrigin: 64, MaxRequestBytes: testMaxRequestBytes})
	dest := serveLimited(t, ring, &recordingHandler{}, limits)

	// The first request starts the fetch and goes away while the key server holds its answer.
	firstCtx, cancelFirst := context.WithCancel(context.Background())
	firstDone := make(chan error, 1)
	go func() {
		uri := UnstablePrefix + "/event/%24first"
		req, _ := http.NewRequestWithContext(firstCtx, http.MethodGet, "http://"+dest+uri, nil)
		req.Header.Set("Authorization", sign(t, originKey, origin, dest, http.MethodGet, uri, nil))
		resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		firstDone <- err
	}()
	select {
	case <-gate.first:
	case <-time.After(30 * time.Second):
		t.Fatal("the first request did not make lmbridge fetch the origin's keys")
	}
	const n = 10
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			status, fedErr, _, err := signedSend(t, originKey, origin, dest, fmt.Sprint("t", i), "", 10*time.Second)
			if err != nil || status != http.StatusOK {
				t.Errorf("request %d: %d %+v %v", i, status, fedErr, err)
			}
			statuses[i] = status
		})
	}
	// Give the others time to arrive and wait on the fetch; then the first one leaves.
	time.Sleep(300 * time.Millisecond)
	cancelFirst()
	<-firstDone
	time.Sleep(100 * time.Millisecond)
	release()
	wg.Wait()
	if hits := gate.hits.Load(); hits != 1 {
		t.Errorf("%d concurrent requests naming one origin caused %d key fetches, want 1", n+1, hits)
	}
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// A key answer is read through MaxServerKeysBytes, not the client's general bound: a key server answering 10 MB is
// refused after at most a little more than that, with or without a Content-Length.
func TestKeyAnswerIsReadThroughASmallBound(t *testing.T) {
	const answerBytes = 10 << 20
	chunk := bytes.Repeat([]byte(" "), 64<<10)
	for _, declared := range []bool{true, false} {
		t.Run(fmt.Sprint("content-length ", declared), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if declared {
					w.Header().Set("Content-Length", fmt.Sprint(answerBytes))
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte("{"))
				for sent := 1; sent < answerBytes; sent += len(chunk) {
					if _, err := w.Write(chunk[:min(len(chunk), answerBytes-sent)]); err != nil {
						return
					}
				}
			})}
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(func() { _ = srv.Close() })

			client := NewClient("lm.test", mustKey(t), ClientOptions{AllowHTTPPeers: true, Timeout: 10 * time.Second})
			var read atomic.Int64
			transport := client.HTTP.Transport.(*http.Transport)
			dial := transport.DialContext
			transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := dial(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &countingConn{Conn: conn, read: &read}, nil
			}
			_, err = client.FetchServerKeys(context.Background(), ln.Addr().String())
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("limit of %d bytes", MaxServerKeysBytes)) {
				t.Fatalf("a 10 MB key answer: got %v, want a refusal naming the %d-byte limit", err, MaxServerKeysBytes)
			}
			t.Logf("read %d bytes of a %d-byte key answer: %v", read.Load(), answerBytes, err)
			if got := read.Load(); got > 4*MaxServerKeysBytes {
				t.Errorf("read %d bytes of a 10 MB key answer, want at most about %d", got, MaxServerKeysBytes)
			}
		})
	}
}

// blockingFetcher holds every fetch until release is closed, and records how many ran at once.
type blockingFetcher struct {
	release chan struct{}
	running atomic.Int32
	most    atomic.Int32
	calls   atomic.Int32
}

func (f *blockingFetcher) FetchServerKeys(ctx context.Context, _ string) ([]byte, error) {
	f.calls.Add(1)
	now := f.running.Add(1)
	defer f.running.Add(-1)
	for {
		most := f.most.Load()
		if now <= most || f.most.CompareAndSwap(most, now) {
			break
		}
	}
	select {
	case <-f.release:
	case <-ctx.Done():
	}
	return nil, errors.New("no keys here")
}

// Requests name the origins whose keys are fetched, so fetches for many origins at once are bounded too.
func TestKeyFetchesForManyOriginsAreBounded(t *testing.T) {
	fetcher := &blockingFetcher{release: make(chan struct{})}
	ring := &KeyRing{Fetcher: fetcher, Now: time.Now, MaxFetches: 3}
	const origins = 12
	var wg sync.WaitGroup
	for i := range origins {
		wg.Go(func() {
			if _, err := ring.VerifyKey(context.Background(), fmt.Sprintf("o%d.example", i), "ed25519:a"); err == nil {
				t.Errorf("origin %d: got a key from a fetcher that has none", i)
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for fetcher.running.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// Let any fetch beyond the bound show itself.
	time.Sleep(200 * time.Millisecond)
	close(fetcher.release)
	wg.Wait()
	if most := fetcher.most.Load(); most != 3 {
		t.Errorf("%d key fetches ran at once for %d origins, want the bound of 3", most, origins)
	}
	if calls := fetcher.calls.Load(); calls != origins {
		t.Errorf("%d fetches for %d origins", calls, origins)
	}
}
