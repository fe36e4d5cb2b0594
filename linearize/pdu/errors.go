package pdu

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
)

// MaxEventBytes is the draft's size limit: the whole event as canonical JSON, signatures included (§3.5).
const MaxEventBytes = 65536

// maxIdentifierBytes bounds type, state_key, room_id, sender and event IDs (§3.5, §3.2, Matrix's 255-byte limits).
const maxIdentifierBytes = 255

// Sentinel errors. Parse errors are *FormatError values that unwrap to ErrInvalidEvent or ErrEventTooLarge.
var (
	// ErrInvalidEvent: the event does not match the LM schema (federation answer: M_BAD_JSON; the event is dropped).
	ErrInvalidEvent = errors.New("invalid event")
	// ErrEventTooLarge: more than MaxEventBytes of canonical JSON (M_TOO_LARGE).
	ErrEventTooLarge = errors.New("event too large")
	// ErrBadSignature: a signature that counts is missing or does not verify; §5.1 says drop the event.
	ErrBadSignature = errors.New("bad signature")
	// ErrContentHashMismatch: hashes.sha256 or hashes.lpdu does not match; §5.1 says keep the redacted copy.
	ErrContentHashMismatch = errors.New("content hash mismatch")
	// ErrNotLPDU: an LPDU-only operation was given something that is not an LPDU.
	ErrNotLPDU = errors.New("event is not an LPDU")
	// ErrWrongHub: the LPDU names a different hub_server from the one completing it.
	ErrWrongHub = errors.New("event names a different hub")
)

// FormatError says which field of an event was wrong and how.
type FormatError struct {
	Field  string
	Reason string
	Err    error // ErrInvalidEvent or ErrEventTooLarge
	Cause  error // the underlying error, e.g. from canonicaljson, or nil
}

func (e *FormatError) Error() string {
	msg := e.Err.Error()
	if e.Field != "" {
		msg += ": " + e.Field
	}
	if e.Reason != "" {
		msg += " " + e.Reason
	}
	if e.Cause != nil {
		msg += ": " + e.Cause.Error()
	}
	return msg
}

// Unwrap lets errors.Is match both the sentinel and the cause.
func (e *FormatError) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Err, e.Cause}
	}
	return []error{e.Err}
}

func formatErr(field, reason string) error {
	return &FormatError{Field: field, Reason: reason, Err: ErrInvalidEvent}
}

// KeyLookup finds a server's public key by key ID. The federation layer implements it (key cache, /key/v2/server,
// notaries); tests implement it with a map. It returns an error if the key is unknown or cannot be fetched.
type KeyLookup interface {
	VerifyKey(ctx context.Context, serverName, keyID string) (ed25519.PublicKey, error)
}

// StaticKeys is a KeyLookup over a fixed set of keys: server name → key ID → public key.
type StaticKeys map[string]map[string]ed25519.PublicKey

// VerifyKey implements KeyLookup.
func (s StaticKeys) VerifyKey(_ context.Context, serverName, keyID string) (ed25519.PublicKey, error) {
	if key, ok := s[serverName][keyID]; ok {
		return key, nil
	}
	return nil, fmt.Errorf("no key %s for %s", keyID, serverName)
}
