package canonicaljson

import (
	"slices"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// Parse decodes raw as a single JSON value under canonical JSON's restrictions: integers only and within
// ±(2^53−1), valid UTF-8 (including no unpaired surrogate escapes), no duplicate keys. Insignificant whitespace is
// allowed; anything after the value other than whitespace is an error.
func Parse(raw []byte) (Value, error) {
	return parse(raw, false)
}

// ParseLoose is Parse for JSON that need not be canonical-JSON-representable but must still have one signable form:
// an X-Matrix request body, which may carry numbers that canonical JSON has no form for (a Matrix server's float, an
// integer beyond ±(2^53−1)). Such a number becomes a Number value, written as it came; every other number, string,
// key and structure is as Parse gives it (duplicate keys and invalid UTF-8 are still errors).
//
// As written is the form that verifies whenever the sender signed the bytes it sent, which is what every Matrix and
// LM implementation does (Synapse, Dendrite and eigen all serialise a number the same way when they send it and when
// they sign it); canonical JSON itself forbids floats, so there is no canonical form to prefer.
func ParseLoose(raw []byte) (Value, error) {
	return parse(raw, true)
}

func parse(raw []byte, loose bool) (Value, error) {
	p := parserPool.Get().(*parser)
	defer p.release()
	p.data, p.pos, p.loose = raw, 0, loose
	p.skipSpace()
	var v Value
	if err := p.value(&v, 0); err != nil {
		return Value{}, err
	}
	p.skipSpace()
	if p.pos != len(p.data) {
		return Value{}, p.fail(ErrInvalidJSON, "unexpected data after the top-level value")
	}
	return v, nil
}

// parserPool keeps parsers with their scratch stacks, so that parsing an event allocates only its result.
var parserPool = sync.Pool{New: func() any { return &parser{} }}

func (p *parser) release() {
	if cap(p.members) > 1024 || cap(p.items) > 1024 {
		return // don't keep what a hostile input made large
	}
	clear(p.members[:cap(p.members)])
	clear(p.items[:cap(p.items)])
	p.members, p.items, p.data = p.members[:0], p.items[:0], nil
	parserPool.Put(p)
}

// Canonicalize re-encodes raw JSON in canonical form. It rejects what Parse rejects.
func Canonicalize(raw []byte) ([]byte, error) {
	v, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	return v.Bytes(), nil
}

// CanonicalizeLoose re-encodes raw JSON in canonical form, with the numbers canonical JSON cannot represent written
// as they came (see ParseLoose). It is the form X-Matrix signs and verifies request bodies in.
func CanonicalizeLoose(raw []byte) ([]byte, error) {
	v, err := ParseLoose(raw)
	if err != nil {
		return nil, err
	}
	return v.Bytes(), nil
}

// AppendCanonical appends the canonical form of raw to dst.
func AppendCanonical(dst, raw []byte) ([]byte, error) {
	v, err := Parse(raw)
	if err != nil {
		return dst, err
	}
	return v.AppendTo(dst), nil
}

type parser struct {
	data []byte
	pos  int
	// loose keeps numbers outside canonical JSON as Number values instead of failing (ParseLoose).
	loose bool
	// Scratch stacks for the members and items of the containers being parsed.
	members []Member
	items   []Value
}

func (p *parser) fail(err error, detail string) error {
	return &SyntaxError{Offset: p.pos, Err: err, Detail: detail}
}

func (p *parser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) value(v *Value, depth int) error {
	if depth > maxDepth {
		return p.fail(ErrTooDeep, "")
	}
	if p.pos >= len(p.data) {
		return p.fail(ErrInvalidJSON, "unexpected end of input")
	}
	switch c := p.data[p.pos]; c {
	case '{':
		return p.object(v, depth)
	case '[':
		return p.array(v, depth)
	case '"':
		s, err := p.string()
		if err != nil {
			return err
		}
		v.Kind, v.Str = String, s
		return nil
	case 't':
		return p.literal(v, "true", Bool, true)
	case 'f':
		return p.literal(v, "false", Bool, false)
	case 'n':
		return p.literal(v, "null", Null, false)
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			return p.number(v)
		}
		return p.fail(ErrInvalidJSON, "unexpected character "+quoteByte(c))
	}
}

func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return "'" + string(rune(c)) + "'"
	}
	return "0x" + string(hexDigits[c>>4]) + string(hexDigits[c&0xf])
}

func (p *parser) literal(v *Value, lit string, kind Kind, b bool) error {
	if len(p.data)-p.pos < len(lit) || string(p.data[p.pos:p.pos+len(lit)]) != lit {
		return p.fail(ErrInvalidJSON, "invalid literal")
	}
	p.pos += len(lit)
	v.Kind, v.Bool = kind, b
	return nil
}

func (p *parser) number(v *Value) error {
	start := p.pos
	neg := false
	if p.data[p.pos] == '-' {
		neg = true
		p.pos++
	}
	if p.pos >= len(p.data) || p.data[p.pos] < '0' || p.data[p.pos] > '9' {
		return p.fail(ErrInvalidJSON, "invalid number")
	}
	var n int64
	tooBig := false
	if p.data[p.pos] == '0' {
		p.pos++
	} else {
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			if !tooBig {
				n = n*10 + int64(p.data[p.pos]-'0')
				if n > MaxSafeInteger {
					tooBig = true
				}
			}
			p.pos++
		}
	}
	if p.pos < len(p.data) {
		switch p.data[p.pos] {
		case '.', 'e', 'E':
			p.pos = start
			return p.decimal(v)
		case '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			return p.fail(ErrInvalidJSON, "leading zero in a number")
		}
	}
	if tooBig {
		if p.loose {
			v.Kind, v.Str = Number, string(p.data[start:p.pos])
			return nil
		}
		p.pos = start
		return p.fail(ErrIntegerRange, "")
	}
	if neg {
		n = -n
	}
	v.Kind, v.Int = Integer, n
	return nil
}

// decimal handles a number with a fraction or an exponent. The Matrix specification's own canonical JSON example
// turns 1e10 into 10000000000 and -0 into 0, so a number whose value is a whole number in range is accepted and
// written as an integer (RFC 8785 writes the same bytes); any other value is ErrFloat.
func (p *parser) decimal(v *Value) error {
	start := p.pos
	neg := false
	if p.data[p.pos] == '-' {
		neg = true
		p.pos++
	}
	// Significant digits of integer and fraction part, and how many of them are after the point.
	var digits []byte
	fracDigits := 0
	for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
		digits = append(digits, p.data[p.pos])
		p.pos++
	}
	if p.pos < len(p.data) && p.data[p.pos] == '.' {
		p.pos++
		n := 0
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			digits = append(digits, p.data[p.pos])
			p.pos++
			n++
		}
		if n == 0 {
			return p.fail(ErrInvalidJSON, "no digits after the decimal point")
		}
		fracDigits = n
	}
	exp := 0
	if p.pos < len(p.data) && (p.data[p.pos] == 'e' || p.data[p.pos] == 'E') {
		p.pos++
		expNeg := false
		if p.pos < len(p.data) && (p.data[p.pos] == '+' || p.data[p.pos] == '-') {
			expNeg = p.data[p.pos] == '-'
			p.pos++
		}
		n := 0
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			if exp < 1_000_000 {
				exp = exp*10 + int(p.data[p.pos]-'0')
			}
			p.pos++
			n++
		}
		if n == 0 {
			return p.fail(ErrInvalidJSON, "no digits in the exponent")
		}
		if expNeg {
			exp = -exp
		}
	}
	end := p.pos
	exp -= fracDigits
	// Normalise: drop leading zeros, and trailing zeros into the exponent.
	for len(digits) > 0 && digits[0] == '0' {
		digits = digits[1:]
	}
	for len(digits) > 0 && digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
		exp++
	}
	p.pos = start
	if len(digits) == 0 {
		p.pos = end
		v.Kind, v.Int = Integer, 0
		return nil
	}
	if exp < 0 {
		return p.asWritten(v, end, ErrFloat)
	}
	if len(digits)+exp > 16 {
		return p.asWritten(v, end, ErrIntegerRange)
	}
	var n int64
	for _, d := range digits {
		n = n*10 + int64(d-'0')
	}
	for i := 0; i < exp; i++ {
		n *= 10
	}
	if n > MaxSafeInteger {
		return p.asWritten(v, end, ErrIntegerRange)
	}
	if neg {
		n = -n
	}
	p.pos = end
	v.Kind, v.Int = Integer, n
	return nil
}

// asWritten makes the number from p.pos to end a Number value in loose mode, and fails with err otherwise.
func (p *parser) asWritten(v *Value, end int, err error) error {
	if !p.loose {
		return p.fail(err, "")
	}
	v.Kind, v.Str = Number, string(p.data[p.pos:end])
	p.pos = end
	return nil
}

func (p *parser) array(v *Value, depth int) error {
	p.pos++ // '['
	v.Kind = Array
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		v.Items = []Value{}
		return nil
	}
	// Items collect on a scratch stack shared by the whole parse and are copied out once, exactly sized.
	// On an error the whole parse fails and release resets the stacks, so only the success path pops.
	base := len(p.items)
	for {
		p.skipSpace()
		var item Value
		if err := p.value(&item, depth+1); err != nil {
			return err
		}
		p.items = append(p.items, item)
		p.skipSpace()
		if p.pos >= len(p.data) {
			return p.fail(ErrInvalidJSON, "unterminated array")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			v.Items = append(make([]Value, 0, len(p.items)-base), p.items[base:]...)
			p.items = p.items[:base]
			return nil
		default:
			return p.fail(ErrInvalidJSON, "expected ',' or ']' in an array")
		}
	}
}

func (p *parser) object(v *Value, depth int) error {
	p.pos++ // '{'
	v.Kind = Object
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		v.Members = []Member{}
		return nil
	}
	start := p.pos
	base := len(p.members)
	sorted := true
	for {
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return p.fail(ErrInvalidJSON, "expected a string key in an object")
		}
		key, err := p.string()
		if err != nil {
			return err
		}
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return p.fail(ErrInvalidJSON, "expected ':' after an object key")
		}
		p.pos++
		p.skipSpace()
		if n := len(p.members); n > base && p.members[n-1].Key >= key {
			sorted = false
		}
		var val Value
		if err := p.value(&val, depth+1); err != nil {
			return err
		}
		p.members = append(p.members, Member{Key: key, Value: val})
		p.skipSpace()
		if p.pos >= len(p.data) {
			return p.fail(ErrInvalidJSON, "unterminated object")
		}
		if p.data[p.pos] == ',' {
			p.pos++
			continue
		}
		if p.data[p.pos] != '}' {
			return p.fail(ErrInvalidJSON, "expected ',' or '}' in an object")
		}
		p.pos++
		break
	}
	members := append(make([]Member, 0, len(p.members)-base), p.members[base:]...)
	p.members = p.members[:base]
	if !sorted {
		// Go compares strings byte-wise, and UTF-8 byte order is code point order: exactly Matrix's key order.
		slices.SortStableFunc(members, func(a, b Member) int { return strings.Compare(a.Key, b.Key) })
		for i := 1; i < len(members); i++ {
			if members[i-1].Key == members[i].Key {
				p.pos = start
				return p.fail(ErrDuplicateKey, "key "+quoteKey(members[i].Key))
			}
		}
	}
	v.Members = members
	return nil
}

func quoteKey(k string) string {
	if len(k) > 64 {
		k = k[:64] + "…"
	}
	return string(AppendString(nil, strings.ToValidUTF8(k, "\uFFFD")))
}

// string parses a JSON string starting at the opening quote.
func (p *parser) string() (string, error) {
	p.pos++ // opening quote
	start := p.pos
	// Fast path: no escapes; validate UTF-8 in place and copy once.
	ascii := true
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		if c == '"' {
			raw := p.data[start:p.pos]
			if !ascii && !utf8.Valid(raw) {
				return "", p.fail(ErrInvalidUTF8, "")
			}
			p.pos++
			if s, ok := commonString(raw); ok {
				return s, nil
			}
			return string(raw), nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", p.fail(ErrInvalidJSON, "unescaped control character in a string")
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
		p.pos++
	}
	if p.pos >= len(p.data) {
		return "", p.fail(ErrInvalidJSON, "unterminated string")
	}
	if !ascii && !utf8.Valid(p.data[start:p.pos]) {
		return "", p.fail(ErrInvalidUTF8, "")
	}
	buf := make([]byte, 0, p.pos-start+16)
	buf = append(buf, p.data[start:p.pos]...)
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			return string(buf), nil
		case c < 0x20:
			return "", p.fail(ErrInvalidJSON, "unescaped control character in a string")
		case c == '\\':
			var err error
			if buf, err = p.escape(buf); err != nil {
				return "", err
			}
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			p.pos++
		default:
			r, size := utf8.DecodeRune(p.data[p.pos:])
			if r == utf8.RuneError && size <= 1 {
				return "", p.fail(ErrInvalidUTF8, "")
			}
			buf = append(buf, p.data[p.pos:p.pos+size]...)
			p.pos += size
		}
	}
	return "", p.fail(ErrInvalidJSON, "unterminated string")
}

func (p *parser) escape(buf []byte) ([]byte, error) {
	if p.pos+1 >= len(p.data) {
		return buf, p.fail(ErrInvalidJSON, "unterminated escape")
	}
	c := p.data[p.pos+1]
	p.pos += 2
	switch c {
	case '"', '\\', '/':
		return append(buf, c), nil
	case 'b':
		return append(buf, '\b'), nil
	case 'f':
		return append(buf, '\f'), nil
	case 'n':
		return append(buf, '\n'), nil
	case 'r':
		return append(buf, '\r'), nil
	case 't':
		return append(buf, '\t'), nil
	case 'u':
		r, ok := p.hex4()
		if !ok {
			return buf, p.fail(ErrInvalidJSON, "invalid \\u escape")
		}
		if utf16.IsSurrogate(r) {
			if r >= 0xDC00 || p.pos+1 >= len(p.data) || p.data[p.pos] != '\\' || p.data[p.pos+1] != 'u' {
				return buf, p.fail(ErrInvalidUTF8, "unpaired surrogate escape")
			}
			p.pos += 2
			r2, ok := p.hex4()
			if !ok {
				return buf, p.fail(ErrInvalidJSON, "invalid \\u escape")
			}
			r = utf16.DecodeRune(r, r2)
			if r == utf8.RuneError {
				return buf, p.fail(ErrInvalidUTF8, "unpaired surrogate escape")
			}
		}
		return utf8.AppendRune(buf, r), nil
	default:
		p.pos -= 2
		return buf, p.fail(ErrInvalidJSON, "invalid escape character")
	}
}

func (p *parser) hex4() (rune, bool) {
	if len(p.data)-p.pos < 4 {
		return 0, false
	}
	var r rune
	for i := 0; i < 4; i++ {
		c := p.data[p.pos+i]
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	p.pos += 4
	return r, true
}

// commonString returns a constant for the keys and values every Matrix event repeats, so that parsing an event does
// not allocate them again each time. The switch on string(raw) does not allocate.
func commonString(raw []byte) (string, bool) {
	switch string(raw) {
	case "room_id":
		return "room_id", true
	case "type":
		return "type", true
	case "state_key":
		return "state_key", true
	case "sender":
		return "sender", true
	case "origin_server_ts":
		return "origin_server_ts", true
	case "content":
		return "content", true
	case "hub_server":
		return "hub_server", true
	case "hashes":
		return "hashes", true
	case "sha256":
		return "sha256", true
	case "lpdu":
		return "lpdu", true
	case "signatures":
		return "signatures", true
	case "auth_events":
		return "auth_events", true
	case "prev_events":
		return "prev_events", true
	case "unsigned":
		return "unsigned", true
	case "event_id":
		return "event_id", true
	case "ed25519:1":
		return "ed25519:1", true
	case "membership":
		return "membership", true
	case "join":
		return "join", true
	case "msgtype":
		return "msgtype", true
	case "m.text":
		return "m.text", true
	case "body":
		return "body", true
	case "m.room.message":
		return "m.room.message", true
	case "m.room.member":
		return "m.room.member", true
	case "":
		return "", true
	}
	return "", false
}
