package federation

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation"
)

type fakeFetcher struct {
	answer func() ([]byte, error)
	calls  atomic.Int32
}

func (f *fakeFetcher) FetchServerKeys(_ context.Context, _ string) ([]byte, error) {
	f.calls.Add(1)
	return f.answer()
}

func TestKeyRingCachingAndBackoff(t *testing.T) {
	ctx := context.Background()
	now := time.UnixMilli(1795292900000)
	clock := func() time.Time { return now }
	key := federation.GenerateSigningKey()
	ks := &KeyServer{ServerName: "remote.example", Key: key, Now: clock}
	fetcher := &fakeFetcher{answer: ks.Response}
	kr := &KeyRing{Fetcher: fetcher, Now: clock}

	if _, err := kr.VerifyKey(ctx, "remote.example", string(key.ID)); err != nil {
		t.Fatalf("first lookup: %v", err)
	}
	if _, err := kr.VerifyKey(ctx, "remote.example", string(key.ID)); err != nil || fetcher.calls.Load() != 1 {
		t.Fatalf("cached lookup: err %v, %d fetches", err, fetcher.calls.Load())
	}
	// An unknown key ID refetches, but not again within MinKeyRefetchInterval however often it is asked.
	now = now.Add(2 * MinKeyRefetchInterval)
	for range 20 {
		if _, err := kr.VerifyKey(ctx, "remote.example", "ed25519:forged"); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("unknown key: got %v", err)
		}
	}
	if got := fetcher.calls.Load(); got != 2 {
		t.Fatalf("%d fetches after 20 unknown-key lookups, want 2", got)
	}
	// valid_until_ts is 12 h ahead: after it the keys are fetched again.
	now = now.Add(KeyServerValidity + time.Minute)
	if _, err := kr.VerifyKey(ctx, "remote.example", string(key.ID)); err != nil || fetcher.calls.Load() != 3 {
		t.Fatalf("lookup after expiry: err %v, %d fetches, want 3", err, fetcher.calls.Load())
	}

	// Failures back off exponentially.
	now = now.Add(KeyServerValidity + time.Minute)
	fetcher.answer = func() ([]byte, error) { return nil, errors.New("connection refused") }
	if _, err := kr.VerifyKey(ctx, "remote.example", string(key.ID)); err == nil {
		t.Fatal("lookup with expired keys and a failing server succeeded")
	}
	now = now.Add(MinKeyRefetchInterval / 2)
	if _, err := kr.VerifyKey(ctx, "remote.example", string(key.ID)); !errors.Is(err, ErrKeyFetchBackoff) {
		t.Fatalf("lookup during backoff: got %v", err)
	}
	now = now.Add(MinKeyRefetchInterval)
	_, _ = kr.VerifyKey(ctx, "remote.example", string(key.ID)) // second failure: backoff doubles
	now = now.Add(MinKeyRefetchInterval + time.Second)
	if _, err := kr.VerifyKey(ctx, "remote.example", string(key.ID)); !errors.Is(err, ErrKeyFetchBackoff) {
		t.Fatalf("backoff did not double: got %v", err)
	}
	if got := fetcher.calls.Load(); got != 5 {
		t.Fatalf("%d fetches, want 5", got)
	}
	fetcher.answer = ks.Response
	now = now.Add(2 * MinKeyRefetchInterval)
	if _, err := kr.VerifyKey(ctx, "remote.example", string(key.ID)); err != nil {
		t.Fatalf("lookup after recovery: %v", err)
	}
}

func TestKeyRingCapsValidity(t *testing.T) {
	ctx := context.Background()
	now := time.UnixMilli(1795292900000)
	clock := func() time.Time { return now }
	key := federation.GenerateSigningKey()
	// A server claiming a year of validity is still refetched after 7 days.
	far := func() time.Time { return now.Add(365*24*time.Hour - KeyServerValidity) }
	ks := &KeyServer{ServerName: "remote.example", Key: key, Now: far}
	fetcher := &fakeFetcher{answer: ks.Response}
	kr := &KeyRing{Fetcher: fetcher, Now: clock}
	if _, err := kr.VerifyKey(ctx, "remote.example", string(key.ID)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(MaxKeyCacheTime - time.Minute)
	_, _ = kr.VerifyKey(ctx, "remote.example", string(key.ID))
	if fetcher.calls.Load() != 1 {
		t.Fatalf("refetched before 7 days")
	}
	now = now.Add(2 * time.Minute)
	_, _ = kr.VerifyKey(ctx, "remote.example", string(key.ID))
	if fetcher.calls.Load() != 2 {
		t.Fatalf("not refetched after 7 days")
	}
	// A key answer signed by another key is refused.
	other := federation.GenerateSigningKey()
	other.ID = key.ID
	forged := &KeyServer{ServerName: "remote.example", Key: other, Now: clock}
	body, _ := forged.Response()
	kr2 := &KeyRing{Now: clock}
	parsed, _ := ParseServerKeys(body, "remote.example")
	parsed.VerifyKeys[string(key.ID)] = VerifyKey{Key: string(key.Pub)}
	tampered, _ := json.Marshal(parsed)
	if err := kr2.AddServerKeys("remote.example", tampered); !errors.Is(err, ErrKeyResponseUnsigned) {
		t.Fatalf("answer signed by another key: got %v", err)
	}
}

func TestKeyRingForgetsDeadServers(t *testing.T) {
	now := time.UnixMilli(1795292900000)
	fetcher := &fakeFetcher{answer: func() ([]byte, error) { return nil, errors.New("no such host") }}
	kr := &KeyRing{Fetcher: fetcher, Now: func() time.Time { return now }}
	key := federation.GenerateSigningKey()
	ks := &KeyServer{ServerName: "kept.example", Key: key, Now: kr.Now}
	body, _ := ks.Response()
	if err := kr.AddServerKeys("kept.example", body); err != nil {
		t.Fatal(err)
	}
	for i := range maxKeyRingServers + 10 {
		_, _ = kr.VerifyKey(context.Background(), "made-up-"+strconv.Itoa(i)+".example", "ed25519:x")
		if i == maxKeyRingServers/2 {
			now = now.Add(MaxKeyFetchBackoff + time.Minute) // the first half's backoff is over
		}
	}
	if n := len(kr.servers); n > maxKeyRingServers {
		t.Errorf("ring holds %d servers, bound is %d", n, maxKeyRingServers)
	}
	if _, err := kr.VerifyKey(context.Background(), "kept.example", string(key.ID)); err != nil {
		t.Errorf("a server with valid keys was forgotten: %v", err)
	}
}
