package federation

import (
	"bytes"
	"encoding/json"
)

// splitTransaction reads a /send body that json.Valid has already accepted, slicing each PDU and EDU out of the body
// instead of decoding it again with encoding/json (whose Unmarshal scans the whole body once more to validate it
// before decoding it). It handles only the plain shape every sender uses: a top-level object whose keys carry no
// escapes, at most one pdus and one edus key, each an array. Anything else (a key spelled in another case, which
// encoding/json matches too, a repeated key, null, another type) reports false, and the caller decodes with
// encoding/json, so the result and the errors are exactly what they were.
func splitTransaction(body []byte, txn *Transaction) bool {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return false
	}
	var seenPDUs, seenEDUs bool
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return true
	}
	for {
		if i >= len(body) || body[i] != '"' {
			return false
		}
		end := bytes.IndexByte(body[i+1:], '"')
		if end < 0 {
			return false
		}
		key := body[i+1 : i+1+end]
		if bytes.IndexByte(key, '\\') >= 0 {
			return false
		}
		i = skipSpace(body, i+2+end)
		if i >= len(body) || body[i] != ':' {
			return false
		}
		i = skipSpace(body, i+1)
		var into *[]json.RawMessage
		switch {
		case string(key) == "pdus":
			if seenPDUs {
				return false
			}
			seenPDUs, into = true, &txn.PDUs
		case string(key) == "edus":
			if seenEDUs {
				return false
			}
			seenEDUs, into = true, &txn.EDUs
		case bytes.EqualFold(key, []byte("pdus")) || bytes.EqualFold(key, []byte("edus")):
			return false
		}
		if into != nil {
			if i >= len(body) || body[i] != '[' {
				return false
			}
			next, ok := splitArray(body, i, into)
			if !ok {
				return false
			}
			i = next
		} else {
			next, ok := skipValue(body, i)
			if !ok {
				return false
			}
			i = next
		}
		i = skipSpace(body, i)
		if i >= len(body) {
			return false
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case '}':
			return true
		default:
			return false
		}
	}
}

// splitArray appends the raw elements of the array starting at body[i] and returns the index after it.
func splitArray(body []byte, i int, into *[]json.RawMessage) (int, bool) {
	elems := make([]json.RawMessage, 0, 8)
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == ']' {
		*into = elems
		return i + 1, true
	}
	for {
		end, ok := skipValue(body, i)
		if !ok {
			return 0, false
		}
		elems = append(elems, json.RawMessage(body[i:end:end]))
		i = skipSpace(body, end)
		if i >= len(body) {
			return 0, false
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case ']':
			*into = elems
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// skipValue returns the index just after the JSON value starting at body[i]. The body is valid JSON, so it only
// tracks strings and nesting.
func skipValue(body []byte, i int) (int, bool) {
	if i >= len(body) {
		return 0, false
	}
	depth := 0
	for ; i < len(body); i++ {
		switch c := body[i]; c {
		case '"':
			i++
			for ; i < len(body) && body[i] != '"'; i++ {
				if body[i] == '\\' {
					i++
				}
			}
			if i >= len(body) {
				return 0, false
			}
			if depth == 0 {
				return i + 1, true
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				// The end of the enclosing object or array ends a number or literal.
				return i, true
			}
			depth--
			if depth == 0 {
				return i + 1, true
			}
		case ',', ' ', '\t', '\n', '\r', ':':
			if depth == 0 {
				return i, c != ':'
			}
		}
	}
	if depth == 0 {
		return i, true
	}
	return 0, false
}

func skipSpace(body []byte, i int) int {
	for i < len(body) && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r') {
		i++
	}
	return i
}
