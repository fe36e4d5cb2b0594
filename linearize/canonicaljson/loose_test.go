package canonicaljson

import (
	"errors"
	"testing"
)

// CanonicalizeLoose keeps exactly the numbers Canonicalize refuses as written, and is Canonicalize for everything else.
func TestCanonicalizeLoose(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"b": 1.5, "a": "\u001F"}`, `{"a":"\u001f","b":1.5}`},
		{`[12345678901234567890, -9007199254740992, 1e400, -0.5e-3, 9007199254740991.5]`,
			`[12345678901234567890,-9007199254740992,1e400,-0.5e-3,9007199254740991.5]`},
		// Whole-valued and in range: canonical JSON has a form for these, so they get it.
		{`[1.0, 1e10, -0]`, `[1,10000000000,0]`},
		{`{"n": {"m": [1.25]}}`, `{"n":{"m":[1.25]}}`},
	} {
		got, err := CanonicalizeLoose([]byte(c.in))
		if err != nil || string(got) != c.want {
			t.Errorf("CanonicalizeLoose(%s) = %s, %v; want %s", c.in, got, err, c.want)
		}
		v, err := ParseLoose([]byte(c.in))
		if err != nil || v.EncodedLen() != len(c.want) {
			t.Errorf("ParseLoose(%s): EncodedLen %d, %v; want %d", c.in, v.EncodedLen(), err, len(c.want))
		}
	}
	for _, c := range []struct {
		in   string
		want error
	}{
		{`{"a":1,"a":2}`, ErrDuplicateKey},
		{"\"\xff\"", ErrInvalidUTF8},
		{`[1.]`, ErrInvalidJSON},
		{`[01]`, ErrInvalidJSON},
	} {
		if _, err := CanonicalizeLoose([]byte(c.in)); !errors.Is(err, c.want) {
			t.Errorf("CanonicalizeLoose(%q): %v, want %v", c.in, err, c.want)
		}
	}
	// The strict parser still refuses what the loose one keeps.
	if _, err := Canonicalize([]byte(`[1.5]`)); !errors.Is(err, ErrFloat) {
		t.Errorf("Canonicalize([1.5]): %v, want ErrFloat", err)
	}
}
