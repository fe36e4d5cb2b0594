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

// KeyRing caches remote servers' verify keys, fetched from the servers themselves.
type KeyRing struct {
	Fetcher KeyFetcher
	// Now is the clock; tests inject one.
	Now func() time.Time

	lock    sync.Mutex
	servers map[string]*serverKeyState
}

type serverKeyState struct {
	// fetch serialises fetches for one server, so a burst of requests causes one fetch.
	fetch sync.Mutex

	keys      map[string]ed25519.PublicKey
	expires   time.Time
	nextFetch time.Time
	failures  int
}

// NewKeyRing makes a KeyRing with the wall clock.
func NewKeyRing(fetcher KeyFetcher) *KeyRing {
	return &KeyRing{Fetcher: fetcher, Now: time.Now}
}

var _ KeyLookup = (*KeyRing)(nil)

func (kr *KeyRing) state(serverName string) *serverKeyState {
	kr.lock.Lock()
	defer kr.lock.Unlock()
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
		if now.Before(st.expires) || now.Before(st.nextFetch) || !st.fetch.TryLock() {
			continue
		}
		delete(kr.servers, name)
		st.fetch.Unlock()
	}
}

func (kr *KeyRing) cached(st *serverKeyState, keyID string, now time.Time) ed25519.PublicKey {
	kr.lock.Lock()
	defer kr.lock.Unlock()
	if now.Before(st.expires) {
		return st.keys[keyID]
	}
	return nil
}

// VerifyKey returns serverName's current verify key keyID (never an old_verify_key), fetching the server's keys
// when they are not cached, have expired, or do not hold keyID.
func (kr *KeyRing) VerifyKey(ctx context.Context, serverName, keyID string) (ed25519.PublicKey, error) {
	st := kr.state(serverName)
	if key := kr.cached(st, keyID, kr.Now()); key != nil {
		return key, nil
	}
	st.fetch.Lock()
	defer st.fetch.Unlock()
	now := kr.Now()
	// Someone else may have fetched while we waited.
	if key := kr.cached(st, keyID, now); key != nil {
		return key, nil
	}
	kr.lock.Lock()
	nextFetch := st.nextFetch
	kr.lock.Unlock()
	if now.Before(nextFetch) {
		return nil, fmt.Errorf("%w: %s of %s (next fetch in %s): %w", ErrUnknownKey, keyID, serverName,
			nextFetch.Sub(now).Round(time.Second), ErrKeyFetchBackoff)
	}
	if kr.Fetcher == nil {
		return nil, fmt.Errorf("%w: %s of %s", ErrUnknownKey, keyID, serverName)
	}
	fetchCtx, cancel := context.WithTimeout(ctx, keyFetchTimeout)
	defer cancel()
	raw, err := kr.Fetcher.FetchServerKeys(fetchCtx, serverName)
	if err == nil {
		err = kr.add(serverName, raw, now)
	}
	if err != nil {
		kr.lock.Lock()
		st.failures++
		backoff := min(MinKeyRefetchInterval<<min(st.failures-1, 16), MaxKeyFetchBackoff)
		st.nextFetch = now.Add(backoff)
		kr.lock.Unlock()
		zerolog.Ctx(ctx).Warn().Err(err).Str("server_name", serverName).Dur("backoff", backoff).
			Msg("Failed to fetch server keys")
		return nil, fmt.Errorf("failed to fetch keys of %s: %w", serverName, err)
	}
	if key := kr.cached(st, keyID, now); key != nil {
		return key, nil
	}
	return nil, fmt.Errorf("%w: %s does not publish %s", ErrUnknownKey, serverName, keyID)
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
	st := kr.state(serverName)
	kr.lock.Lock()
	defer kr.lock.Unlock()
	st.keys, st.expires = keys, expires
	st.failures = 0
	st.nextFetch = now.Add(MinKeyRefetchInterval)
	return nil
}
