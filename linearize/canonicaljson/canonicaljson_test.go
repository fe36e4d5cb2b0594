package canonicaljson

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestCanonicalize(t *testing.T) {
	cases := []struct{ name, in, want string }{
		// The Matrix specification's examples (appendix, canonical JSON).
		{"spec: empty", `{}`, `{}`},
		{"spec: two keys", `{"one": 1, "two": "Two"}`, `{"one":1,"two":"Two"}`},
		{"spec: sorted", `{"b": "2", "a": "1"}`, `{"a":"1","b":"2"}`},
		{"spec: nested", `{"auth": {"success": true, "mxid": "@john.doe:example.com", "profile": {"display_name": "John Doe", "three_pids": [{"medium": "email", "address": "john.doe@example.org"}, {"medium": "msisdn", "address": "123456789"}]}}}`,
			`{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}`},
		{"spec: japanese value", `{"a": "日本語"}`, `{"a":"日本語"}`},
		{"spec: japanese keys", `{"本": 2, "日": 1}`, `{"日":1,"本":2}`},
		{"spec: escape decoded", `{"a": "\u65E5"}`, `{"a":"日"}`},
		{"spec: null", `{"a": null}`, `{"a":null}`},
		{"spec: -0 and 1e10", `{"a": -0, "b": 1e10}`, `{"a":0,"b":10000000000}`},
		// Escaping: only '"', '\\' and control characters; shortest forms; lower-case hex.
		{"line separators unescaped", `{"a":"\u2028\u2029"}`, "{\"a\":\"\u2028\u2029\"}"},
		{"html unescaped", `{"a":"<b>&amp;</b>"}`, `{"a":"<b>&amp;</b>"}`},
		{"solidus unescaped", `{"a":"\/"}`, `{"a":"/"}`},
		{"short escapes", `{"a":"\b\f\n\r\t\"\\"}`, `{"a":"\b\f\n\r\t\"\\"}`},
		{"control escapes", `{"a":"\u0000\u001F\u007f"}`, "{\"a\":\"\\u0000\\u001f\x7f\"}"},
		{"surrogate pair", `{"a":"\ud83d\ude00"}`, "{\"a\":\"😀\"}"},
		// Key order is by code point: a non-BMP key sorts after U+FFFD (RFC 8785 would put it before).
		{"code point order", `{"😀":1,"\ufffd":2,"z":3,"é":4}`, "{\"z\":3,\"é\":4,\"\ufffd\":2,\"😀\":1}"},
		{"prefix keys", `{"ab":1,"a":2,"":3}`, `{"":3,"a":2,"ab":1}`},
		{"whitespace", " \t\n\r[ 1 , [ ] , { } , true , false , null ] \n", `[1,[],{},true,false,null]`},
		{"integer limits", `[9007199254740991,-9007199254740991,0,-1]`, `[9007199254740991,-9007199254740991,0,-1]`},
		{"whole-valued decimals", `[1.0,1.50e1,-2E+2,0.0,-0.0,100e-2,90071992547409.91e2]`, `[1,15,-200,0,0,1,9007199254740991]`},
		{"top-level string", `"x"`, `"x"`},
	}
	for _, c := range cases {
		got, err := Canonicalize([]byte(c.in))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if string(got) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
		// Canonical output is a fixed point.
		again, err := Canonicalize(got)
		if err != nil || string(again) != string(got) {
			t.Errorf("%s: not a fixed point: %s %v", c.name, again, err)
		}
	}
}

func TestCanonicalizeRejects(t *testing.T) {
	cases := []struct {
		name, in string
		want     error
	}{
		{"fraction", `{"a":1.5}`, ErrFloat},
		{"small exponent", `[1e-1]`, ErrFloat},
		{"tiny", `[0.1]`, ErrFloat},
		{"2^53", `[9007199254740992]`, ErrIntegerRange},
		{"-2^53", `[-9007199254740992]`, ErrIntegerRange},
		{"huge", `[1e300]`, ErrIntegerRange},
		{"long integer", `[123456789012345678901234567890]`, ErrIntegerRange},
		{"duplicate key", `{"a":1,"b":2,"a":3}`, ErrDuplicateKey},
		{"duplicate key by escape", `{"a":1,"\u0061":2}`, ErrDuplicateKey},
		{"invalid UTF-8", "{\"a\":\"\xff\"}", ErrInvalidUTF8},
		{"overlong UTF-8", "{\"a\":\"\xc0\xaf\"}", ErrInvalidUTF8},
		{"invalid UTF-8 after escape", "{\"a\":\"\\n\xff\"}", ErrInvalidUTF8},
		{"lone high surrogate", `{"a":"\ud800"}`, ErrInvalidUTF8},
		{"lone low surrogate", `{"a":"\udc00"}`, ErrInvalidUTF8},
		{"high surrogate then letter", `{"a":"\ud800\u0041"}`, ErrInvalidUTF8},
		{"trailing data", `{} {}`, ErrInvalidJSON},
		{"trailing comma", `[1,]`, ErrInvalidJSON},
		{"leading zero", `[01]`, ErrInvalidJSON},
		{"plus sign", `[+1]`, ErrInvalidJSON},
		{"bare minus", `[-]`, ErrInvalidJSON},
		{"no fraction digits", `[1.]`, ErrInvalidJSON},
		{"no exponent digits", `[1e]`, ErrInvalidJSON},
		{"NaN", `[NaN]`, ErrInvalidJSON},
		{"single quotes", `{'a':1}`, ErrInvalidJSON},
		{"unquoted key", `{a:1}`, ErrInvalidJSON},
		{"raw newline in string", "[\"a\nb\"]", ErrInvalidJSON},
		{"bad escape", `["\x"]`, ErrInvalidJSON},
		{"short unicode escape", `["\u12"]`, ErrInvalidJSON},
		{"unterminated", `{"a":"b`, ErrInvalidJSON},
		{"empty", ``, ErrInvalidJSON},
		{"BOM", "\ufeff{}", ErrInvalidJSON},
		{"bad literal", `[tru]`, ErrInvalidJSON},
		{"too deep", strings.Repeat("[", maxDepth+2) + strings.Repeat("]", maxDepth+2), ErrTooDeep},
	}
	for _, c := range cases {
		out, err := Canonicalize([]byte(c.in))
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %q, %v; want %v", c.name, out, err, c.want)
			continue
		}
		var se *SyntaxError
		if !errors.As(err, &se) || se.Offset < 0 || se.Offset > len(c.in) {
			t.Errorf("%s: error %v has no sensible offset", c.name, err)
		}
	}
	if _, err := Canonicalize([]byte(strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth))); err != nil {
		t.Errorf("nesting at the limit: %v", err)
	}
}

func TestMarshal(t *testing.T) {
	type inner struct {
		B string `json:"b"`
		A int    `json:"a"`
	}
	cases := []struct {
		name string
		in   any
		want string
	}{
		{"map", map[string]any{"b": 1, "a": []any{"x", true, nil, int64(-3)}}, `{"a":["x",true,null,-3],"b":1}`},
		{"whole float", map[string]any{"n": float64(42)}, `{"n":42}`},
		{"raw", json.RawMessage(`{"z": 1, "a": "\u2028"}`), "{\"a\":\"\u2028\",\"z\":1}"},
		{"struct via encoding/json", inner{B: "<&>", A: 1}, `{"a":1,"b":"<&>"}`},
		{"nested maps", map[string]map[string]string{"s": {"k2": "v", "k1": "w"}}, `{"s":{"k1":"w","k2":"v"}}`},
		{"strings", []string{"a", "\u2029"}, "[\"a\",\"\u2029\"]"},
		{"number", json.Number("7"), `7`},
		{"nil map", map[string]any(nil), `null`},
	}
	for _, c := range cases {
		got, err := Marshal(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if string(got) != c.want {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
	}
	bad := []struct {
		name string
		in   any
		want error
	}{
		{"fraction", map[string]any{"x": 1.5}, ErrFloat},
		{"NaN", math.NaN(), ErrFloat},
		{"int64 range", int64(1) << 53, ErrIntegerRange},
		{"uint64 range", uint64(math.MaxUint64), ErrIntegerRange},
		{"float range", float64(1 << 60), ErrIntegerRange},
		{"invalid UTF-8", "\xff", ErrInvalidUTF8},
		{"invalid UTF-8 key", map[string]any{"\xff": 1}, ErrInvalidUTF8},
		{"struct with float", struct{ F float64 }{0.5}, ErrFloat},
	}
	for _, c := range bad {
		if _, err := Marshal(c.in); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestValueGet(t *testing.T) {
	v, err := Parse([]byte(`{"c":3,"a":1,"b":{"x":"y"}}`))
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"a": "1", "b": `{"x":"y"}`, "c": "3"} {
		f, ok := v.Get(key)
		if !ok || f.String() != want {
			t.Errorf("Get(%q) = %v %v, want %s", key, f, ok, want)
		}
	}
	if _, ok := v.Get("d"); ok {
		t.Error("Get of a missing key succeeded")
	}
	if n := v.EncodedLen(); n != len(v.Bytes()) {
		t.Errorf("EncodedLen %d, encoding is %d bytes", n, len(v.Bytes()))
	}
}
