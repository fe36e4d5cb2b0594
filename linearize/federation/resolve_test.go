package federation

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation"
)

type fakeSRV map[string][]*net.SRV

func (f fakeSRV) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	key := "_" + service + "._" + proto + "." + name
	if recs, ok := f[key]; ok {
		return key, recs, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: key, IsNotFound: true}
}

// wellKnownServer serves /.well-known/matrix/server documents per Host over TLS on loopback.
func wellKnownServer(t *testing.T, docs map[string]string, cacheControl string) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		host := r.URL.Query().Get("host")
		doc, ok := docs[host]
		if r.URL.Path != "/.well-known/matrix/server" || !ok {
			http.NotFound(w, r)
			return
		}
		if cacheControl != "" {
			w.Header().Set("Cache-Control", cacheControl)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(doc))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	docs := map[string]string{
		"delegated.test": `{"m.server": "hs.delegated.test:8443"}`,
		"srvdeleg.test":  `{"m.server": "target.test"}`,
		"broken.test":    `{"m.server": ""}`,
		"garbage.test":   `not json`,
	}
	wk, hits := wellKnownServer(t, docs, "max-age=600")
	now := time.UnixMilli(1795292900000)
	r := &Resolver{
		HTTP: wk.Client(),
		DNS: fakeSRV{
			"_matrix._tcp.target.test":   {{Target: "10.0.0.2.", Port: 8999}},
			"_matrix._tcp.srv.test":      {{Target: "a.srv.test.", Port: 1}, {Target: "b.srv.test.", Port: 2}},
			"_matrix-fed._tcp.both.test": {{Target: "fed.both.test.", Port: 3}},
			"_matrix._tcp.both.test":     {{Target: "old.both.test.", Port: 4}},
		},
		WellKnownURL: func(host string) string { return wk.URL + "/.well-known/matrix/server?host=" + host },
		Now:          func() time.Time { return now },
	}
	cases := []struct {
		name, scheme, host, addrs string
	}{
		{"127.0.0.1:3000", "https", "127.0.0.1:3000", "127.0.0.1:3000"},
		{"[::1]", "https", "[::1]", "[::1]:8448"},
		{"1.2.3.4", "https", "1.2.3.4", "1.2.3.4:8448"},
		{"explicit.test:1234", "https", "explicit.test:1234", "explicit.test:1234"},
		{"delegated.test", "https", "hs.delegated.test:8443", "hs.delegated.test:8443"},
		{"srvdeleg.test", "https", "target.test", "10.0.0.2:8999"},
		{"srv.test", "https", "srv.test", "a.srv.test:1,b.srv.test:2"},
		{"both.test", "https", "both.test", "fed.both.test:3"},
		{"broken.test", "https", "broken.test", "broken.test:8448"},
		{"garbage.test", "https", "garbage.test", "garbage.test:8448"},
		{"plain.test", "https", "plain.test", "plain.test:8448"},
	}
	for _, tc := range cases {
		res, err := r.Resolve(ctx, tc.name)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if res.Scheme != tc.scheme || res.Host != tc.host || strings.Join(res.Addrs, ",") != tc.addrs {
			t.Errorf("%s resolved to %s://%s via %v, want %s://%s via %s", tc.name, res.Scheme, res.Host, res.Addrs, tc.scheme, tc.host, tc.addrs)
		}
	}
	for _, bad := range []string{"", "bad name", "host:99999x", "[::1", strings.Repeat("a", 300)} {
		if _, err := r.Resolve(ctx, bad); !errors.Is(err, ErrInvalidServerName) {
			t.Errorf("%q: got %v, want ErrInvalidServerName", bad, err)
		}
	}

	// Answers are cached: max-age=600 for well-known answers, one hour for failures.
	before := hits.Load()
	_, _ = r.Resolve(ctx, "delegated.test")
	_, _ = r.Resolve(ctx, "plain.test")
	if hits.Load() != before {
		t.Error("cached resolutions fetched well-known again")
	}
	now = now.Add(11 * time.Minute)
	_, _ = r.Resolve(ctx, "delegated.test")
	_, _ = r.Resolve(ctx, "plain.test")
	if hits.Load() != before+1 {
		t.Errorf("after 11 minutes: %d fetches, want 1 (delegated.test only)", hits.Load()-before)
	}
	now = now.Add(time.Hour)
	_, _ = r.Resolve(ctx, "plain.test")
	if hits.Load() != before+2 {
		t.Error("failed well-known not retried after an hour")
	}

	// Plain HTTP only for host:port names, and only when allowed.
	r.AllowHTTPPeers = true
	for name, scheme := range map[string]string{"127.0.0.2:3000": "http", "delegated.test": "https", "1.2.3.4": "https"} {
		res, err := r.Resolve(ctx, name)
		if err != nil || res.Scheme != scheme {
			t.Errorf("%s with plain-HTTP peers: %+v, %v, want %s", name, res, err, scheme)
		}
	}
}

func TestCacheLifetime(t *testing.T) {
	for cc, want := range map[string]time.Duration{
		"":                      24 * time.Hour,
		"max-age=60":            time.Minute,
		"public, max-age=3600":  time.Hour,
		"max-age=999999999":     48 * time.Hour,
		"no-store":              0,
		"max-age=abc":           24 * time.Hour,
		"Max-Age=120, no-cache": 2 * time.Minute,
	} {
		if got := cacheLifetime(cc); got != want {
			t.Errorf("cacheLifetime(%q) = %s, want %s", cc, got, want)
		}
	}
}

// TestClientFollowsWellKnown makes a signed request to a server name that delegates by well-known to a TLS listener
// on loopback: the request must reach it, with TLS, and with the server name (not the delegated host) as destination.
func TestClientFollowsWellKnown(t *testing.T) {
	a := newTestPeer(t)
	const name = "lm.delegated.test"
	bKey := federation.GenerateSigningKey()
	handler := &recordingHandler{}
	bServer := NewServer(name, NewKeyServer(name, bKey), a.ring, handler, testMaxRequestBytes)
	fed := httptest.NewUnstartedServer(bServer)
	fed.EnableHTTP2 = true
	fed.StartTLS()
	t.Cleanup(fed.Close)
	fedPort := strconv.Itoa(fed.Listener.Addr().(*net.TCPAddr).Port)
	wk, _ := wellKnownServer(t, map[string]string{name: `{"m.server": "127.0.0.1:` + fedPort + `"}`}, "")

	client := NewClient(a.name, a.key, ClientOptions{
		TLSConfig:    &tls.Config{RootCAs: fed.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs},
		WellKnownURL: func(host string) string { return wk.URL + "/.well-known/matrix/server?host=" + host },
		DNS:          fakeSRV{},
	})
	client.Resolver.HTTP = wk.Client()
	if _, err := client.GetEvent(context.Background(), name, "$ev"); err != nil {
		t.Fatalf("request through well-known delegation: %v", err)
	}
	if calls := handler.Calls(); len(calls) != 1 || calls[0] != "event "+a.name+" $ev" {
		t.Fatalf("handler calls %q", calls)
	}
	keys, err := client.ServerKeys(context.Background(), name)
	if err != nil || keys.ServerName != name {
		t.Fatalf("keys through delegation: %+v, %v", keys, err)
	}
}
