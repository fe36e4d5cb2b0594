package auth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// ErrForbidden is what every auth failure unwraps to. The federation layer answers it with M_FORBIDDEN.
var ErrForbidden = errors.New("event is not allowed by the auth rules")

// RuleError says which rule of §5.2.3 rejected an event. Rule uses the draft's numbering: "3" for create events,
// "4" for auth_events, "5.join", "5.invite", "5.leave", "5.ban", "5.knock" and "5" for memberships, "6" sender
// joined, "7" power level, "8" state keys starting with @, "9.1"–"9.8" power level changes, and "room" for an event
// of another room.
type RuleError struct {
	Rule   string
	Reason string
}

func (e *RuleError) Error() string { return "auth rule " + e.Rule + " rejected the event: " + e.Reason }

// Unwrap makes errors.Is(err, ErrForbidden) true.
func (e *RuleError) Unwrap() error { return ErrForbidden }

func reject(rule, format string, args ...any) error {
	return &RuleError{Rule: rule, Reason: fmt.Sprintf(format, args...)}
}

// Check runs the auth rules of §5.2.3 against s, the state just before ev in the hub's log. Rules 1 and 2
// (signatures) are pdu.VerifySignatures and must have passed already. ev may be an LPDU (no auth_events yet, so rule
// 4 is skipped) or a PDU.
//
// Where the draft is ambiguous this follows room version 11, as the draft says LM does:
//   - rule 3: content.room_version must be a room version this server knows as LM (the draft says "I.1", but every
//     deployed LM room, eigen's included, uses the unstable identifier);
//   - rule 4 is applied (eigen skips it): auth_events must not repeat a (type, state_key), must list only current
//     events selected by SelectAuthEventKeys, and must list the create event;
//   - rule 5 knock: allowed from invite, as the draft says (v11 refuses it); the join rule must be knock because
//     restricted and knock_restricted are absent from LM;
//   - the default join rule is invite;
//   - rule 9.8: changing or removing another user's level is rejected when the current level is >= the sender's
//     (v11 and eigen; the draft says >, which would let equals demote each other).
func Check(s *State, ev *pdu.PDU) error {
	if ev.Type == TypeCreate {
		return checkCreate(s, ev)
	}
	if s.create == nil {
		return reject("4", "the room has no m.room.create event")
	}
	if ev.RoomID != s.create.Event.RoomID {
		return reject("room", "event is for room %s, not %s", ev.RoomID, s.create.Event.RoomID)
	}
	if ev.AuthEvents != nil {
		if err := checkAuthEvents(s, ev); err != nil {
			return err
		}
	}
	if ev.Type == TypeMember {
		return checkMember(s, ev)
	}
	if m := s.Membership(ev.Sender); m != MembershipJoin {
		return reject("6", "sender %s is not joined (membership %q)", ev.Sender, m)
	}
	senderLevel := s.UserPowerLevel(ev.Sender)
	if need := s.eventLevel(ev.Type, ev.StateKey != nil); senderLevel < need {
		return reject("7", "sender's power level %d is below the %d needed for %s", senderLevel, need, ev.Type)
	}
	if ev.StateKey != nil && strings.HasPrefix(*ev.StateKey, "@") && *ev.StateKey != ev.Sender {
		return reject("8", "state_key %s starts with @ and is not the sender", *ev.StateKey)
	}
	if ev.Type == TypePowerLevels {
		return checkPowerLevels(s, ev, senderLevel)
	}
	return nil
}

func checkCreate(s *State, ev *pdu.PDU) error {
	switch {
	case s.create != nil:
		return reject("3", "the room already has an m.room.create event")
	case len(ev.PrevEvents) > 0:
		return reject("3", "m.room.create has prev_events")
	case ev.StateKey == nil || *ev.StateKey != "":
		return reject("3", "m.room.create must have an empty state_key")
	case pdu.ServerName(ev.RoomID) != ev.SenderServer():
		return reject("3", "room ID %s and sender %s are on different servers", ev.RoomID, ev.Sender)
	}
	rv, err := contentString(ev, "room_version")
	if err != nil {
		return reject("3", "m.room.create has no room_version: %v", err)
	}
	if v, err := pdu.LookupRoomVersion(rv); err != nil || v.Protocol != pdu.ProtocolLinearizedMatrix {
		return reject("3", "room version %q is not a Linearized Matrix version", rv)
	}
	return nil
}

func checkAuthEvents(s *State, ev *pdu.PDU) error {
	selected := SelectAuthEventKeys(s, ev)
	used := make([]bool, len(selected))
	haveCreate := false
	for _, id := range ev.AuthEvents {
		found := false
		for i, k := range selected {
			e, _ := s.Get(k.Type, k.StateKey)
			if e.EventID != id {
				continue
			}
			if used[i] {
				return reject("4", "auth_events lists (%s, %s) twice", k.Type, k.StateKey)
			}
			used[i], found = true, true
			if k.Type == TypeCreate {
				haveCreate = true
			}
			break
		}
		if !found {
			return reject("4", "auth_events entry %s is not a current event the rules select", id)
		}
	}
	if !haveCreate {
		return reject("4", "auth_events does not list the create event")
	}
	return nil
}

func checkMember(s *State, ev *pdu.PDU) error {
	if ev.StateKey == nil {
		return reject("5", "m.room.member has no state_key")
	}
	membership, err := contentString(ev, "membership")
	if err != nil {
		return reject("5", "m.room.member has no valid membership: %v", err)
	}
	target := *ev.StateKey
	sender := ev.Sender
	senderMembership := s.Membership(sender)
	targetMembership := s.Membership(target)
	switch membership {
	case MembershipJoin:
		// As the draft and v11 write it, this checks only the state_key, not the sender.
		if target == s.Creator() && previousIsCreate(s, ev) {
			return nil
		}
		if sender != target {
			return reject("5.join", "sender %s cannot join for %s", sender, target)
		}
		if senderMembership == MembershipBan {
			return reject("5.join", "sender %s is banned", sender)
		}
		switch jr := s.JoinRule(); jr {
		case JoinRuleInvite, JoinRuleKnock:
			if senderMembership == MembershipInvite || senderMembership == MembershipJoin {
				return nil
			}
			return reject("5.join", "join rule is %s and %s is not invited", jr, sender)
		case JoinRulePublic:
			return nil
		default:
			return reject("5.join", "join rule %q does not allow joins", jr)
		}
	case MembershipInvite:
		if senderMembership != MembershipJoin {
			return reject("5.invite", "sender %s is not joined", sender)
		}
		if targetMembership == MembershipJoin || targetMembership == MembershipBan {
			return reject("5.invite", "target %s is %s", target, targetMembership)
		}
		if lvl, need := s.UserPowerLevel(sender), s.inviteLevel(); lvl < need {
			return reject("5.invite", "sender's power level %d is below the invite level %d", lvl, need)
		}
		return nil
	case MembershipLeave:
		if sender == target {
			if senderMembership == MembershipInvite || senderMembership == MembershipJoin ||
				senderMembership == MembershipKnock {
				return nil
			}
			return reject("5.leave", "%s cannot leave with membership %q", sender, senderMembership)
		}
		if senderMembership != MembershipJoin {
			return reject("5.leave", "sender %s is not joined", sender)
		}
		senderLevel, targetLevel := s.UserPowerLevel(sender), s.UserPowerLevel(target)
		if targetMembership == MembershipBan && senderLevel < s.banLevel() {
			return reject("5.leave", "sender's power level %d is below the ban level %d needed to unban",
				senderLevel, s.banLevel())
		}
		if senderLevel >= s.kickLevel() && targetLevel < senderLevel {
			return nil
		}
		return reject("5.leave", "sender's power level %d cannot kick %s at %d (kick level %d)",
			senderLevel, target, targetLevel, s.kickLevel())
	case MembershipBan:
		if senderMembership != MembershipJoin {
			return reject("5.ban", "sender %s is not joined", sender)
		}
		senderLevel, targetLevel := s.UserPowerLevel(sender), s.UserPowerLevel(target)
		if senderLevel >= s.banLevel() && targetLevel < senderLevel {
			return nil
		}
		return reject("5.ban", "sender's power level %d cannot ban %s at %d (ban level %d)",
			senderLevel, target, targetLevel, s.banLevel())
	case MembershipKnock:
		if jr := s.JoinRule(); jr != JoinRuleKnock {
			return reject("5.knock", "join rule is %s, not knock", jr)
		}
		if sender != target {
			return reject("5.knock", "sender %s cannot knock for %s", sender, target)
		}
		if senderMembership == MembershipBan || senderMembership == MembershipJoin {
			return reject("5.knock", "sender %s is %s", sender, senderMembership)
		}
		return nil
	default:
		return reject("5", "unknown membership %q", membership)
	}
}

// previousIsCreate reports whether the event directly follows m.room.create in the log: its prev_events if it has
// them (a PDU), else the state's last event (an event about to be completed).
func previousIsCreate(s *State, ev *pdu.PDU) bool {
	if ev.PrevEvents != nil {
		return len(ev.PrevEvents) == 1 && ev.PrevEvents[0] == s.create.EventID
	}
	return s.lastEventID == s.create.EventID
}

func checkPowerLevels(s *State, ev *pdu.PDU, senderLevel int64) error {
	newPL, err := ParsePowerLevels(ev.Content)
	if err != nil {
		return reject("9.1", "invalid power levels: %v", err)
	}
	old := s.powerLevels
	if old == nil || ev.StateKey == nil || *ev.StateKey != "" {
		return nil
	}
	for _, k := range levelKeys {
		ov, oldOK := old.Levels[k]
		nv, newOK := newPL.Levels[k]
		if oldOK == newOK && ov == nv {
			continue
		}
		if oldOK && ov > senderLevel {
			return reject("9.5", "%s is %d, above the sender's %d", k, ov, senderLevel)
		}
		if newOK && nv > senderLevel {
			return reject("9.5", "%s would be %d, above the sender's %d", k, nv, senderLevel)
		}
	}
	if err := compareLevelMaps(old.Events, newPL.Events, senderLevel, "9.6", "events"); err != nil {
		return err
	}
	for user, nv := range newPL.Users {
		if ov, ok := old.Users[user]; (!ok || ov != nv) && nv > senderLevel {
			return reject("9.7", "users[%s] would be %d, above the sender's %d", user, nv, senderLevel)
		}
	}
	for user, ov := range old.Users {
		if user == ev.Sender {
			continue
		}
		if nv, ok := newPL.Users[user]; ok && nv == ov {
			continue
		}
		if ov >= senderLevel {
			return reject("9.8", "users[%s] is %d, not below the sender's %d", user, ov, senderLevel)
		}
	}
	return nil
}

func compareLevelMaps(old, new map[string]int64, senderLevel int64, rule, name string) error {
	for k, ov := range old {
		nv, ok := new[k]
		if ok && nv == ov {
			continue
		}
		if ov > senderLevel {
			return reject(rule, "%s[%s] is %d, above the sender's %d", name, k, ov, senderLevel)
		}
	}
	for k, nv := range new {
		if ov, ok := old[k]; ok && ov == nv {
			continue
		}
		if nv > senderLevel {
			return reject(rule, "%s[%s] would be %d, above the sender's %d", name, k, nv, senderLevel)
		}
	}
	return nil
}
