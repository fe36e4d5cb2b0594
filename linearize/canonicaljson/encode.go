package canonicaljson

import (
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// needsEscape marks the bytes that canonical JSON escapes: control characters, '"' and '\\'. Everything else,
// including U+2028, U+2029 and '<', '>', '&', is written as UTF-8.
var needsEscape = func() (t [256]bool) {
	for i := 0; i < 0x20; i++ {
		t[i] = true
	}
	t['"'] = true
	t['\\'] = true
	return t
}()

// AppendString appends s as a canonical JSON string. s must be valid UTF-8; callers that cannot guarantee it check
// with utf8.ValidString first (Marshal does).
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !needsEscape[c] {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// StringLen is the length of AppendString's output for s.
func StringLen(s string) int {
	n := len(s) + 2
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !needsEscape[c] {
			continue
		}
		switch c {
		case '"', '\\', '\b', '\f', '\n', '\r', '\t':
			n++
		default:
			n += 5
		}
	}
	return n
}

// validString reports whether s can be encoded: canonical JSON is UTF-8 only.
func validString(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return utf8.ValidString(s[i:])
		}
	}
	return true
}
