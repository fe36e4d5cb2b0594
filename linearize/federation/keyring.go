package federation

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// KeyLookup finds the public key a server signs with. It is the same method set as linearize/pdu.KeyLookup.
type KeyLookup interface {
	VerifyKey(ctx context.Context, serverName, keyID string) (ed25519.PublicKey, error)
}

// KeyFetcher gets a server's raw key answer from the server itself; *Client is one.
type KeyFetcher interface {
	FetchServerKeys(ctx context.Context, serverName string) ([]byte, error)
}

var (
	ErrUnknownKey      = errors.New("unknown signing key")
	ErrKeyFetchBackoff = errors.New("not refetching keys yet")
)

const (
	// MaxKeyCacheTime caps valid_until_ts, as the draft asks (§12.4.1).
	MaxKeyCacheTime = 7 * 24 * time.Hour
	// MinKeyRefetchInterval is how long after a fetch an unknown key ID may trigger the next one, so that requests
	// naming made-up key IDs cannot make us hammer a server.
	MinKeyRefetchInterval = time.Minute
	// MaxKeyFetchBackoff bounds the exponential backoff after failed fetches.
	MaxKeyFetchBackoff = time.Hour
	keyFetchTimeout    = 20 * time.Second
)

// KeyRing caches remote servers' verify keys, fetched from the servers themselves. Fetches are coalesced: while
// one runs for a server, every lookup that needs it waits for that one. A fetch belongs to no request: it runs to
// its own timeout even when the request that started it goes away, and a waiting request may give up alone.
type KeyRing struct {
	Fetcher KeyFetcher
	// Now is the clock; tests inject one.
	Now func() time.Time
	// MaxFetches bounds the fetches running at once, for all servers together; zero means
	// DefaultMaxConcurrentKeyFetches. Requests name the servers, so without it anyone could make us fetch from
	// thousands at once.
	MaxFetches int

	lock    sync.Mutex
	servers map[string]*serverKeyState
	slots   chan struct{}
}

// DefaultMaxConcurrentKeyFetches is KeyRing.MaxFetches when unset.
const DefaultMaxConcurrentKeyFetches = 32

type serverKeyState struct {
	keys      map[string]ed25519.PublicKey
	expires   time.Time
	nextFetch time.Time
	failures  int
	// fetching is the fetch under way, if any.
	fetching *keyFetch
}

// keyFetch is one fetch of a server's keys; done is closed once err is set and the cache updated.
type keyFetch struct {
	done chan struct{}
	err  error
}

// NewKeyRing makes a KeyRing with the wall clock.
func NewKeyRing(fetcher KeyFetcher) *KeyRing {
	return &KeyRing{Fetcher: fetcher, Now: time.Now}
}

var _ KeyLookup = (*KeyRing)(nil)

// stateLocked returns serverName's entry, made if need be; kr.lock is held.
func (kr *KeyRing) stateLocked(serverName string) *serverKeyState {
	if kr.servers == nil {
		kr.servers = make(map[string]*serverKeyState)
	}
	st, ok := kr.servers[serverName]
	if !ok {
		if len(kr.servers) >= maxKeyRingServers {
			kr.sweep()
		}
		st = &serverKeyState{}
		kr.servers[serverName] = st
	}
	return st
}

// maxKeyRingServers bounds the ring: origins are named by whoever sends us a request, so without a bound anyone
// could grow it forever with made-up names.
const maxKeyRingServers = 10000

// sweep forgets servers whose keys have expired and whose backoff is over; kr.lock is held.
func (kr *KeyRing) sweep() {
	now := kr.Now()
	for name, st := range kr.servers {
		if now.Before(st.expires) || now.Before(st.nextFetch) || st.fetching != nil {
			continue
		}
		delete(kr.servers, name)
	}
}

// VerifyKey returns serverName's current verify key keyID (never an old_verify_key), fetching the server's keys
// when they are not cached, have expired, or do not hold keyID, at most once per MinKeyRefetchInterval (longer after
// failures).
func (kr *KeyRing) VerifyKey(ctx context.Context, serverName, keyID string) (ed25519.PublicKey, error) {
	kr.lock.Lock()
	st := kr.stateLocked(serverName)
	now := kr.Now()
	if key := st.keys[keyID]; key != nil && now.Before(st.expires) {
		kr.lock.Unlock()
		return key, nil
	}
	fetch := st.fetching
	if fetch == nil {
		if now.Before(st.nextFetch) {
			kr.lock.Unlock()
			return nil, fmt.Errorf("%w: %s of %s (next fetch in %s): %w", ErrUnknownKey, keyID, serverName,
				st.nextFetch.Sub(now).Round(time.Second), ErrKeyFetchBackoff)
		}
		if kr.Fetcher == nil {
			kr.lock.Unlock()
			return nil, fmt.Errorf("%w: %s of %s", ErrUnknownKey, keyID, serverName)
		}
		fetch = &keyFetch{done: make(chan struct{})}
		st.fetching = fetch
		go kr.fetch(ctx, serverName, st, fetch, now)
	}
	kr.lock.Unlock()
	select {
	case <-fetch.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("gave up waiting for the keys of %s: %w", serverName, ctx.Err())
	}
	if fetch.err != nil {
		return nil, fmt.Errorf("failed to fetch keys of %s: %w", serverName, fetch.err)
	}
	kr.lock.Lock()
	defer kr.lock.Unlock()
	if key := st.keys[keyID]; key != nil && kr.Now().Before(st.expires) {
		return key, nil
	}
	return nil, fmt.Errorf("%w: %s does not publish %s", ErrUnknownKey, serverName, keyID)
}

// fetch runs one fetch of serverName's keys for everyone waiting on it. Its context keeps ctx's values (the
// logger) but not its cancellation.
func (kr *KeyRing) fetch(ctx context.Context, serverName string, st *serverKeyState, fetch *keyFetch, started time.Time) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keyFetchTimeout)
	defer cancel()
	err := kr.takeSlot(ctx)
	if err == nil {
		var raw []byte
		raw, err = kr.Fetcher.FetchServerKeys(ctx, serverName)
		kr.releaseSlot()
		if err == nil {
			err = kr.add(serverName, raw, started)
		}
	}
	kr.lock.Lock()
	var backoff time.Duration
	if err != nil {
		st.failures++
		backoff = min(MinKeyRefetchInterval<<min(st.failures-1, 16), MaxKeyFetchBackoff)
		st.nextFetch = started.Add(backoff)
	}
	st.fetching = nil
	fetch.err = err
	kr.lock.Unlock()
	close(fetch.done)
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("server_name", serverName).Dur("backoff", backoff).
			Msg("Failed to fetch server keys")
	}
}

// takeSlot waits for one of the MaxFetches slots.
func (kr *KeyRing) takeSlot(ctx context.Context) error {
	kr.lock.Lock()
	if kr.slots == nil {
		n := kr.MaxFetches
		if n <= 0 {
			n = DefaultMaxConcurrentKeyFetches
		}
		kr.slots = make(chan struct{}, n)
	}
	slots := kr.slots
	kr.lock.Unlock()
	select {
	case slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("too many key fetches running: %w", ctx.Err())
	}
}

func (kr *KeyRing) releaseSlot() {
	<-kr.slots
}

// AddServerKeys checks a raw key answer of serverName (as ParseServerKeys does) and caches its verify keys until its
// valid_until_ts, at most 7 days from now. Tests seed the ring with it; VerifyKey uses it after each fetch.
func (kr *KeyRing) AddServerKeys(serverName string, raw []byte) error {
	return kr.add(serverName, raw, kr.Now())
}

func (kr *KeyRing) add(serverName string, raw []byte, now time.Time) error {
	parsed, err := ParseServerKeys(raw, serverName)
	if err != nil {
		return err
	}
	expires := time.UnixMilli(parsed.ValidUntilTS)
	if !now.Before(expires) {
		return fmt.Errorf("%w: valid_until_ts %d is in the past", ErrKeyResponseInvalid, parsed.ValidUntilTS)
	}
	if maxExpires := now.Add(MaxKeyCacheTime); expires.After(maxExpires) {
		expires = maxExpires
	}
	keys := make(map[string]ed25519.PublicKey, len(parsed.VerifyKeys))
	for keyID, key := range parsed.VerifyKeys {
		// ParseServerKeys checked that this decodes.
		keys[keyID], _ = decodeEd25519(key.Key)
	}
	kr.lock.Lock()
	defer kr.lock.Unlock()
	st := kr.stateLocked(serverName)
	st.keys, st.expires = keys, expires
	st.failures = 0
	st.nextFetch = now.Add(MinKeyRefetchInterval)
	return nil
}
