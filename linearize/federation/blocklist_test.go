package federation

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestClientRefusesBlockedAddresses(t *testing.T) {
	var reached atomic.Int32
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"type":"m.room.message","content":{}}`))
	}))
	t.Cleanup(peer.Close)
	dest := strings.TrimPrefix(peer.URL, "http://")
	ctx := context.Background()

	for _, ranges := range [][]netip.Prefix{
		{netip.MustParsePrefix("127.0.0.0/8")},
		// Any range of the list that holds the address refuses it.
		{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")},
	} {
		blocked := NewClient("a.example", mustKey(t), ClientOptions{AllowHTTPPeers: true, Timeout: time.Second, BlockedRanges: ranges})
		_, err := blocked.GetEvent(ctx, dest, "$e")
		if !errors.Is(err, ErrBlockedAddress) || !strings.Contains(err.Error(), "127.0.0.1") {
			t.Fatalf("blocklist %v: got %v, want an error naming 127.0.0.1 and wrapping ErrBlockedAddress", ranges, err)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("the peer was reached %d times through a blocklist", n)
	}
	open := NewClient("a.example", mustKey(t), ClientOptions{AllowHTTPPeers: true, Timeout: time.Second,
		BlockedRanges: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	if _, err := open.GetEvent(ctx, dest, "$e"); err != nil {
		t.Fatalf("a range not covering the peer blocked it: %v", err)
	}
	if reached.Load() != 1 {
		t.Fatal("the peer was not reached without a matching range")
	}
}

func TestRefuseBlockedUnmapsIPv4InIPv6(t *testing.T) {
	control := refuseBlocked([]netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")})
	if err := control("tcp6", "[::ffff:192.168.1.5]:8448", nil); !errors.Is(err, ErrBlockedAddress) {
		t.Fatalf("an IPv4-mapped private address got through: %v", err)
	}
	if err := control("tcp6", "[2001:db8::1]:8448", nil); err != nil {
		t.Fatalf("a public IPv6 address was refused: %v", err)
	}
}
