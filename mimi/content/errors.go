package content

import (
	"errors"
	"fmt"
)

// ErrInvalid is the root of every decoding and validation error of this package, so that a
// caller can tell "the peer sent garbage" from any other failure with one errors.Is.
var ErrInvalid = errors.New("invalid MIMI content")

// Each sentinel below wraps ErrInvalid; errors returned by decoders wrap one of them with
// the path of the offending field (e.g. "body.parts[1].cardinality").
var (
	ErrMalformed          = fmt.Errorf("%w: malformed CBOR", ErrInvalid)
	ErrTrailingData       = fmt.Errorf("%w: data after the CBOR item", ErrInvalid)
	ErrNotDeterministic   = fmt.Errorf("%w: not in deterministic CBOR encoding", ErrInvalid)
	ErrInvalidUTF8        = fmt.Errorf("%w: text string is not valid UTF-8", ErrInvalid)
	ErrDuplicateKey       = fmt.Errorf("%w: duplicate map key", ErrInvalid)
	ErrBadMapKey          = fmt.Errorf("%w: map key not allowed", ErrInvalid)
	ErrWrongType          = fmt.Errorf("%w: wrong CBOR type", ErrInvalid)
	ErrArrayLength        = fmt.Errorf("%w: wrong number of array elements", ErrInvalid)
	ErrOutOfRange         = fmt.Errorf("%w: value out of range", ErrInvalid)
	ErrBadSalt            = fmt.Errorf("%w: salt must be 16 bytes", ErrInvalid)
	ErrBadMessageID       = fmt.Errorf("%w: message ID must be 32 bytes", ErrInvalid)
	ErrUnknownCardinality = fmt.Errorf("%w: unknown cardinality", ErrInvalid)
	ErrUnknownSemantics   = fmt.Errorf("%w: unknown part semantics", ErrInvalid)
	ErrTooFewParts        = fmt.Errorf("%w: multipart needs at least two parts", ErrInvalid)
	ErrTooManyParts       = fmt.Errorf("%w: too many body parts", ErrInvalid)
	ErrTooDeep            = fmt.Errorf("%w: nested too deeply", ErrInvalid)
	ErrBadLanguage        = fmt.Errorf("%w: malformed language tag list", ErrInvalid)
	ErrBadExtensionKey    = fmt.Errorf("%w: extension key not allowed", ErrInvalid)
	ErrBadExtensionValue  = fmt.Errorf("%w: extension value has the wrong type", ErrInvalid)
	ErrMissingPart        = fmt.Errorf("%w: nested part has no part", ErrInvalid)
	ErrUnknownIDScheme    = fmt.Errorf("%w: unknown message ID scheme", ErrInvalid)
	ErrURITooLong         = fmt.Errorf("%w: URI longer than 65535 bytes", ErrInvalid)
	ErrUnknownHashInID    = fmt.Errorf("%w: message ID names an unknown hash algorithm", ErrInvalid)
	ErrUnsupportedAEAD    = fmt.Errorf("%w: unsupported AEAD algorithm", ErrInvalid)
	ErrUnsupportedHash    = fmt.Errorf("%w: unsupported hash algorithm", ErrInvalid)
	ErrBadKey             = fmt.Errorf("%w: AEAD key or nonce has the wrong length", ErrInvalid)
	ErrNotEncrypted       = fmt.Errorf("%w: external part is not encrypted", ErrInvalid)
	ErrHashMismatch       = fmt.Errorf("%w: fetched content does not match the content hash", ErrInvalid)
	ErrSizeMismatch       = fmt.Errorf("%w: fetched content does not have the stated size", ErrInvalid)
	ErrDecrypt            = fmt.Errorf("%w: external content does not decrypt", ErrInvalid)
	ErrExternalExpired    = fmt.Errorf("%w: external content has expired", ErrInvalid)
	ErrExternalTooLarge   = fmt.Errorf("%w: external content larger than allowed", ErrInvalid)
	ErrNoContentHash      = fmt.Errorf("%w: external part has no content hash", ErrInvalid)
	ErrFetch              = errors.New("fetching external content failed")
	ErrUnsupportedURL     = fmt.Errorf("%w: external content URL scheme must be http or https", ErrInvalid)
)

// fieldErr prefixes err with the field it concerns, keeping the sentinel reachable.
func fieldErr(field string, err error) error {
	return fmt.Errorf("%s: %w", field, err)
}
