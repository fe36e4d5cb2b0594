package config

import (
	"fmt"
	"time"
)

// Encryption is end-to-bridge encryption: the bot's own device takes part in the Megolm encryption of Matrix rooms,
// decrypting what comes in and encrypting what the bot and the ghosts send. The names follow the mautrix bridges'
// encryption section, so that operators who know those find the same keys here.
type Encryption struct {
	Allow           bool               `yaml:"allow"`
	Appservice      bool               `yaml:"appservice"`
	Default         bool               `yaml:"default"`
	Require         bool               `yaml:"require"`
	PickleKey       string             `yaml:"pickle_key"`
	DeviceName      string             `yaml:"device_name"`
	KeyWaitMillis   int64              `yaml:"key_wait_ms"`
	AllowKeySharing bool               `yaml:"allow_key_sharing"`
	Verification    VerificationLevels `yaml:"verification_levels"`
	Rotation        Rotation           `yaml:"rotation"`
}

// VerificationLevels are the least trust a device needs, as mautrix's id.TrustState names it: "blacklisted",
// "unverified", "cross-signed-untrusted", "cross-signed-tofu", "cross-signed-verified" or "verified".
type VerificationLevels struct {
	// Receive is the least trust of a device whose messages are bridged; below it, the room gets a notice instead.
	Receive string `yaml:"receive"`
	// Send is the least trust of a device that gets the room keys of what the bridge sends; below it, the device
	// gets an m.room_key.withheld (m.unverified).
	Send string `yaml:"send"`
	// Share is the least trust of a device whose key requests are answered.
	Share string `yaml:"share"`
}

// Rotation is the Megolm session rotation the bridge asks for in the rooms it creates encrypted.
type Rotation struct {
	EnableCustom                   bool  `yaml:"enable_custom"`
	Milliseconds                   int64 `yaml:"milliseconds"`
	Messages                       int   `yaml:"messages"`
	DisableDeviceChangeKeyRotation bool  `yaml:"disable_device_change_key_rotation"`
}

// TrustLevels are the values verification_levels accepts, weakest first.
var TrustLevels = []string{"blacklisted", "unverified", "cross-signed-untrusted", "cross-signed-tofu",
	"cross-signed-verified", "verified"}

// minPickleKey is the shortest pickle key accepted; it encrypts the bot's private keys at rest.
const minPickleKey = 16

// KeyWait is how long an event whose room key has not arrived waits for it.
func (e *Encryption) KeyWait() time.Duration {
	return time.Duration(e.KeyWaitMillis) * time.Millisecond
}

// Validate checks the section alone, as Config.Validate does within the whole file.
func (e *Encryption) Validate() error {
	var p problems
	e.validate(&p)
	if len(p) > 0 {
		return fmt.Errorf("%w:\n  %w", ErrInvalid, &problemList{p})
	}
	return nil
}

func (e *Encryption) validate(p *problems) {
	if (e.Default || e.Require) && !e.Allow {
		p.add("encryption.allow", "must be true when encryption.default or encryption.require is")
	}
	if e.Allow && len(e.PickleKey) < minPickleKey {
		p.add("encryption.pickle_key", "must be a secret of at least %d characters when encryption is allowed", minPickleKey)
	}
	if e.KeyWaitMillis < 0 || e.KeyWaitMillis > int64(10*time.Minute/time.Millisecond) {
		p.add("encryption.key_wait_ms", "must be between 0 and 600000 milliseconds, got %d", e.KeyWaitMillis)
	}
	checkOneOf(p, "encryption.verification_levels.receive", e.Verification.Receive, TrustLevels)
	checkOneOf(p, "encryption.verification_levels.send", e.Verification.Send, TrustLevels)
	checkOneOf(p, "encryption.verification_levels.share", e.Verification.Share, TrustLevels)
	if e.Rotation.EnableCustom {
		if e.Rotation.Milliseconds <= 0 {
			p.add("encryption.rotation.milliseconds", "must be positive, got %d", e.Rotation.Milliseconds)
		}
		if e.Rotation.Messages <= 0 {
			p.add("encryption.rotation.messages", "must be positive, got %d", e.Rotation.Messages)
		}
	}
}
