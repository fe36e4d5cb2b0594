package auth

import "github.com/lmbridge/lmbridge/linearize/pdu"

// SelectAuthEventKeys returns the state keys whose current events an event's auth_events must list (§5.2.1): none
// for m.room.create; otherwise the create event, the power levels, the sender's member event and, for m.room.member,
// the target's member event and the join rules. Only keys present in s are returned.
//
// Two choices where the draft is thin, both following room version 11: the join rules are selected for knock as well
// as join and invite (the draft lists only join and invite, but the knock rule reads them), and the target's member
// event is not added again when the target is the sender, since the duplicate would fail rule 4 (eigen does the same).
func SelectAuthEventKeys(s *State, ev *pdu.PDU) []Key {
	if ev.Type == TypeCreate {
		return nil
	}
	keys := make([]Key, 0, 5)
	add := func(k Key) {
		if _, ok := s.Get(k.Type, k.StateKey); ok {
			keys = append(keys, k)
		}
	}
	add(Key{TypeCreate, ""})
	add(Key{TypePowerLevels, ""})
	add(Key{TypeMember, ev.Sender})
	if ev.Type == TypeMember && ev.StateKey != nil {
		if *ev.StateKey != ev.Sender {
			add(Key{TypeMember, *ev.StateKey})
		}
		if m, err := contentString(ev, "membership"); err == nil &&
			(m == MembershipJoin || m == MembershipInvite || m == MembershipKnock) {
			add(Key{TypeJoinRules, ""})
		}
	}
	return keys
}

// SelectAuthEvents returns the event IDs for the hub to put in auth_events when it completes ev against the state
// before it.
func SelectAuthEvents(s *State, ev *pdu.PDU) []string {
	keys := SelectAuthEventKeys(s, ev)
	ids := make([]string, len(keys))
	for i, k := range keys {
		e, _ := s.Get(k.Type, k.StateKey)
		ids[i] = e.EventID
	}
	return ids
}
