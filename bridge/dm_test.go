package bridge

import (
	"errors"
	"strings"
	"testing"

	"github.com/lmbridge/lmbridge/config"
)

// TestParseLMUser checks what commands accept as an LM user: the LM ID or the ghost's Matrix ID, and nothing that is
// ours, malformed or unmappable.
func TestParseLMUser(t *testing.T) {
	tb := newTestBridge(t, nil, config.Bridge{})
	for _, in := range []string{bobLM, string(bobGhost)} {
		lmUser, ghost, err := tb.parseLMUser(in)
		if err != nil || lmUser != bobLM || ghost != bobGhost {
			t.Errorf("parseLMUser(%q) = %q, %q, %v", in, lmUser, ghost, err)
		}
	}
	for in, want := range map[string]error{
		"bob":                             ErrInvalidUserID,
		"@bob":                            ErrInvalidUserID,
		"@bob:remote/x":                   ErrInvalidUserID,
		"@bob:remote example":             ErrInvalidUserID,
		aliceLM:                           ErrNotLMUser,
		"@x:" + testHS:                    ErrNotLMUser,
		"@b:" + strings.Repeat("a", 250):  ErrUserIDTooLong,
		"@b:" + strings.Repeat("a", 256):  ErrInvalidUserID,
		"@lm_bad=:" + testHS:              ErrNotLMUser, // not a ghost we could have made: a user of this homeserver
		"@bob:remote.example:8448:extra!": ErrInvalidUserID,
	} {
		if _, _, err := tb.parseLMUser(in); !errors.Is(err, want) {
			t.Errorf("parseLMUser(%q) = %v, want %v", in, err, want)
		}
	}
}

// TestHelpExplainsUserIDs checks that the help shows how to write an LM user's ID with the bridge's own names.
func TestHelpExplainsUserIDs(t *testing.T) {
	tb := newTestBridge(t, nil, config.Bridge{CommandPrefix: "!lm"})
	tb.seedDAGRoom()
	help := command(t, tb, alice, "$h1", "!lm help")
	for _, want := range []string{"!lm pm @bob:remote.example", string(bobGhost), aliceLM, testLM, "!lm sync", "!lm resolve <LM user ID>"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
	if a := command(t, tb, alice, "$h2", "!lm"); a != help {
		t.Errorf("a bare prefix answered %q, want the help", a)
	}
	if a := command(t, tb, alice, "$h3", "!lm dm"); !strings.Contains(a, "Usage: !lm pm") {
		t.Errorf("the dm alias answered %q", a)
	}
}
