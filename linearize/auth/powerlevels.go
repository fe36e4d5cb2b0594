package auth

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/lmbridge/lmbridge/linearize/canonicaljson"
)

// Power level defaults (§3.5.3.4, the same as Matrix's).
const (
	DefaultBan           = 50
	DefaultKick          = 50
	DefaultRedact        = 50
	DefaultInvite        = 0
	DefaultEventsDefault = 0
	DefaultStateDefault  = 50
	DefaultUsersDefault  = 0
)

// levelKeys are the top-level integer properties that rule 9 compares one by one.
var levelKeys = [...]string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"}

// PowerLevels is a parsed m.room.power_levels content. It is immutable once parsed and shared between States.
type PowerLevels struct {
	// Levels holds the top-level integer properties that are present (see levelKeys); absent ones take defaults.
	Levels map[string]int64
	Events map[string]int64
	Users  map[string]int64
}

// ParsePowerLevels reads m.room.power_levels content. Following room version 10 and later (LM is based on v11), the
// properties must be integers, events an object of integers and users an object from user IDs to integers; anything
// else is an error. notifications, which LM dropped, and unknown keys (eigen sends "event_default") are ignored.
func ParsePowerLevels(content json.RawMessage) (*PowerLevels, error) {
	v, err := canonicaljson.Parse(content)
	if err != nil {
		return nil, err
	}
	if v.Kind != canonicaljson.Object {
		return nil, fmt.Errorf("power levels content is not an object")
	}
	pl := &PowerLevels{Levels: make(map[string]int64, len(levelKeys))}
	for _, k := range levelKeys {
		f, ok := v.Get(k)
		if !ok {
			continue
		}
		if f.Kind != canonicaljson.Integer {
			return nil, fmt.Errorf("%s is not an integer", k)
		}
		pl.Levels[k] = f.Int
	}
	if f, ok := v.Get("events"); ok {
		if pl.Events, err = intMap(f, "events", false); err != nil {
			return nil, err
		}
	}
	if f, ok := v.Get("users"); ok {
		if pl.Users, err = intMap(f, "users", true); err != nil {
			return nil, err
		}
	}
	return pl, nil
}

func intMap(v *canonicaljson.Value, name string, userIDs bool) (map[string]int64, error) {
	if v.Kind != canonicaljson.Object {
		return nil, fmt.Errorf("%s is not an object", name)
	}
	out := make(map[string]int64, len(v.Members))
	for i := range v.Members {
		m := &v.Members[i]
		if m.Value.Kind != canonicaljson.Integer {
			return nil, fmt.Errorf("%s.%s is not an integer", name, m.Key)
		}
		if userIDs && !validUserID(m.Key) {
			return nil, fmt.Errorf("%s has a key that is not a user ID: %q", name, m.Key)
		}
		out[m.Key] = m.Value.Int
	}
	return out, nil
}

func validUserID(s string) bool {
	return len(s) >= 4 && len(s) <= 255 && s[0] == '@' && strings.IndexByte(s, ':') > 1
}

func (pl *PowerLevels) level(key string, def int64) int64 {
	if v, ok := pl.Levels[key]; ok {
		return v
	}
	return def
}

// Ban, Kick, Redact and Invite are the membership levels.
func (pl *PowerLevels) Ban() int64    { return pl.level("ban", DefaultBan) }
func (pl *PowerLevels) Kick() int64   { return pl.level("kick", DefaultKick) }
func (pl *PowerLevels) Redact() int64 { return pl.level("redact", DefaultRedact) }
func (pl *PowerLevels) Invite() int64 { return pl.level("invite", DefaultInvite) }

// User is a user's level: users[user], else users_default.
func (pl *PowerLevels) User(userID string) int64 {
	if v, ok := pl.Users[userID]; ok {
		return v
	}
	return pl.level("users_default", DefaultUsersDefault)
}

// EventLevel is the level needed to send an event of this type: events[type], else state_default for a state event
// (an empty state_key counts) and events_default otherwise.
func (pl *PowerLevels) EventLevel(eventType string, isState bool) int64 {
	if v, ok := pl.Events[eventType]; ok {
		return v
	}
	if isState {
		return pl.level("state_default", DefaultStateDefault)
	}
	return pl.level("events_default", DefaultEventsDefault)
}

// The levels Matrix uses when a room has no m.room.power_levels event at all: state_default is then 0, not 50.
func (s *State) banLevel() int64 {
	if s.powerLevels == nil {
		return DefaultBan
	}
	return s.powerLevels.Ban()
}

func (s *State) kickLevel() int64 {
	if s.powerLevels == nil {
		return DefaultKick
	}
	return s.powerLevels.Kick()
}

func (s *State) inviteLevel() int64 {
	if s.powerLevels == nil {
		return DefaultInvite
	}
	return s.powerLevels.Invite()
}

func (s *State) eventLevel(eventType string, isState bool) int64 {
	if s.powerLevels == nil {
		return 0
	}
	return s.powerLevels.EventLevel(eventType, isState)
}
