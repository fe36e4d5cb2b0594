package content

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"crypto/subtle"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// AEADAlgorithm is a number from the IANA AEAD Algorithms registry (RFC 5116 §6).
type AEADAlgorithm uint16

// The AEAD algorithms this package implements; the draft makes AES-128-GCM mandatory.
const (
	AEADNone             AEADAlgorithm = 0
	AEADAES128GCM        AEADAlgorithm = 1
	AEADAES256GCM        AEADAlgorithm = 2
	AEADChaCha20Poly1305 AEADAlgorithm = 29
)

func (a AEADAlgorithm) String() string {
	switch a {
	case AEADNone:
		return "none"
	case AEADAES128GCM:
		return "AES-128-GCM"
	case AEADAES256GCM:
		return "AES-256-GCM"
	case AEADChaCha20Poly1305:
		return "ChaCha20-Poly1305"
	}
	return "AEAD(" + strconv.Itoa(int(a)) + ")"
}

// KeySize is the key length of a supported algorithm, 0 otherwise.
func (a AEADAlgorithm) KeySize() int {
	switch a {
	case AEADAES128GCM:
		return 16
	case AEADAES256GCM, AEADChaCha20Poly1305:
		return 32
	}
	return 0
}

func (a AEADAlgorithm) aead(key []byte) (cipher.AEAD, error) {
	if a.KeySize() == 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedAEAD, a)
	}
	if len(key) != a.KeySize() {
		return nil, fmt.Errorf("%w: %s key of %d bytes, want %d", ErrBadKey, a, len(key), a.KeySize())
	}
	if a == AEADChaCha20Poly1305 {
		return chacha20poly1305.New(key)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return cipher.NewGCM(block)
}

// HashAlgorithm is a number from the IANA Named Information Hash Algorithm registry.
type HashAlgorithm uint8

// The hash algorithms this package implements (the untruncated ones of the registry).
const (
	HashNone    HashAlgorithm = 0
	HashSHA256  HashAlgorithm = 1
	HashSHA384  HashAlgorithm = 7
	HashSHA512  HashAlgorithm = 8
	HashSHA3256 HashAlgorithm = 10
	HashSHA3384 HashAlgorithm = 11
	HashSHA3512 HashAlgorithm = 12
)

func (h HashAlgorithm) new() (hash.Hash, error) {
	switch h {
	case HashSHA256:
		return sha256.New(), nil
	case HashSHA384:
		return sha512.New384(), nil
	case HashSHA512:
		return sha512.New(), nil
	case HashSHA3256:
		return sha3.New256(), nil
	case HashSHA3384:
		return sha3.New384(), nil
	case HashSHA3512:
		return sha3.New512(), nil
	}
	return nil, fmt.Errorf("%w: %d", ErrUnsupportedHash, h)
}

// Sum hashes data with h.
func (h HashAlgorithm) Sum(data []byte) ([]byte, error) {
	hh, err := h.new()
	if err != nil {
		return nil, err
	}
	hh.Write(data)
	return hh.Sum(nil), nil
}

// Sealed is the result of SealExternal: the object to upload and the part describing it.
type Sealed struct {
	// Ciphertext is what to store at the part's URL.
	Ciphertext []byte
	// Part has EncAlg, Key, Nonce, AAD, HashAlg, ContentHash and Size set; the caller adds
	// the URL, content type, description, filename and expiry.
	Part ExternalPart
}

// SealExternal encrypts plaintext for an external part with a fresh key and nonce from r
// (crypto/rand.Reader if nil) and hashes the ciphertext: the content hash and size describe
// the object at the URL, which is what a receiver fetches and checks before decrypting.
func SealExternal(r io.Reader, alg AEADAlgorithm, hashAlg HashAlgorithm, plaintext, aad []byte) (*Sealed, error) {
	if r == nil {
		r = rand.Reader
	}
	if alg.KeySize() == 0 {
		return nil, fmt.Errorf("sealing external content: %w: %s", ErrUnsupportedAEAD, alg)
	}
	key := make([]byte, alg.KeySize())
	if _, err := io.ReadFull(r, key); err != nil {
		return nil, fmt.Errorf("sealing external content: drawing a key: %w", err)
	}
	a, err := alg.aead(key)
	if err != nil {
		return nil, fmt.Errorf("sealing external content: %w", err)
	}
	nonce := make([]byte, a.NonceSize())
	if _, err := io.ReadFull(r, nonce); err != nil {
		return nil, fmt.Errorf("sealing external content: drawing a nonce: %w", err)
	}
	ct := a.Seal(nil, nonce, plaintext, aad)
	sum, err := hashAlg.Sum(ct)
	if err != nil {
		return nil, fmt.Errorf("sealing external content: %w", err)
	}
	return &Sealed{
		Ciphertext: ct,
		Part: ExternalPart{
			Size: uint64(len(ct)), EncAlg: alg, Key: key, Nonce: nonce, AAD: nonNil(bytes.Clone(aad)),
			HashAlg: hashAlg, ContentHash: sum,
		},
	}, nil
}

// Verify checks fetched (the object as downloaded from e.URL) against the part's size and
// content hash. A part without a hash (hashAlg 0) passes the hash check; encrypted content
// is still authenticated by its AEAD in Open.
func (e *ExternalPart) Verify(fetched []byte) error {
	if e.Size != 0 && uint64(len(fetched)) != e.Size {
		return fmt.Errorf("verifying external content: %w: got %d bytes, want %d", ErrSizeMismatch, len(fetched), e.Size)
	}
	if e.HashAlg == HashNone {
		if len(e.ContentHash) != 0 {
			return fmt.Errorf("verifying external content: %w: content hash without an algorithm", ErrUnsupportedHash)
		}
		return nil
	}
	sum, err := e.HashAlg.Sum(fetched)
	if err != nil {
		return fmt.Errorf("verifying external content: %w", err)
	}
	if subtle.ConstantTimeCompare(sum, e.ContentHash) != 1 {
		return fmt.Errorf("verifying external content: %w", ErrHashMismatch)
	}
	return nil
}

// Open verifies fetched and returns the plaintext: decrypted with the part's AEAD, or
// fetched itself when the part is not encrypted.
func (e *ExternalPart) Open(fetched []byte) ([]byte, error) {
	if err := e.Verify(fetched); err != nil {
		return nil, err
	}
	if e.EncAlg == AEADNone {
		if len(e.Key) != 0 || len(e.Nonce) != 0 || len(e.AAD) != 0 {
			return nil, fmt.Errorf("opening external content: %w: key, nonce or aad without an algorithm", ErrBadKey)
		}
		return fetched, nil
	}
	a, err := e.EncAlg.aead(e.Key)
	if err != nil {
		return nil, fmt.Errorf("opening external content: %w", err)
	}
	if len(e.Nonce) != a.NonceSize() {
		return nil, fmt.Errorf("opening external content: %w: nonce of %d bytes, want %d", ErrBadKey, len(e.Nonce), a.NonceSize())
	}
	pt, err := a.Open(nil, e.Nonce, fetched, e.AAD)
	if err != nil {
		return nil, fmt.Errorf("opening external content: %w", ErrDecrypt)
	}
	return pt, nil
}

// Expired reports whether the part's expiry lies before now.
func (e *ExternalPart) Expired(now time.Time) bool {
	return e.Expires != 0 && now.Unix() >= int64(e.Expires)
}

// Fetch downloads the part's content with client (http.DefaultClient if nil), reading at
// most maxSize bytes, then verifies and opens it. Only http and https URLs are fetched, as
// the draft requires of clients.
func (e *ExternalPart) Fetch(ctx context.Context, client *http.Client, maxSize int64, now time.Time) ([]byte, error) {
	if e.Expired(now) {
		return nil, fmt.Errorf("fetching external content: %w: at %d", ErrExternalExpired, e.Expires)
	}
	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("fetching external content: %w: %q", ErrUnsupportedURL, e.URL)
	}
	if e.Size > uint64(maxSize) {
		return nil, fmt.Errorf("fetching external content: %w: %d bytes stated, %d allowed", ErrExternalTooLarge, e.Size, maxSize)
	}
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("fetching external content: %w: %v", ErrFetch, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching external content: %w: %v", ErrFetch, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching external content: %w: HTTP status %d", ErrFetch, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("fetching external content: %w: %v", ErrFetch, err)
	}
	if int64(len(body)) > maxSize {
		return nil, fmt.Errorf("fetching external content: %w: more than %d bytes", ErrExternalTooLarge, maxSize)
	}
	return e.Open(body)
}
