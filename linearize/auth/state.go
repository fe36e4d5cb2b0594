// Package auth implements the Linearized Matrix authorization rules (§5.2 of draft-ralston-mimi-linearized-matrix-04):
// the room state tracked along the hub's log, auth event selection, and the check of an event against the state
// before it. Signature checks (rules 1 and 2) are package pdu's VerifySignatures; everything else is here.
package auth

import (
	"fmt"
	"strings"

	"github.com/lmbridge/lmbridge/linearize/canonicaljson"
	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// Event types and membership values the rules look at.
const (
	TypeCreate            = "m.room.create"
	TypeMember            = "m.room.member"
	TypePowerLevels       = "m.room.power_levels"
	TypeJoinRules         = "m.room.join_rules"
	TypeHistoryVisibility = "m.room.history_visibility"

	MembershipJoin   = "join"
	MembershipInvite = "invite"
	MembershipLeave  = "leave"
	MembershipBan    = "ban"
	MembershipKnock  = "knock"

	JoinRulePublic = "public"
	JoinRuleInvite = "invite"
	JoinRuleKnock  = "knock"
)

// joinRuleUnreadable stands for a join rules event whose join_rule is missing or not a string.
const joinRuleUnreadable = "(unreadable)"

// DefaultJoinRule applies when the room has no m.room.join_rules event. The draft leaves it as a TODO; room version 11
// and eigen both use invite.
const DefaultJoinRule = JoinRuleInvite

// Key identifies a piece of state.
type Key struct {
	Type     string
	StateKey string
}

// Entry is one state event with its event ID. Entries are shared between State copies: never modify one.
type Entry struct {
	EventID string
	Event   *pdu.PDU
	// membership caches content.membership of an m.room.member event.
	membership string
}

// Membership is content.membership for an m.room.member entry, "" otherwise.
func (e *Entry) Membership() string { return e.membership }

// flattenAfter is how many changes a State keeps in its private overlay before folding them into a new shared base.
// A Clone copies only the overlay, so cloning costs O(flattenAfter) however large the room is; folding costs O(room)
// once every flattenAfter state changes.
const flattenAfter = 64

// State is the room state at one point of the log: the state events by (type, state_key), plus the derived facts the
// rules need (creator, parsed power levels, join rule) kept ready so that a check is O(1) in the size of the room.
//
// A State is not safe for concurrent mutation, but Clone is cheap (see flattenAfter) and clones are independent, so
// an engine can keep a snapshot per event.
type State struct {
	base  map[Key]*Entry // shared between clones, never written
	delta map[Key]*Entry // this State's own changes on top of base
	size  int

	create      *Entry
	roomVersion *pdu.RoomVersion
	powerLevels *PowerLevels // nil: no m.room.power_levels event
	joinRule    string

	lastEventID string
	length      int
}

// NewState returns the empty state before a room's m.room.create.
func NewState() *State {
	return &State{base: map[Key]*Entry{}, delta: map[Key]*Entry{}}
}

// Clone returns an independent copy. It shares the immutable parts, so it costs about flattenAfter map inserts.
func (s *State) Clone() *State {
	c := *s
	c.delta = make(map[Key]*Entry, len(s.delta)+1)
	for k, v := range s.delta {
		c.delta[k] = v
	}
	return &c
}

// Get returns the state event for (type, state_key).
func (s *State) Get(eventType, stateKey string) (*Entry, bool) {
	k := Key{eventType, stateKey}
	if e, ok := s.delta[k]; ok {
		return e, true
	}
	e, ok := s.base[k]
	return e, ok
}

// Len is the number of state entries.
func (s *State) Len() int { return s.size }

// Range calls f for every state entry, in no particular order, until f returns false.
func (s *State) Range(f func(Key, *Entry) bool) {
	for k, e := range s.delta {
		if !f(k, e) {
			return
		}
	}
	for k, e := range s.base {
		if _, shadowed := s.delta[k]; shadowed {
			continue
		}
		if !f(k, e) {
			return
		}
	}
}

// Create is the room's m.room.create entry, or nil before it.
func (s *State) Create() *Entry { return s.create }

// Creator is the sender of m.room.create (room version 11 semantics: no content.creator).
func (s *State) Creator() string {
	if s.create == nil {
		return ""
	}
	return s.create.Event.Sender
}

// RoomVersion is the version named by the create event, or nil before it.
func (s *State) RoomVersion() *pdu.RoomVersion { return s.roomVersion }

// Membership returns the user's current membership, "" if the user has no member event (Matrix: leave).
func (s *State) Membership(userID string) string {
	if e, ok := s.Get(TypeMember, userID); ok {
		return e.membership
	}
	return ""
}

// JoinRule is the current join rule (DefaultJoinRule if there is no m.room.join_rules event).
func (s *State) JoinRule() string {
	if s.joinRule == "" {
		return DefaultJoinRule
	}
	return s.joinRule
}

// PowerLevels returns the parsed current power levels, or nil if the room has none.
func (s *State) PowerLevels() *PowerLevels { return s.powerLevels }

// UserPowerLevel is the user's power level: from m.room.power_levels, or 100 for the creator and 0 for everyone else
// when there is none.
func (s *State) UserPowerLevel(userID string) int64 {
	if s.powerLevels == nil {
		if userID == s.Creator() {
			return 100
		}
		return 0
	}
	return s.powerLevels.User(userID)
}

// LastEventID is the ID of the last event applied: the prev_events entry of the next event in the log.
func (s *State) LastEventID() string { return s.lastEventID }

// Length is the number of events applied (state or not).
func (s *State) Length() int { return s.length }

// JoinedMembers returns the user IDs whose membership is join.
func (s *State) JoinedMembers() []string {
	var out []string
	s.Range(func(k Key, e *Entry) bool {
		if k.Type == TypeMember && e.membership == MembershipJoin {
			out = append(out, k.StateKey)
		}
		return true
	})
	return out
}

// Apply advances the state past an accepted event (state or not): it becomes the last event of the log, and a state
// event replaces the entry for its (type, state_key). Call it only after Check accepted the event.
func (s *State) Apply(eventID string, ev *pdu.PDU) error {
	if ev.StateKey != nil {
		e := &Entry{EventID: eventID, Event: ev}
		k := Key{ev.Type, *ev.StateKey}
		switch {
		case ev.Type == TypeMember:
			m, err := contentString(ev, "membership")
			if err != nil {
				return fmt.Errorf("failed to read membership of %s: %w", eventID, err)
			}
			e.membership = m
		case k == Key{TypePowerLevels, ""}:
			pl, err := ParsePowerLevels(ev.Content)
			if err != nil {
				return fmt.Errorf("failed to read power levels of %s: %w", eventID, err)
			}
			s.powerLevels = pl
		case k == Key{TypeJoinRules, ""}:
			// The auth rules accept any content here, so an accepted event must apply: a join_rule that is missing
			// or not a string becomes a rule no join matches, as in Matrix.
			jr, err := contentString(ev, "join_rule")
			if err != nil || jr == "" {
				jr = joinRuleUnreadable
			}
			s.joinRule = jr
		case k == Key{TypeCreate, ""}:
			rv, err := createRoomVersion(ev)
			if err != nil {
				return err
			}
			s.create, s.roomVersion = e, rv
		}
		s.set(k, e)
	}
	s.lastEventID = eventID
	s.length++
	return nil
}

func (s *State) set(k Key, e *Entry) {
	if _, ok := s.Get(k.Type, k.StateKey); !ok {
		s.size++
	}
	s.delta[k] = e
	if len(s.delta) > flattenAfter {
		base := make(map[Key]*Entry, len(s.base)+len(s.delta))
		for k, v := range s.base {
			base[k] = v
		}
		for k, v := range s.delta {
			base[k] = v
		}
		s.base = base
		s.delta = make(map[Key]*Entry, flattenAfter+1)
	}
}

func createRoomVersion(ev *pdu.PDU) (*pdu.RoomVersion, error) {
	id, err := contentString(ev, "room_version")
	if err != nil {
		return nil, fmt.Errorf("failed to read room version of m.room.create: %w", err)
	}
	return pdu.LookupRoomVersion(id)
}

// contentString reads a top-level string of the content; a missing key or another type is an error.
func contentString(ev *pdu.PDU, key string) (string, error) {
	// Fast path for the common canonical shapes, e.g. {"membership":"join"}: avoid building a tree.
	c := ev.Content
	prefix := `{"` + key + `":"`
	if len(c) > len(prefix)+2 && string(c[:len(prefix)]) == prefix {
		rest := c[len(prefix):]
		if end := strings.IndexByte(string(rest), '"'); end >= 0 && end+1 < len(rest) &&
			strings.IndexByte(string(rest[:end]), '\\') < 0 && (string(rest[end+1:]) == "}" || rest[end+1] == ',') {
			return string(rest[:end]), nil
		}
	}
	v, err := canonicaljson.Parse(c)
	if err != nil {
		return "", err
	}
	f, ok := v.Get(key)
	if !ok {
		return "", fmt.Errorf("content.%s is missing", key)
	}
	if f.Kind != canonicaljson.String {
		return "", fmt.Errorf("content.%s is not a string", key)
	}
	return f.Str, nil
}
