package content

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

var (
	testSalt = bytes.Repeat([]byte{0x5e}, 16)
	testID   = append([]byte{0x01}, bytes.Repeat([]byte{0xab}, 31)...)
)

// genericMessage is a valid message as generic values, for tests to break one field at a
// time and encode with the deterministic encoder.
func genericMessage() []any {
	return []any{
		testSalt, nil, []byte{}, nil, nil,
		map[any]any{uint64(1): "mimi://example.com/u/alice", uint64(2): "mimi://example.com/r/room"},
		[]any{uint64(1), "", uint64(1), TypeMarkdown, []byte("hi")},
	}
}

func enc(t *testing.T, v any) []byte {
	t.Helper()
	b, err := encMode.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func withField(i int, v any) []any {
	m := genericMessage()
	m[i] = v
	return m
}

func withBody(body any) []any { return withField(6, body) }

func withExt(ext any) []any { return withField(5, ext) }

func nullPart() []any { return []any{uint64(1), "", uint64(0)} }

func multi(sem uint64, parts ...any) []any { return []any{uint64(1), "", uint64(3), sem, parts} }

func externalPart(mutate func([]any)) []any {
	p := []any{uint64(6), "en", uint64(2), "video/mp4", "https://example.com/x", uint64(0), uint64(10),
		uint64(1), bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 12), []byte{}, uint64(1), bytes.Repeat([]byte{3}, 32), "desc", "x.mp4"}
	if mutate != nil {
		mutate(p)
	}
	return p
}

// nest wraps part in depth-1 chooseOne levels (with a null sibling each).
func nest(depth int) []any {
	p := nullPart()
	for i := 1; i < depth; i++ {
		p = multi(0, p, nullPart())
	}
	return p
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// rawExtValue is a message whose extension 300 is the given hex, bypassing the encoder's
// own validity checks.
func rawExtValue(valueHex string) []byte {
	return mustHex("87 50" + hex.EncodeToString(testSalt) + "f6 40 f6 f6 a1 19012c" + valueHex + "83 01 60 00")
}

func TestDecodeRejects(t *testing.T) {
	valid := enc(t, genericMessage())
	if _, err := Decode(valid); err != nil {
		t.Fatalf("base message: %v", err)
	}
	manyParts := make([]any, MaxParts)
	for i := range manyParts {
		manyParts[i] = nullPart()
	}
	deepValue := any(uint64(1))
	for i := 0; i < 20; i++ {
		deepValue = []any{deepValue}
	}
	cases := []struct {
		name  string
		input []byte
		want  error
		field string
	}{
		{"empty input", nil, ErrMalformed, ""},
		{"truncated", valid[:len(valid)-1], ErrMalformed, ""},
		{"trailing byte", append(bytes.Clone(valid), 0x00), ErrTrailingData, ""},
		{"not an array", enc(t, map[any]any{uint64(1): uint64(2)}), ErrWrongType, "message"},
		{"six elements", enc(t, genericMessage()[:6]), ErrArrayLength, "message"},
		{"eight elements", enc(t, append(genericMessage(), nil)), ErrArrayLength, "message"},
		{"salt of 15 bytes", enc(t, withField(0, testSalt[:15])), ErrBadSalt, "salt"},
		{"salt as text", enc(t, withField(0, "0123456789abcdef")), ErrWrongType, "salt"},
		{"replaces of 31 bytes", enc(t, withField(1, testID[:31])), ErrBadMessageID, "replaces"},
		{"replaces as integer", enc(t, withField(1, uint64(1))), ErrWrongType, "replaces"},
		{"topicId null", enc(t, withField(2, nil)), ErrWrongType, "topicId"},
		{"topicId too long", enc(t, withField(2, make([]byte, MaxTopicIDLen+1))), ErrOutOfRange, "topicId"},
		{"expires of one element", enc(t, withField(3, []any{true})), ErrArrayLength, "expires"},
		{"expires relative not a bool", enc(t, withField(3, []any{uint64(1), uint64(5)})), ErrWrongType, "expires.relative"},
		{"expires time beyond 32 bits", enc(t, withField(3, []any{false, uint64(1) << 32})), ErrOutOfRange, "expires.time"},
		{"expires as text", enc(t, withField(3, "soon")), ErrWrongType, "expires"},
		{"inReplyTo of 33 bytes", enc(t, withField(4, append(bytes.Clone(testID), 0))), ErrBadMessageID, "inReplyTo"},
		{"extensions as array", enc(t, withExt([]any{})), ErrWrongType, "extensions"},
		{"text and integer keys (control)", enc(t, withExt(map[any]any{"k": uint64(1), uint64(1): "a"})), nil, ""},
		{"raw extension value (control)", rawExtValue("01"), nil, ""},
		{"extension key byte string", mustHex("87 50" + hex.EncodeToString(testSalt) + "f6 40 f6 f6 a1 41 6b 01 83 01 60 00"), ErrBadExtensionKey, "extensions"},
		{"extension key float", mustHex("87 50" + hex.EncodeToString(testSalt) + "f6 40 f6 f6 a1 f9 3c00 01 83 01 60 00"), ErrBadMapKey, ""},
		{"extension key empty text", enc(t, withExt(map[any]any{"": uint64(1)})), ErrBadExtensionKey, "extensions"},
		{"extension key 256 bytes", enc(t, withExt(map[any]any{strings.Repeat("k", 256): uint64(1)})), ErrBadExtensionKey, "extensions"},
		{"extension key 2^53", enc(t, withExt(map[any]any{uint64(1) << 53: uint64(1)})), ErrBadMapKey, ""},
		{"extension key -2^53", enc(t, withExt(map[any]any{-int64(1) << 53: uint64(1)})), ErrBadMapKey, ""},
		{"sender URI not text", enc(t, withExt(map[any]any{uint64(1): uint64(7)})), ErrBadExtensionValue, "extensions[1]"},
		{"room URI not text", enc(t, withExt(map[any]any{uint64(2): []byte("r")})), ErrBadExtensionValue, "extensions[2]"},
		{"extension four levels below the map", enc(t, withExt(map[any]any{uint64(256): []any{[]any{[]any{[]any{uint64(1)}}}}})), ErrTooDeep, "extensions[256]"},
		{"nesting beyond the checker's bound", enc(t, withExt(map[any]any{uint64(256): deepValue})), ErrTooDeep, ""},
		{"duplicate extension key", mustHex("87 50" + hex.EncodeToString(testSalt) + "f6 40 f6 f6 a2 03 01 03 02 83 01 60 00"), ErrDuplicateKey, ""},
		{"extension keys out of order", mustHex("87 50" + hex.EncodeToString(testSalt) + "f6 40 f6 f6 a2 04 01 03 02 83 01 60 00"), ErrNotDeterministic, ""},
		{"integer not in shortest form", mustHex("87 50" + hex.EncodeToString(testSalt) + "f6 40 f6 f6 a0 83 18 01 60 00"), ErrNotDeterministic, ""},
		{"length not in shortest form", mustHex("87 50" + hex.EncodeToString(testSalt) + "f6 58 00 f6 f6 a0 83 01 60 00"), ErrNotDeterministic, ""},
		{"indefinite-length array", mustHex("9f 50" + hex.EncodeToString(testSalt) + "f6 40 f6 f6 a0 83 01 60 00 ff"), ErrNotDeterministic, ""},
		{"indefinite-length integer", mustHex("1f"), ErrMalformed, ""},
		{"reserved additional information", mustHex("1c"), ErrMalformed, ""},
		{"two-byte simple value below 32", mustHex("87 50" + hex.EncodeToString(testSalt) + "f8 16 40 f6 f6 a0 83 01 60 00"), ErrMalformed, ""},
		{"byte string overruns input", mustHex("5b ffffffffffffffff"), ErrMalformed, ""},
		{"array count overruns input", mustHex("9b ffffffffffffffff"), ErrMalformed, ""},
		{"map count overruns input", mustHex("bb ffffffffffffffff"), ErrMalformed, ""},
		{"float32 that fits a float16", rawExtValue("fa 3f800000"), ErrNotDeterministic, ""},
		{"float64 that fits a float32", rawExtValue("fb 3ff0000000000000"), ErrNotDeterministic, ""},
		{"NaN with payload", rawExtValue("f9 7e01"), ErrNotDeterministic, ""},
		{"float32 NaN", rawExtValue("fa 7fc00000"), ErrNotDeterministic, ""},
		{"bignum that fits an integer", rawExtValue("c2 41 01"), ErrNotDeterministic, ""},
		{"bignum with leading zero", rawExtValue("c2 4a 00 010203040506070809"), ErrNotDeterministic, ""},
		{"bignum of text", rawExtValue("c2 61 61"), ErrMalformed, ""},
		{"nested map with array key", rawExtValue("a1 80 01"), ErrBadMapKey, ""},
		{"invalid UTF-8 text", enc(t, withBody([]any{uint64(1), "", uint64(1), cbor.RawMessage(mustHex("62 c3 28")), []byte("x")})), ErrInvalidUTF8, ""},
		{"body not an array", enc(t, withBody("hi")), ErrWrongType, "body"},
		{"body of two elements", enc(t, withBody([]any{uint64(1), ""})), ErrArrayLength, "body"},
		{"unknown cardinality", enc(t, withBody([]any{uint64(1), "", uint64(4)})), ErrUnknownCardinality, "body.cardinality"},
		{"cardinality as text", enc(t, withBody([]any{uint64(1), "", "single", "text/plain", []byte("x")})), ErrWrongType, "body.cardinality"},
		{"null part with content", enc(t, withBody([]any{uint64(1), "", uint64(0), "text/plain"})), ErrArrayLength, "body"},
		{"single part missing content", enc(t, withBody([]any{uint64(1), "", uint64(1), "text/plain"})), ErrArrayLength, "body"},
		{"single part content as text", enc(t, withBody([]any{uint64(1), "", uint64(1), "text/plain", "hi"})), ErrWrongType, "body.content"},
		{"single part content type as bytes", enc(t, withBody([]any{uint64(1), "", uint64(1), []byte("text/plain"), []byte("hi")})), ErrWrongType, "body.contentType"},
		{"external part of 14 elements", enc(t, withBody(externalPart(nil)[:14])), ErrArrayLength, "body"},
		{"external encAlg beyond 16 bits", enc(t, withBody(externalPart(func(p []any) { p[7] = uint64(1) << 16 }))), ErrOutOfRange, "body.encAlg"},
		{"external hashAlg beyond 8 bits", enc(t, withBody(externalPart(func(p []any) { p[11] = uint64(256) }))), ErrOutOfRange, "body.hashAlg"},
		{"external expires beyond 32 bits", enc(t, withBody(externalPart(func(p []any) { p[5] = uint64(1) << 32 }))), ErrOutOfRange, "body.expires"},
		{"external size negative", enc(t, withBody(externalPart(func(p []any) { p[6] = int64(-1) }))), ErrWrongType, "body.size"},
		{"external url as bytes", enc(t, withBody(externalPart(func(p []any) { p[4] = []byte("https://x") }))), ErrWrongType, "body.url"},
		{"external key as text", enc(t, withBody(externalPart(func(p []any) { p[8] = "key" }))), ErrWrongType, "body.key"},
		{"external filename null", enc(t, withBody(externalPart(func(p []any) { p[14] = nil }))), ErrWrongType, "body.filename"},
		{"unknown part semantics", enc(t, withBody(multi(3, nullPart(), nullPart()))), ErrUnknownSemantics, "body.partSemantics"},
		{"multipart of one part", enc(t, withBody(multi(0, nullPart()))), ErrTooFewParts, "body.parts"},
		{"multipart parts not an array", enc(t, withBody([]any{uint64(1), "", uint64(3), uint64(0), nullPart()[0]})), ErrWrongType, "body.parts"},
		{"multipart missing parts", enc(t, withBody([]any{uint64(1), "", uint64(3), uint64(0)})), ErrArrayLength, "body"},
		{"bad nested part", enc(t, withBody(multi(2, nullPart(), []any{uint64(1), "", uint64(9)}))), ErrUnknownCardinality, "body.parts[1].cardinality"},
		{"five levels of parts", enc(t, withBody(nest(5))), ErrTooDeep, "body.parts[0].parts[0].parts[0].parts[0]"},
		{"more than 1024 parts", enc(t, withBody(multi(2, manyParts...))), ErrTooManyParts, "body.parts[1023]"},
		{"disposition beyond 255", enc(t, withBody([]any{uint64(256), "", uint64(0)})), ErrOutOfRange, "body.disposition"},
		{"negative disposition", enc(t, withBody([]any{int64(-1), "", uint64(0)})), ErrWrongType, "body.disposition"},
		{"malformed language", enc(t, withBody([]any{uint64(1), "en_US", uint64(0)})), ErrBadLanguage, "body.language"},
		{"empty language in list", enc(t, withBody([]any{uint64(1), "en,", uint64(0)})), ErrBadLanguage, "body.language"},
		{"language as bytes", enc(t, withBody([]any{uint64(1), []byte("en"), uint64(0)})), ErrWrongType, "body.language"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Decode(c.input)
			if c.want == nil { // a control case: must decode
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted: %+v", m)
			}
			if !errors.Is(err, c.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %q is not %q", err, c.want)
			}
			if c.field != "" && !strings.Contains(err.Error(), c.field+":") {
				t.Errorf("error %q does not name %s", err, c.field)
			}
		})
	}
}

func TestDecodeAcceptsLimits(t *testing.T) {
	manyParts := make([]any, MaxParts-1)
	for i := range manyParts {
		manyParts[i] = nullPart()
	}
	for name, v := range map[string][]any{
		"four levels of parts":          withBody(nest(4)),
		"1024 parts":                    withBody(multi(2, manyParts...)),
		"extension three levels deep":   withExt(map[any]any{uint64(256): []any{[]any{[]any{uint64(1)}}}}),
		"text and negative keys":        withExt(map[any]any{"x-vendor": uint64(1), int64(-5): nil, uint64(1): "mimi://a"}),
		"extension with tag and floats": withExt(map[any]any{uint64(9): cbor.RawMessage(mustHex("82 d8 20 61 78 f9 3e00"))}),
		"unknown disposition":           withBody([]any{uint64(200), "", uint64(0)}),
		"language list":                 withBody([]any{uint64(1), "en-GB,fr,zh-Hant-TW,x-klingon,i-default", uint64(0)}),
		"relative expiry":               withField(3, []any{true, uint64(600)}),
		"no extensions":                 withExt(map[any]any{}),
	} {
		b := enc(t, v)
		m, err := Decode(b)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		re, err := m.Encode()
		if err != nil || !bytes.Equal(re, b) {
			t.Errorf("%s: re-encoding %x, %v; want %x", name, re, err, b)
		}
	}
}
