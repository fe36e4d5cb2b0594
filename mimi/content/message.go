package content

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// MediaType is the media type of an encoded Message (draft §"IANA Considerations").
const MediaType = "application/mimi-content"

// Media types every MIMI client must accept.
const (
	TypePlainText = "text/plain;charset=utf-8"
	TypeMarkdown  = "text/markdown;variant=GFM-MIMI"
)

// MaxTopicIDLen is the topicId length above which the draft's security considerations call
// a message malicious.
const MaxTopicIDLen = 4096

// MaxExtensionDepth is the nesting limit of -08 §6.3 counted from the extensions map, which
// is level 1; a value may therefore hold three more levels of arrays, maps or tags.
const MaxExtensionDepth = 4

// Extension keys registered by the draft (HEAD, heading to -08) and used by all examples.
const (
	ExtSenderURI int64 = 1
	ExtRoomURI   int64 = 2
)

// Salt is the per-message random salt.
type Salt [16]byte

// NewSalt draws a salt from r (crypto/rand.Reader if r is nil).
func NewSalt(r io.Reader) (Salt, error) {
	if r == nil {
		r = rand.Reader
	}
	var s Salt
	if _, err := io.ReadFull(r, s[:]); err != nil {
		return Salt{}, fmt.Errorf("drawing a MIMI content salt: %w", err)
	}
	return s, nil
}

// MessageID identifies a MIMI message: a hash algorithm octet and 31 octets of hash.
type MessageID [32]byte

func (id MessageID) String() string { return hex.EncodeToString(id[:]) }

// MessageIDFromBytes checks that b is 32 bytes long and copies it.
func MessageIDFromBytes(b []byte) (MessageID, error) {
	var id MessageID
	if len(b) != len(id) {
		return id, fmt.Errorf("%w: got %d bytes", ErrBadMessageID, len(b))
	}
	copy(id[:], b)
	return id, nil
}

// Expiration is the sender's hint when the message should be deleted.
type Expiration struct {
	// Relative means Time is seconds after the receiver read the message; otherwise it is
	// seconds since the UNIX epoch.
	Relative bool
	Time     uint32
}

// ExtensionKey is a key of the extensions map: an integer or a text string of 1 to 255 bytes.
type ExtensionKey struct {
	isText bool
	num    int64
	text   string
}

// IntKey is an integer extension key (positive keys are IANA-registered, negative private).
func IntKey(n int64) ExtensionKey { return ExtensionKey{num: n} }

// TextKey is a text extension key (private use).
func TextKey(s string) ExtensionKey { return ExtensionKey{isText: true, text: s} }

// IsText reports whether the key is a text string.
func (k ExtensionKey) IsText() bool { return k.isText }

// Int returns the integer of an integer key.
func (k ExtensionKey) Int() int64 { return k.num }

// Text returns the text of a text key.
func (k ExtensionKey) Text() string { return k.text }

func (k ExtensionKey) String() string {
	if k.isText {
		return fmt.Sprintf("%q", k.text)
	}
	return fmt.Sprintf("%d", k.num)
}

func (k ExtensionKey) validate() error {
	if k.isText {
		if len(k.text) < 1 || len(k.text) > 255 {
			return fmt.Errorf("%w: text key of %d bytes, want 1 to 255", ErrBadExtensionKey, len(k.text))
		}
		if !utf8.ValidString(k.text) {
			return fmt.Errorf("%w: text key is not valid UTF-8", ErrBadExtensionKey)
		}
		return nil
	}
	if k.num > maxSafeInt || k.num < -maxSafeInt {
		return fmt.Errorf("%w: integer key %d beyond ±(2^53-1)", ErrBadExtensionKey, k.num)
	}
	return nil
}

func (k ExtensionKey) encode() ([]byte, error) {
	if k.isText {
		return marshal(k.text)
	}
	return marshal(k.num)
}

// Extension is one entry of the extensions map; Value is one CBOR data item in
// deterministic encoding.
type Extension struct {
	Key   ExtensionKey
	Value cbor.RawMessage
}

// Message is a MIMI content message (the mimiContent array).
type Message struct {
	Salt      Salt
	Replaces  *MessageID
	TopicID   []byte
	Expires   *Expiration
	InReplyTo *MessageID
	// Extensions in deterministic key order after Decode; Encode sorts them.
	Extensions []Extension
	Body       NestedPart
}

// Extension returns the value of the extension with key k.
func (m *Message) Extension(k ExtensionKey) (cbor.RawMessage, bool) {
	for _, e := range m.Extensions {
		if e.Key == k {
			return e.Value, true
		}
	}
	return nil, false
}

// SetExtension sets extension k to the CBOR encoding of v (replacing any earlier value).
func (m *Message) SetExtension(k ExtensionKey, v any) error {
	if err := k.validate(); err != nil {
		return err
	}
	raw, ok := v.(cbor.RawMessage)
	if !ok {
		var err error
		if raw, err = marshal(v); err != nil {
			return fmt.Errorf("setting MIMI extension %s: %w", k, err)
		}
	}
	for i := range m.Extensions {
		if m.Extensions[i].Key == k {
			m.Extensions[i].Value = raw
			return nil
		}
	}
	m.Extensions = append(m.Extensions, Extension{Key: k, Value: raw})
	return nil
}

// textExtension returns an extension that must be a text string.
func (m *Message) textExtension(k int64) (string, bool) {
	raw, ok := m.Extension(IntKey(k))
	if !ok || major(raw) != majorText {
		return "", false
	}
	var s string
	if decMode.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// SenderURI returns the senderUri extension (key 1).
func (m *Message) SenderURI() (string, bool) { return m.textExtension(ExtSenderURI) }

// RoomURI returns the roomUri extension (key 2).
func (m *Message) RoomURI() (string, bool) { return m.textExtension(ExtRoomURI) }

// Decode parses a MIMI content message, strictly: see the package documentation.
func Decode(data []byte) (*Message, error) {
	if err := checkDeterministic(data); err != nil {
		return nil, fmt.Errorf("decoding MIMI content: %w", err)
	}
	m, err := decodeMessage(data)
	if err != nil {
		return nil, fmt.Errorf("decoding MIMI content: %w", err)
	}
	return m, nil
}

func decodeMessage(data []byte) (*Message, error) {
	f, err := asArray(data, "message", 7)
	if err != nil {
		return nil, err
	}
	var m Message
	salt, err := asBytes(f[0], "salt")
	if err != nil {
		return nil, err
	}
	if len(salt) != len(m.Salt) {
		return nil, fmt.Errorf("salt: %w: got %d bytes", ErrBadSalt, len(salt))
	}
	copy(m.Salt[:], salt)
	if m.Replaces, err = optionalID(f[1], "replaces"); err != nil {
		return nil, err
	}
	if m.TopicID, err = asBytes(f[2], "topicId"); err != nil {
		return nil, err
	}
	if len(m.TopicID) > MaxTopicIDLen {
		return nil, fmt.Errorf("topicId: %w: %d bytes, at most %d", ErrOutOfRange, len(m.TopicID), MaxTopicIDLen)
	}
	if !isNull(f[3]) {
		ex, err := asArray(f[3], "expires", 2)
		if err != nil {
			return nil, wrapNullable(err, f[3], "expires", "null or array")
		}
		var e Expiration
		if e.Relative, err = asBool(ex[0], "expires.relative"); err != nil {
			return nil, err
		}
		t, err := asUint(ex[1], "expires.time", 1<<32-1)
		if err != nil {
			return nil, err
		}
		e.Time = uint32(t)
		m.Expires = &e
	}
	if m.InReplyTo, err = optionalID(f[4], "inReplyTo"); err != nil {
		return nil, err
	}
	if m.Extensions, err = decodeExtensions(f[5]); err != nil {
		return nil, err
	}
	if m.Body, err = decodeNestedPart(f[6], "body", 1, &partBudget{}); err != nil {
		return nil, err
	}
	return &m, nil
}

func wrapNullable(err error, raw cbor.RawMessage, field, want string) error {
	if major(raw) != majorArray && major(raw) != majorBytes {
		return wrongType(field, raw, want)
	}
	return err
}

func optionalID(raw cbor.RawMessage, field string) (*MessageID, error) {
	if isNull(raw) {
		return nil, nil
	}
	if major(raw) != majorBytes {
		return nil, wrongType(field, raw, "null or byte string")
	}
	b, err := asBytes(raw, field)
	if err != nil {
		return nil, err
	}
	id, err := MessageIDFromBytes(b)
	if err != nil {
		return nil, fieldErr(field, err)
	}
	return &id, nil
}

func decodeExtensions(raw cbor.RawMessage) ([]Extension, error) {
	if major(raw) != majorMap {
		return nil, wrongType("extensions", raw, "map")
	}
	_, n, _, off, err := readHead(raw, 0)
	if err != nil {
		return nil, fieldErr("extensions", err)
	}
	// Walk the map in its (already checked) encoded order instead of through a Go map, so
	// keys keep their exact encoding and order.
	exts := make([]Extension, 0, n)
	for i := uint64(0); i < n; i++ {
		keyEnd, err := checkItem(raw, off, 2)
		if err != nil {
			return nil, fieldErr("extensions", err)
		}
		keyRaw := cbor.RawMessage(raw[off:keyEnd])
		valEnd, err := checkItem(raw, keyEnd, 2)
		if err != nil {
			return nil, fieldErr("extensions", err)
		}
		val := cbor.RawMessage(raw[keyEnd:valEnd])
		off = valEnd
		var k ExtensionKey
		switch major(keyRaw) {
		case majorUint, majorNegInt:
			if err := decMode.Unmarshal(keyRaw, &k.num); err != nil {
				return nil, fmt.Errorf("extensions: %w: %v", ErrBadExtensionKey, err)
			}
		case majorText:
			k.isText = true
			if k.text, err = asText(keyRaw, "extensions key"); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("extensions: %w: key is a %s", ErrBadExtensionKey, describe(keyRaw))
		}
		if err := k.validate(); err != nil {
			return nil, fieldErr("extensions", err)
		}
		field := "extensions[" + k.String() + "]"
		if err := checkExtensionValue(k, val, field); err != nil {
			return nil, err
		}
		exts = append(exts, Extension{Key: k, Value: slices.Clone(val)})
	}
	return exts, nil
}

func checkExtensionValue(k ExtensionKey, val cbor.RawMessage, field string) error {
	if d := containerDepth(val); d > MaxExtensionDepth-1 {
		return fmt.Errorf("%s: %w: %d levels below the extensions map, at most %d", field, ErrTooDeep, d, MaxExtensionDepth-1)
	}
	if !k.isText && (k.num == ExtSenderURI || k.num == ExtRoomURI) && major(val) != majorText {
		return fmt.Errorf("%s: %w: got %s, want text string", field, ErrBadExtensionValue, describe(val))
	}
	return nil
}

// Encode writes the message in deterministic CBOR, checking the same limits as Decode.
func (m *Message) Encode() ([]byte, error) {
	b, err := m.encode()
	if err != nil {
		return nil, fmt.Errorf("encoding MIMI content: %w", err)
	}
	return b, nil
}

func (m *Message) encode() ([]byte, error) {
	if len(m.TopicID) > MaxTopicIDLen {
		return nil, fmt.Errorf("topicId: %w: %d bytes, at most %d", ErrOutOfRange, len(m.TopicID), MaxTopicIDLen)
	}
	ext, err := encodeExtensions(m.Extensions)
	if err != nil {
		return nil, err
	}
	body, err := m.Body.encode("body", 1, &partBudget{})
	if err != nil {
		return nil, err
	}
	var expires any
	if m.Expires != nil {
		expires = []any{m.Expires.Relative, uint64(m.Expires.Time)}
	}
	return marshal([]any{m.Salt[:], idOrNil(m.Replaces), nonNil(m.TopicID), expires, idOrNil(m.InReplyTo), ext, body})
}

func idOrNil(id *MessageID) any {
	if id == nil {
		return nil
	}
	return id[:]
}

func encodeExtensions(exts []Extension) (cbor.RawMessage, error) {
	type pair struct{ key, value []byte }
	pairs := make([]pair, 0, len(exts))
	for _, e := range exts {
		field := "extensions[" + e.Key.String() + "]"
		if err := e.Key.validate(); err != nil {
			return nil, fieldErr(field, err)
		}
		if err := checkDeterministic(e.Value); err != nil {
			return nil, fieldErr(field, err)
		}
		if err := checkExtensionValue(e.Key, e.Value, field); err != nil {
			return nil, err
		}
		k, err := e.Key.encode()
		if err != nil {
			return nil, err
		}
		pairs = append(pairs, pair{k, e.Value})
	}
	slices.SortFunc(pairs, func(a, b pair) int { return bytes.Compare(a.key, b.key) })
	out := appendHead(nil, majorMap, uint64(len(pairs)))
	for i, p := range pairs {
		if i > 0 && bytes.Equal(pairs[i-1].key, p.key) {
			return nil, fmt.Errorf("extensions: %w: %x", ErrDuplicateKey, p.key)
		}
		out = append(out, p.key...)
		out = append(out, p.value...)
	}
	return out, nil
}

// appendHead appends a CBOR head in its shortest form.
func appendHead(b []byte, major byte, n uint64) []byte {
	mt := major << 5
	switch {
	case n < 24:
		return append(b, mt|byte(n))
	case n <= 0xff:
		return append(b, mt|24, byte(n))
	case n <= 0xffff:
		return append(b, mt|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(b, mt|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, mt|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}
