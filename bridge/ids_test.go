package bridge

import (
	"context"
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/config"
)

func newTestMapper(t testing.TB) *UserMapper {
	t.Helper()
	m, err := NewUserMapper("hs.example", "lm.example.org", "@lmbridge:hs.example", "lm_{{.}}")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestEncodeUserID(t *testing.T) {
	cases := []struct{ local, server, want string }{
		{"alice", "hs.example", "alice=hs.example"},
		{"Alice", "hs.example", "_alice=hs.example"},
		{"al_ice", "hs.example", "al__ice=hs.example"},
		{"alice", "hs.example:8448", "alice=hs.example_0588448"},
		{"a=b", "[::1]:8448", "a_061b=_091_058_0581_093_0588448"},
		{"a+b/c", "HS.example", "a_043b/c=_h_s.example"},
		{"ü", "x", "_195_188=x"},
	}
	for _, c := range cases {
		got := EncodeUserID(c.local, c.server)
		if got != c.want {
			t.Errorf("EncodeUserID(%q, %q) = %q, want %q", c.local, c.server, got, c.want)
			continue
		}
		local, server, err := DecodeUserID(got)
		if err != nil || local != c.local || server != c.server {
			t.Errorf("DecodeUserID(%q) = %q, %q, %v", got, local, server, err)
		}
	}
}

func TestDecodeUserIDRejects(t *testing.T) {
	for _, in := range []string{
		"alice",             // no separator
		"a=b=c",             // two separators
		"=hs.example",       // empty localpart
		"alice=",            // empty server
		"Alice=hs.example",  // upper case is never emitted
		"a_097=hs.example",  // 'a' escaped: not canonical
		"a_095=hs.example",  // '_' escaped as digits: not canonical
		"a_065=hs.example",  // 'A' escaped as digits: not canonical
		"a_300=hs.example",  // beyond a byte
		"a_05=hs.example",   // short escape
		"a_=hs.example",     // dangling escape
		"a_!=hs.example",    // unknown escape
		"a:b=hs.example",    // raw colon
		"a b=hs.example",    // raw space
		"alice=hs.example_", // dangling escape at the end
	} {
		if _, _, err := DecodeUserID(in); !errors.Is(err, ErrInvalidUserID) {
			t.Errorf("DecodeUserID(%q) error = %v, want ErrInvalidUserID", in, err)
		}
	}
}

func TestUserMapper(t *testing.T) {
	m := newTestMapper(t)
	lm, err := m.LMUserOf("@alice:hs.example")
	if err != nil || lm != "@alice=hs.example:lm.example.org" {
		t.Fatalf("LMUserOf = %q, %v", lm, err)
	}
	back, err := m.MatrixSideOf(lm)
	if err != nil || back != "@alice:hs.example" {
		t.Fatalf("MatrixSideOf(%q) = %q, %v", lm, back, err)
	}
	ghost, err := m.GhostOf("@bob:remote.example")
	if err != nil || ghost != "@lm_bob=remote.example:hs.example" {
		t.Fatalf("GhostOf = %q, %v", ghost, err)
	}
	if lmUser, ok := m.GhostLMUser(ghost); !ok || lmUser != "@bob:remote.example" {
		t.Fatalf("GhostLMUser = %q, %v", lmUser, ok)
	}
	// A ghost seen from LM is the LM user it stands for, not a second encoding of it.
	if lmUser, err := m.LMUserOf(ghost); err != nil || lmUser != "@bob:remote.example" {
		t.Fatalf("LMUserOf(ghost) = %q, %v", lmUser, err)
	}
	if back, err := m.MatrixSideOf("@bob:remote.example"); err != nil || back != ghost {
		t.Fatalf("MatrixSideOf(remote) = %q, %v", back, err)
	}
	for _, u := range []id.UserID{"@lmbridge:hs.example", ghost} {
		if !m.IsPuppet(u) {
			t.Errorf("IsPuppet(%s) = false", u)
		}
	}
	for _, u := range []id.UserID{"@alice:hs.example", "@lm_bob=remote.example:other.example", "@lm_bad:hs.example", "@lm_:hs.example"} {
		if m.IsPuppet(u) {
			t.Errorf("IsPuppet(%s) = true", u)
		}
	}
	if !m.IsOurLMUser(lm) || m.IsOurLMUser("@bob:remote.example") {
		t.Error("IsOurLMUser is wrong")
	}
	if _, err := m.LMUserOf("alice"); !errors.Is(err, ErrInvalidUserID) {
		t.Errorf("LMUserOf(alice) error = %v", err)
	}
	if _, err := m.LMUserOf(id.UserID("@" + strings.Repeat("a", 240) + ":hs.example")); !errors.Is(err, ErrUserIDTooLong) {
		t.Errorf("long ID error = %v", err)
	}
	if _, err := m.MatrixUserOf("@bob:remote.example"); !errors.Is(err, ErrNotOurs) {
		t.Errorf("MatrixUserOf(remote) error = %v", err)
	}
}

func TestNewUserMapperTemplate(t *testing.T) {
	for _, tpl := range []string{"lm_", "{{.}}_{{.}}", "{{", ""} {
		if _, err := NewUserMapper("hs.example", "lm.example.org", "@b:hs.example", tpl); err == nil {
			t.Errorf("template %q accepted", tpl)
		}
	}
	m, err := NewUserMapper("hs.example", "lm.example.org", "@b:hs.example", "{{.}}_lm")
	if err != nil {
		t.Fatal(err)
	}
	g, _ := m.GhostOf("@bob:remote.example")
	if g != "@bob=remote.example_lm:hs.example" {
		t.Fatalf("suffix template ghost = %s", g)
	}
	if u, ok := m.GhostLMUser(g); !ok || u != "@bob:remote.example" {
		t.Fatalf("suffix template reverse = %q %v", u, ok)
	}
}

// FuzzUserIDRoundTrip checks both directions of the bijection: any (localpart, server) survives encode → decode, and
// any string the decoder accepts is given back unchanged by encode.
func FuzzUserIDRoundTrip(f *testing.F) {
	f.Add("alice", "hs.example", "alice=hs.example")
	f.Add("Al_ice=", "[::1]:8448", "a_061b=_091_058")
	f.Add("ü", "x", "__=x")
	f.Fuzz(func(t *testing.T, local, server, encoded string) {
		if local != "" && server != "" {
			enc := EncodeUserID(local, server)
			gotLocal, gotServer, err := DecodeUserID(enc)
			if err != nil || gotLocal != local || gotServer != server {
				t.Fatalf("round trip of %q, %q via %q gave %q, %q, %v", local, server, enc, gotLocal, gotServer, err)
			}
			for i := 0; i < len(enc); i++ {
				if c := enc[i]; !passesUnescaped(c) && c != '_' && c != '=' {
					t.Fatalf("encoded %q holds %q, not allowed in a localpart", enc, c)
				}
			}
		}
		if l, s, err := DecodeUserID(encoded); err == nil {
			if again := EncodeUserID(l, s); again != encoded {
				t.Fatalf("decode of %q gave %q, %q which encodes to %q", encoded, l, s, again)
			}
		}
	})
}

func TestQueryUser(t *testing.T) {
	tb := newTestBridge(t, nil, config.Bridge{})
	for user, want := range map[id.UserID]bool{
		"@lm_bob=remote.example:hs.example":              true,
		"@lm_alice=hs.example=lm.example.org:hs.example": false, // not canonical: two '='
		"@lm_alice=lm.example.org:hs.example":            false, // a user of our own LM server
		"@lm_bob=remote.example:other.example":           false,
		"@alice:hs.example":                              false,
	} {
		if got, err := tb.QueryUser(context.Background(), user); got != want || err != nil {
			t.Errorf("QueryUser(%s) = %v, %v; want %v", user, got, err, want)
		}
	}
}
