// Package canonicaljson encodes JSON in Matrix canonical form: object keys sorted by Unicode code point, no
// insignificant whitespace, the shortest escape for every string (only '"', '\\' and control characters are escaped;
// U+2028/U+2029 and '<', '>', '&' are written as they are), integers only, within ±(2^53−1), valid UTF-8 and no
// duplicate keys. A number written with a fraction or exponent is accepted only if its value is a whole number (the
// specification's own example turns 1e10 into 10000000000); 1.5 is ErrFloat.
//
// For every input Linearized Matrix allows (integers only, no floats) the output is byte-identical to RFC 8785 (JCS),
// which the LM draft names, except for keys that mix characters outside the Basic Multilingual Plane with characters
// in U+E000–U+FFFF: JCS sorts those by UTF-16 code unit, Matrix by code point, and we follow Matrix because every
// deployed Matrix and LM implementation hashes with the Matrix order.
//
// The encoder is our own rather than encoding/json's because encoding/json always escapes U+2028/U+2029, sorts only
// map keys, and accepts floats; it is also on the hub's hot path, where a single pass matters.
package canonicaljson

import "errors"

// MaxSafeInteger is the largest integer canonical JSON allows (2^53−1); its negation is the smallest.
const MaxSafeInteger = 1<<53 - 1

// maxDepth bounds nesting so that hostile input cannot exhaust the stack. An LM event is at most 65,536 bytes, and no
// legitimate event nests anywhere near this deep.
const maxDepth = 512

// Errors returned for input that is not canonical-JSON-representable. They are wrapped in a *SyntaxError that says
// where in the input the problem is.
var (
	ErrInvalidJSON  = errors.New("invalid JSON")
	ErrFloat        = errors.New("floating-point numbers are not allowed")
	ErrIntegerRange = errors.New("integer out of the range ±(2^53-1)")
	ErrDuplicateKey = errors.New("duplicate object key")
	ErrInvalidUTF8  = errors.New("invalid UTF-8")
	ErrTooDeep      = errors.New("JSON nested too deeply")
)
