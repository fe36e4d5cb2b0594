package federation

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// ServerKeys is the body of GET /_matrix/key/v2/server, with LM's "m.linearized" flag (covered by the signature).
type ServerKeys struct {
	ServerName    string                       `json:"server_name"`
	ValidUntilTS  int64                        `json:"valid_until_ts"`
	VerifyKeys    map[string]VerifyKey         `json:"verify_keys"`
	OldVerifyKeys map[string]OldVerifyKey      `json:"old_verify_keys"`
	Linearized    bool                         `json:"m.linearized,omitempty"`
	Signatures    map[string]map[string]string `json:"signatures,omitempty"`
}

// VerifyKey is one entry of verify_keys.
type VerifyKey struct {
	Key string `json:"key"`
}

// OldVerifyKey is one entry of old_verify_keys.
type OldVerifyKey struct {
	Key       string `json:"key"`
	ExpiredTS int64  `json:"expired_ts"`
}

// KeyServerValidity is how far ahead our key answer claims validity; the draft asks for about 12 hours.
const KeyServerValidity = 12 * time.Hour

var (
	ErrKeyResponseInvalid   = errors.New("invalid server key response")
	ErrKeyResponseWrongName = errors.New("server key response is for another server")
	ErrKeyResponseUnsigned  = errors.New("server key response is not signed by each of its verify keys")
)

// ParseServerKeys decodes a key answer and checks it: it must name serverName, every verify key must decode to an
// ed25519 key, and every verify key must have signed the answer.
func ParseServerKeys(raw []byte, serverName string) (*ServerKeys, error) {
	var keys ServerKeys
	if err := json.Unmarshal(raw, &keys); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyResponseInvalid, err)
	}
	if keys.ServerName != serverName {
		return nil, fmt.Errorf("%w: asked %q, got %q", ErrKeyResponseWrongName, serverName, keys.ServerName)
	}
	if len(keys.VerifyKeys) == 0 {
		return nil, fmt.Errorf("%w: no verify_keys", ErrKeyResponseInvalid)
	}
	for keyID, key := range keys.VerifyKeys {
		pub, err := decodeEd25519(key.Key)
		if err != nil {
			return nil, fmt.Errorf("%w: key %s: %w", ErrKeyResponseInvalid, keyID, err)
		}
		if err = verifyJSON(serverName, keyID, pub, raw); err != nil {
			return nil, fmt.Errorf("%w: key %s: %w", ErrKeyResponseUnsigned, keyID, err)
		}
	}
	return &keys, nil
}

func decodeEd25519(b64 string) (ed25519.PublicKey, error) {
	raw, err := base64.RawStdEncoding.DecodeString(b64)
	if err != nil {
		// Padded base64 is not what Matrix sends, but it is harmless to accept.
		raw, err = base64.StdEncoding.DecodeString(b64)
	}
	if err != nil {
		return nil, fmt.Errorf("key is not base64: %w", err)
	} else if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("key is %d bytes, not %d", len(raw), ed25519.PublicKeySize)
	}
	return raw, nil
}

// KeyServer serves GET /_matrix/key/v2/server: our key, "m.linearized": true, valid about 12 hours ahead, self-signed.
type KeyServer struct {
	ServerName string
	Key        *SigningKey
	// Now is the clock; tests inject one.
	Now func() time.Time

	lock     sync.Mutex
	body     []byte
	signedAt time.Time
}

// NewKeyServer makes a KeyServer with the wall clock.
func NewKeyServer(serverName string, key *SigningKey) *KeyServer {
	return &KeyServer{ServerName: serverName, Key: key, Now: time.Now}
}

// Response returns the signed key answer, re-signed once an hour so valid_until_ts stays about 12 hours ahead.
func (ks *KeyServer) Response() ([]byte, error) {
	now := ks.Now()
	ks.lock.Lock()
	defer ks.lock.Unlock()
	if ks.body != nil && now.Sub(ks.signedAt) < time.Hour && !now.Before(ks.signedAt) {
		return ks.body, nil
	}
	resp := &ServerKeys{
		ServerName:    ks.ServerName,
		ValidUntilTS:  now.Add(KeyServerValidity).UnixMilli(),
		VerifyKeys:    map[string]VerifyKey{string(ks.Key.ID): {Key: string(ks.Key.Pub)}},
		OldVerifyKeys: map[string]OldVerifyKey{},
		Linearized:    true,
	}
	sig, err := signJSON(ks.Key, resp)
	if err != nil {
		return nil, fmt.Errorf("failed to sign server keys: %w", err)
	}
	resp.Signatures = map[string]map[string]string{ks.ServerName: {string(ks.Key.ID): sig}}
	body, err := json.Marshal(resp)
	if err != nil {
		return nil, fmt.Errorf("failed to encode server keys: %w", err)
	}
	ks.body, ks.signedAt = body, now
	return body, nil
}

func (ks *KeyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := ks.Response()
	if err != nil {
		writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = bytes.NewReader(body).WriteTo(w)
}
