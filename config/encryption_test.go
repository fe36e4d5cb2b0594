package config

import (
	"errors"
	"strings"
	"testing"
)

func TestEncryptionDefaultsAreOff(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Encryption
	if e.Allow || e.Default || e.Require || e.Appservice {
		t.Fatalf("encryption is on by default: %+v", e)
	}
	if e.KeyWait().Seconds() != 10 || e.Verification.Receive != "unverified" || e.Rotation.Messages != 100 {
		t.Fatalf("encryption defaults not filled: %+v", e)
	}
}

func TestEncryptionValidation(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, wantKey string
	}{
		{"default without allow", "encryption:\n    default: true\n", "encryption.allow"},
		{"require without allow", "encryption:\n    require: true\n", "encryption.allow"},
		{"allow without pickle key", "encryption:\n    allow: true\n", "encryption.pickle_key"},
		{"short pickle key", "encryption:\n    allow: true\n    pickle_key: short\n", "encryption.pickle_key"},
		{"negative key wait", "encryption:\n    key_wait_ms: -1\n", "encryption.key_wait_ms"},
		{"unknown trust level", "encryption:\n    verification_levels:\n        send: trusted\n", "encryption.verification_levels.send"},
		{"custom rotation of zero", "encryption:\n    rotation:\n        enable_custom: true\n        messages: 0\n", "encryption.rotation.messages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(minimal + tc.yaml))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantKey) {
				t.Fatalf("err = %v, want ErrInvalid naming %s", err, tc.wantKey)
			}
		})
	}
	cfg, err := Parse([]byte(minimal + "encryption:\n    allow: true\n    default: true\n    pickle_key: 0123456789abcdef\n"))
	if err != nil {
		t.Fatalf("a valid encryption section: %v", err)
	}
	if err = cfg.Encryption.Validate(); err != nil {
		t.Fatal(err)
	}
}
