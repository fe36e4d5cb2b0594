package canonicaljson

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// Marshal returns the canonical JSON encoding of v.
//
// Common JSON-shaped Go values (nil, bool, strings, integers, json.Number, json.RawMessage, Value, maps with string
// keys and slices of those) are encoded directly. A float64 or float32 is accepted only when it holds an integer in
// range, because encoding/json decodes every number into float64; any other float is ErrFloat. Anything else (structs,
// json.Marshaler implementations) goes through encoding/json first and is then canonicalised.
func Marshal(v any) ([]byte, error) {
	return Append(make([]byte, 0, 256), v)
}

// Append appends the canonical JSON encoding of v to dst, as Marshal does.
func Append(dst []byte, v any) ([]byte, error) {
	return appendAny(dst, v, 0)
}

func appendAny(dst []byte, v any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return dst, fmt.Errorf("%w", ErrTooDeep)
	}
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case bool:
		if x {
			return append(dst, "true"...), nil
		}
		return append(dst, "false"...), nil
	case string:
		if !validString(x) {
			return dst, fmt.Errorf("%w in string %q", ErrInvalidUTF8, x)
		}
		return AppendString(dst, x), nil
	case int:
		return appendInt(dst, int64(x))
	case int8:
		return appendInt(dst, int64(x))
	case int16:
		return appendInt(dst, int64(x))
	case int32:
		return appendInt(dst, int64(x))
	case int64:
		return appendInt(dst, x)
	case uint:
		return appendUint(dst, uint64(x))
	case uint8:
		return appendUint(dst, uint64(x))
	case uint16:
		return appendUint(dst, uint64(x))
	case uint32:
		return appendUint(dst, uint64(x))
	case uint64:
		return appendUint(dst, x)
	case float64:
		return appendFloat(dst, x)
	case float32:
		return appendFloat(dst, float64(x))
	case json.Number:
		return AppendCanonical(dst, []byte(x))
	case json.RawMessage:
		return AppendCanonical(dst, x)
	case Value:
		return x.AppendTo(dst), nil
	case *Value:
		if x == nil {
			return append(dst, "null"...), nil
		}
		return x.AppendTo(dst), nil
	case []any:
		if x == nil {
			return append(dst, "null"...), nil
		}
		dst = append(dst, '[')
		for i, item := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendAny(dst, item, depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	case []string:
		if x == nil {
			return append(dst, "null"...), nil
		}
		dst = append(dst, '[')
		for i, item := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			if !validString(item) {
				return dst, fmt.Errorf("%w in string %q", ErrInvalidUTF8, item)
			}
			dst = AppendString(dst, item)
		}
		return append(dst, ']'), nil
	case map[string]any:
		return appendMap(dst, x, func(dst []byte, v any) ([]byte, error) { return appendAny(dst, v, depth+1) })
	case map[string]string:
		return appendMap(dst, x, func(dst []byte, v string) ([]byte, error) { return appendAny(dst, v, depth+1) })
	case map[string]json.RawMessage:
		return appendMap(dst, x, func(dst []byte, v json.RawMessage) ([]byte, error) { return AppendCanonical(dst, v) })
	case map[string]map[string]string:
		return appendMap(dst, x, func(dst []byte, v map[string]string) ([]byte, error) {
			return appendAny(dst, v, depth+1)
		})
	case map[string]int64:
		return appendMap(dst, x, func(dst []byte, v int64) ([]byte, error) { return appendInt(dst, v) })
	case map[string]int:
		return appendMap(dst, x, func(dst []byte, v int) ([]byte, error) { return appendInt(dst, int64(v)) })
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return dst, fmt.Errorf("failed to encode %T as JSON: %w", v, err)
	}
	return AppendCanonical(dst, raw)
}

func appendMap[V any](dst []byte, m map[string]V, enc func([]byte, V) ([]byte, error)) ([]byte, error) {
	if m == nil {
		return append(dst, "null"...), nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		if !validString(k) {
			return dst, fmt.Errorf("%w in key %q", ErrInvalidUTF8, k)
		}
		keys = append(keys, k)
	}
	// Byte order of UTF-8 strings is code point order.
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, k)
		dst = append(dst, ':')
		var err error
		if dst, err = enc(dst, m[k]); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

func appendInt(dst []byte, n int64) ([]byte, error) {
	if n > MaxSafeInteger || n < -MaxSafeInteger {
		return dst, fmt.Errorf("%w: %d", ErrIntegerRange, n)
	}
	return strconv.AppendInt(dst, n, 10), nil
}

func appendUint(dst []byte, n uint64) ([]byte, error) {
	if n > MaxSafeInteger {
		return dst, fmt.Errorf("%w: %d", ErrIntegerRange, n)
	}
	return strconv.AppendUint(dst, n, 10), nil
}

func appendFloat(dst []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) {
		return dst, fmt.Errorf("%w: %v", ErrFloat, f)
	}
	if f > MaxSafeInteger || f < -MaxSafeInteger {
		return dst, fmt.Errorf("%w: %v", ErrIntegerRange, f)
	}
	return strconv.AppendInt(dst, int64(f), 10), nil
}
