package appservice

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/internal/httpguard"
)

// startLimitedAS is startTestAS with the listener's limits adjusted before Start.
func startLimitedAS(t *testing.T, maxBody int64, adjust func(*httpguard.Limits)) *testAS {
	t.Helper()
	db := openTestDB(t, filepath.Join(t.TempDir(), "as.db"))
	as, err := New(Params{
		Homeserver: config.Homeserver{Address: "http://127.0.0.1:1", Domain: "hs.test"},
		AppService: config.AppService{
			Hostname: "127.0.0.1", Port: 0, ID: "lmbridge",
			Bot:              config.Bot{Username: "lmbridge"},
			UsernameTemplate: "lm_{{.}}", MaxBodyBytes: maxBody,
		},
		Registration: testRegistration(),
		DB:           db,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	adjust(&as.limits)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)
	ctx, cancel := context.WithCancel(log.WithContext(context.Background()))
	if err = as.Upgrade(ctx); err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	if err = as.Start(ctx, newRecorder()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	tas := &testAS{AppService: as, url: "http://" + as.Addr().String(), cancel: cancel, db: db}
	t.Cleanup(tas.stop)
	return tas
}

func rawConn(t *testing.T, addr, data string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if _, err = io.WriteString(conn, data); err != nil {
		t.Fatal(err)
	}
	return conn
}

// Refusals of requests whose body has not arrived are answered at once, and the connection is closed rather than
// read to the end of a body that may never come: no token, a wrong token, a body declared or found over
// max_body_bytes. Nothing of them is stored.
func TestRefusalsAreAnsweredWithoutWaitingForTheBody(t *testing.T) {
	tas := startLimitedAS(t, 4096, func(*httpguard.Limits) {})
	addr := strings.TrimPrefix(tas.url, "http://")
	head := "PUT /_matrix/app/v1/transactions/t1 HTTP/1.1\r\nHost: " + addr + "\r\n"
	over := `{"events":[],"x":"` + strings.Repeat("a", 5000) + `"`
	cases := []struct {
		name, data     string
		status         int
		errcode, about string
	}{
		{"no token", head + "Content-Length: 1000\r\n\r\n{", http.StatusUnauthorized, "M_MISSING_TOKEN", "hs_token"},
		{"wrong token", head + "Authorization: Bearer nope\r\nContent-Length: 1000\r\n\r\n{", http.StatusForbidden, "M_FORBIDDEN", "hs_token"},
		{"declared too large", head + "Authorization: Bearer " + testHSToken + "\r\nContent-Length: 10485760\r\n\r\n{",
			http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "limit of 4096 bytes"},
		{"chunked too large", head + "Authorization: Bearer " + testHSToken + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n", len(over), over), http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "limit of 4096 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := rawConn(t, addr, tc.data)
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer within 2 s: %v", err)
			}
			var body struct {
				ErrCode string `json:"errcode"`
				Error   string `json:"error"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || body.ErrCode != tc.errcode || !strings.Contains(body.Error, tc.about) {
				t.Errorf("got %d %s %q, want %d %s about %q", resp.StatusCode, body.ErrCode, body.Error, tc.status, tc.errcode, tc.about)
			}
			if _, err = io.ReadAll(br); err != nil {
				t.Errorf("connection not closed after the answer: %v", err)
			}
		})
	}
	for _, table := range []string{"appservice_transaction", "appservice_event"} {
		if n := tas.count(t, table); n != 0 {
			t.Errorf("%d rows in %s after refusals", n, table)
		}
	}
	if resp := tas.put(t, "good", txnBody(msgEvent("!r:hs.test", "$e1", "hi")), testHSToken, ""); resp.status != http.StatusOK {
		t.Fatalf("good transaction after the refusals: %d %s %s", resp.status, resp.errcode, resp.message)
	}
}

// With the homeserver's token, a transaction body trickled a byte at a time cannot hold a connection past the read
// timeout; nor can headers that do not end, nor an idle kept-alive connection.
func TestSlowHomeserverConnectionsAreClosedAfterTheirTimeouts(t *testing.T) {
	tas := startLimitedAS(t, 4096, func(l *httpguard.Limits) {
		l.ReadHeaderTimeout, l.ReadTimeout, l.IdleTimeout = 500*time.Millisecond, time.Second, time.Second
	})
	addr := strings.TrimPrefix(tas.url, "http://")
	head := "PUT /_matrix/app/v1/transactions/slow HTTP/1.1\r\nHost: " + addr + "\r\n"
	slowBody := rawConn(t, addr, head+"Authorization: Bearer "+testHSToken+"\r\nContent-Length: 4000\r\n\r\n{")
	slowHeader := rawConn(t, addr, head)
	idle := rawConn(t, addr, "GET /_matrix/mau/live HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
	closed := make(chan struct{}, 3)
	for _, conn := range []net.Conn{slowBody, slowHeader, idle} {
		go func() {
			_, _ = io.Copy(io.Discard, conn)
			closed <- struct{}{}
		}()
	}
	var sending atomic.Bool
	sending.Store(true)
	defer sending.Store(false)
	go func() {
		for sending.Load() {
			if _, err := slowBody.Write([]byte(" ")); err != nil {
				return
			}
			_, _ = slowHeader.Write([]byte("X"))
			time.Sleep(100 * time.Millisecond)
		}
	}()
	deadline := time.After(10 * time.Second)
	for range 3 {
		select {
		case <-closed:
		case <-deadline:
			t.Fatal("a slow connection is still open 10 s later, past its timeout")
		}
	}
	if n := tas.count(t, "appservice_transaction"); n != 0 {
		t.Errorf("%d transactions stored from a body that never ended", n)
	}
}

// When the listener has MaxRequests in flight, the next request is answered 429 M_LIMIT_EXCEEDED with
// retry_after_ms, and served again once the others are gone.
func TestListenerAtItsBoundAnswersLimitExceeded(t *testing.T) {
	tas := startLimitedAS(t, 4096, func(l *httpguard.Limits) { l.MaxRequests = 3 })
	addr := strings.TrimPrefix(tas.url, "http://")
	var held []net.Conn
	for i := range 3 {
		held = append(held, rawConn(t, addr, fmt.Sprintf("PUT /_matrix/app/v1/transactions/held%d HTTP/1.1\r\nHost: %s\r\n"+
			"Authorization: Bearer %s\r\nContent-Length: 100\r\n\r\n{", i, addr, testHSToken)))
	}
	// The three must be in flight before the first good request: one that came first would take a slot and leave
	// the third held request refused.
	waitFor(t, "the three held requests in flight", func() bool { return tas.guard.InFlight() == 3 })
	put := func() (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPut, tas.url+"/_matrix/app/v1/transactions/good", strings.NewReader(`{"events":[]}`))
		req.Header.Set("Authorization", "Bearer "+testHSToken)
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	var lastStatus int
	var lastBody map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for {
		lastStatus, lastBody = put()
		ms, _ := lastBody["retry_after_ms"].(float64)
		if lastStatus == http.StatusTooManyRequests && lastBody["errcode"] == "M_LIMIT_EXCEEDED" && ms > 0 {
			break
		}
		if time.Now().After(deadline) {
			// Said in full: a CI run once saw no 429 here for 10 s, and what came instead tells why.
			t.Fatalf("no 429 while three requests are held: the last answer was %d %v", lastStatus, lastBody)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, conn := range held {
		_ = conn.Close()
	}
	waitFor(t, "a 200 once the held requests are gone", func() bool {
		status, _ := put()
		return status == http.StatusOK
	})
}
