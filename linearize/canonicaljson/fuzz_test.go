package canonicaljson

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzCanonicalize: no input panics; whatever is accepted comes out as valid JSON that is its own canonical form and
// that encoding/json reads back as the same value.
func FuzzCanonicalize(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"one": 1, "two": "Two"}`, `{"本": 2, "日": 1}`, `{"a": -0, "b": 1e10}`, `["\ud83d\ude00", "\u2028"]`,
		`{"a":1.5}`, `[9007199254740992]`, `{"a":1,"a":2}`, "\"\xff\"", `[[[[[]]]]]`, `"\u0000\u001f\/"`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := Canonicalize(data)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("output is not JSON: %q", out)
		}
		again, err := Canonicalize(out)
		if err != nil {
			t.Fatalf("output %q does not parse: %v", out, err)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("not a fixed point: %q → %q", out, again)
		}
		var a, b any
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if dec.Decode(&a) != nil {
			return
		}
		if err := json.Unmarshal(out, &b); err != nil {
			t.Fatalf("encoding/json rejects %q: %v", out, err)
		}
		if !sameJSON(a, b) {
			t.Fatalf("value changed: %q → %q", data, out)
		}
	})
}

// sameJSON compares a value decoded with UseNumber to one decoded with float64 numbers.
func sameJSON(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if !sameJSON(v, y[k]) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameJSON(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		f, err := x.Float64()
		y, ok := b.(float64)
		return err == nil && ok && f == y
	default:
		return a == b
	}
}
