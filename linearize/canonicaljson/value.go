package canonicaljson

import (
	"strconv"
	"strings"
)

// Kind is the JSON type of a Value.
type Kind uint8

// The JSON types. There is no float: canonical JSON has none.
const (
	Null Kind = iota
	Bool
	Integer
	String
	Array
	Object
	// Number is a number canonical JSON cannot represent, kept as written in Str; only ParseLoose gives it.
	Number
)

func (k Kind) String() string {
	switch k {
	case Null:
		return "null"
	case Bool:
		return "boolean"
	case Integer:
		return "integer"
	case String:
		return "string"
	case Array:
		return "array"
	case Object:
		return "object"
	case Number:
		return "number"
	default:
		return "kind(" + strconv.Itoa(int(k)) + ")"
	}
}

// Value is a parsed canonical-JSON value. Object members are kept sorted by key (code point order), so encoding a
// Value never sorts again and Get is a binary search.
type Value struct {
	Kind    Kind
	Bool    bool
	Int     int64
	Str     string
	Items   []Value
	Members []Member
}

// Member is one key/value pair of an object.
type Member struct {
	Key   string
	Value Value
}

// Get returns the member of an object with the given key.
func (v *Value) Get(key string) (*Value, bool) {
	if v.Kind != Object {
		return nil, false
	}
	lo, hi := 0, len(v.Members)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if v.Members[mid].Key < key {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(v.Members) && v.Members[lo].Key == key {
		return &v.Members[lo].Value, true
	}
	return nil, false
}

// AppendTo appends the canonical encoding of v to dst.
func (v *Value) AppendTo(dst []byte) []byte {
	switch v.Kind {
	case Null:
		return append(dst, "null"...)
	case Bool:
		if v.Bool {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case Integer:
		return strconv.AppendInt(dst, v.Int, 10)
	case String:
		return AppendString(dst, v.Str)
	case Number:
		return append(dst, v.Str...)
	case Array:
		dst = append(dst, '[')
		for i := range v.Items {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = v.Items[i].AppendTo(dst)
		}
		return append(dst, ']')
	case Object:
		dst = append(dst, '{')
		for i := range v.Members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendString(dst, v.Members[i].Key)
			dst = append(dst, ':')
			dst = v.Members[i].Value.AppendTo(dst)
		}
		return append(dst, '}')
	}
	return dst
}

// Bytes returns the canonical encoding of v.
func (v *Value) Bytes() []byte {
	return v.AppendTo(make([]byte, 0, v.EncodedLen()))
}

// EncodedLen is the length in bytes of v's canonical encoding.
func (v *Value) EncodedLen() int {
	switch v.Kind {
	case Null:
		return 4
	case Bool:
		if v.Bool {
			return 4
		}
		return 5
	case Integer:
		var buf [24]byte
		return len(strconv.AppendInt(buf[:0], v.Int, 10))
	case String:
		return StringLen(v.Str)
	case Number:
		return len(v.Str)
	case Array:
		n := 2
		if len(v.Items) > 1 {
			n += len(v.Items) - 1
		}
		for i := range v.Items {
			n += v.Items[i].EncodedLen()
		}
		return n
	case Object:
		n := 2
		if len(v.Members) > 1 {
			n += len(v.Members) - 1
		}
		for i := range v.Members {
			n += StringLen(v.Members[i].Key) + 1 + v.Members[i].Value.EncodedLen()
		}
		return n
	}
	return 0
}

// String returns the canonical encoding of v as a string.
func (v *Value) String() string {
	var b strings.Builder
	b.Write(v.AppendTo(nil))
	return b.String()
}
