package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

const (
	roomID = "!room:hub.example"
	alice  = "@alice:hub.example" // creator, 100
	mod    = "@mod:hub.example"   // 50
	mod2   = "@mod2:hub.example"  // 50
	bob    = "@bob:p.example"     // joined, 10
	carol  = "@carol:p.example"   // invited
	dan    = "@dan:p.example"     // banned
	erin   = "@erin:p.example"    // knocked
	frank  = "@frank:p.example"   // left
	newbie = "@new:p.example"     // no membership
)

const basePL = `{"users":{"@alice:hub.example":100,"@mod:hub.example":50,"@mod2:hub.example":50,"@bob:p.example":10},` +
	`"events":{"m.room.power_levels":50,"m.room.name":75}}`

func mk(sender, typ string, stateKey *string, content string) *pdu.PDU {
	p := &pdu.PDU{RoomID: roomID, Type: typ, StateKey: stateKey, Sender: sender, OriginServerTS: 1}
	if err := p.SetContent(json.RawMessage(content)); err != nil {
		panic(err)
	}
	return p
}

func state(typ, stateKey, sender, content string) *pdu.PDU {
	return mk(sender, typ, pdu.StringPtr(stateKey), content)
}

func member(sender, target, membership string) *pdu.PDU {
	return state(TypeMember, target, sender, fmt.Sprintf(`{"membership":%q}`, membership))
}

func message(sender string) *pdu.PDU {
	return mk(sender, "m.room.message", nil, `{"msgtype":"m.text","body":"hi"}`)
}

func powerLevels(sender, content string) *pdu.PDU { return state(TypePowerLevels, "", sender, content) }

func joinRules(rule string) *pdu.PDU {
	return state(TypeJoinRules, "", alice, fmt.Sprintf(`{"join_rule":%q}`, rule))
}

func createEvent() *pdu.PDU {
	return state(TypeCreate, "", alice, `{"room_version":"`+pdu.RoomVersionLM02+`"}`)
}

// forceApply builds a state without running the rules, so that a test can start from any situation.
func forceApply(t *testing.T, s *State, events ...*pdu.PDU) {
	t.Helper()
	for _, ev := range events {
		if err := s.Apply(fmt.Sprintf("$e%d", s.Length()), ev); err != nil {
			t.Fatal(err)
		}
	}
}

// baseRoom: alice created it; mod, mod2 and bob are joined; carol invited, dan banned, erin knocking, frank left.
func baseRoom(t *testing.T) *State {
	s := NewState()
	forceApply(t, s,
		createEvent(),
		member(alice, alice, MembershipJoin),
		powerLevels(alice, basePL),
		joinRules(JoinRuleInvite),
		member(mod, mod, MembershipJoin),
		member(mod2, mod2, MembershipJoin),
		member(bob, bob, MembershipJoin),
		member(alice, carol, MembershipInvite),
		member(alice, dan, MembershipBan),
		member(erin, erin, MembershipKnock),
		member(frank, frank, MembershipLeave),
	)
	return s
}

func TestCheckRules(t *testing.T) {
	withPrev := func(ev *pdu.PDU, prev ...string) *pdu.PDU { ev.PrevEvents = prev; return ev }
	withAuth := func(ev *pdu.PDU, auth ...string) *pdu.PDU {
		ev.AuthEvents = auth
		ev.PrevEvents = []string{"$x"}
		return ev
	}
	otherRoom := message(bob)
	otherRoom.RoomID = "!other:hub.example"
	noStateKeyMember := mk(bob, TypeMember, nil, `{"membership":"join"}`)
	badRoomDomain := createEvent()
	badRoomDomain.RoomID = "!room:elsewhere.example"

	cases := []struct {
		name  string
		fresh bool       // start from an empty room instead of baseRoom
		setup []*pdu.PDU // forced into the state first
		event *pdu.PDU
		rule  string // "" = allowed
	}{
		// Rule 3: m.room.create.
		{name: "create allowed", fresh: true, event: createEvent()},
		{name: "create with prev_events", fresh: true, event: withPrev(createEvent(), "$p"), rule: "3"},
		{name: "create with empty prev_events", fresh: true, event: withPrev(createEvent()), rule: ""},
		{name: "create on another server's room ID", fresh: true, event: badRoomDomain, rule: "3"},
		{name: "create with unknown room version", fresh: true,
			event: state(TypeCreate, "", alice, `{"room_version":"11"}`), rule: "3"},
		{name: "create with I.1", fresh: true, event: state(TypeCreate, "", alice, `{"room_version":"I.1"}`)},
		{name: "create without room version", fresh: true, event: state(TypeCreate, "", alice, `{}`), rule: "3"},
		{name: "second create", event: createEvent(), rule: "3"},
		{name: "event before create", fresh: true, event: message(alice), rule: "4"},
		{name: "event of another room", event: otherRoom, rule: "room"},

		// Rule 4: auth_events.
		{name: "auth events as selected", event: withAuth(message(bob), "$e0", "$e2", "$e6")},
		{name: "auth events subset with create", event: withAuth(message(bob), "$e0")},
		{name: "auth events repeated", event: withAuth(message(bob), "$e0", "$e2", "$e2"), rule: "4"},
		{name: "auth events with unselected join rules", event: withAuth(message(bob), "$e0", "$e3"), rule: "4"},
		{name: "auth events with unknown event", event: withAuth(message(bob), "$e0", "$nope"), rule: "4"},
		{name: "auth events without create", event: withAuth(message(bob), "$e2", "$e6"), rule: "4"},

		// Rule 5: memberships.
		{name: "member without state_key", event: noStateKeyMember, rule: "5"},
		{name: "member without membership", event: state(TypeMember, bob, bob, `{}`), rule: "5"},
		{name: "unknown membership", event: member(bob, bob, "dance"), rule: "5"},

		{name: "join: creator right after create", fresh: true, setup: []*pdu.PDU{createEvent()},
			event: member(alice, alice, MembershipJoin)},
		{name: "join: creator right after create (PDU)", fresh: true, setup: []*pdu.PDU{createEvent()},
			event: withPrev(member(alice, alice, MembershipJoin), "$e0")},
		{name: "join: creator right after create, not next", fresh: true,
			setup: []*pdu.PDU{createEvent(), state("m.room.topic", "", alice, `{}`)},
			event: member(alice, alice, MembershipJoin), rule: "5.join"},
		{name: "join: other user right after create", fresh: true, setup: []*pdu.PDU{createEvent()},
			event: member(bob, bob, MembershipJoin), rule: "5.join"},
		{name: "join: for someone else", setup: []*pdu.PDU{joinRules(JoinRulePublic)},
			event: member(bob, newbie, MembershipJoin), rule: "5.join"},
		{name: "join: banned", setup: []*pdu.PDU{joinRules(JoinRulePublic)},
			event: member(dan, dan, MembershipJoin), rule: "5.join"},
		{name: "join: invite rule, invited", event: member(carol, carol, MembershipJoin)},
		{name: "join: invite rule, already joined", event: member(bob, bob, MembershipJoin)},
		{name: "join: invite rule, not invited", event: member(frank, frank, MembershipJoin), rule: "5.join"},
		{name: "join: invite rule, knocked only", event: member(erin, erin, MembershipJoin), rule: "5.join"},
		{name: "join: default rule is invite", fresh: true,
			setup: []*pdu.PDU{createEvent(), member(alice, alice, MembershipJoin)},
			event: member(newbie, newbie, MembershipJoin), rule: "5.join"},
		{name: "join: knock rule, invited", setup: []*pdu.PDU{joinRules(JoinRuleKnock)},
			event: member(carol, carol, MembershipJoin)},
		{name: "join: knock rule, not invited", setup: []*pdu.PDU{joinRules(JoinRuleKnock)},
			event: member(erin, erin, MembershipJoin), rule: "5.join"},
		{name: "join: public", setup: []*pdu.PDU{joinRules(JoinRulePublic)}, event: member(frank, frank, MembershipJoin)},
		{name: "join: restricted is absent from LM", setup: []*pdu.PDU{joinRules("restricted")},
			event: member(frank, frank, MembershipJoin), rule: "5.join"},

		{name: "invite: by joined user at invite level", event: member(bob, newbie, MembershipInvite)},
		{name: "invite: by user not joined", event: member(frank, newbie, MembershipInvite), rule: "5.invite"},
		{name: "invite: target joined", event: member(mod, bob, MembershipInvite), rule: "5.invite"},
		{name: "invite: target banned", event: member(mod, dan, MembershipInvite), rule: "5.invite"},
		{name: "invite: target knocking", event: member(mod, erin, MembershipInvite)},
		{name: "invite: below invite level", setup: []*pdu.PDU{powerLevels(alice, `{"invite":50,"users":{"@alice:hub.example":100,"@mod:hub.example":50}}`)},
			event: member(bob, newbie, MembershipInvite), rule: "5.invite"},
		{name: "invite: at raised invite level", setup: []*pdu.PDU{powerLevels(alice, `{"invite":50,"users":{"@alice:hub.example":100,"@mod:hub.example":50}}`)},
			event: member(mod, newbie, MembershipInvite)},

		{name: "leave: self from join", event: member(bob, bob, MembershipLeave)},
		{name: "leave: self from invite", event: member(carol, carol, MembershipLeave)},
		{name: "leave: self from knock", event: member(erin, erin, MembershipLeave)},
		{name: "leave: self from leave", event: member(frank, frank, MembershipLeave), rule: "5.leave"},
		{name: "leave: self from ban", event: member(dan, dan, MembershipLeave), rule: "5.leave"},
		{name: "leave: kick by user not joined", event: member(frank, bob, MembershipLeave), rule: "5.leave"},
		{name: "kick: by moderator", event: member(mod, bob, MembershipLeave)},
		{name: "kick: below kick level", event: member(bob, carol, MembershipLeave), rule: "5.leave"},
		{name: "kick: target at same level", event: member(mod, mod2, MembershipLeave), rule: "5.leave"},
		{name: "kick: target above", event: member(mod, alice, MembershipLeave), rule: "5.leave"},
		{name: "unban: at ban level", event: member(mod, dan, MembershipLeave)},
		{name: "unban: below ban level", setup: []*pdu.PDU{powerLevels(alice, `{"ban":60,"kick":0,"users":{"@alice:hub.example":100,"@mod:hub.example":50}}`)},
			event: member(mod, dan, MembershipLeave), rule: "5.leave"},

		{name: "ban: by moderator", event: member(mod, bob, MembershipBan)},
		{name: "ban: someone not in the room", event: member(mod, newbie, MembershipBan)},
		{name: "ban: by user not joined", event: member(frank, bob, MembershipBan), rule: "5.ban"},
		{name: "ban: below ban level", event: member(bob, carol, MembershipBan), rule: "5.ban"},
		{name: "ban: target at same level", event: member(mod, mod2, MembershipBan), rule: "5.ban"},

		{name: "knock: knock rule", setup: []*pdu.PDU{joinRules(JoinRuleKnock)}, event: member(newbie, newbie, MembershipKnock)},
		{name: "knock: from invite (LM allows it)", setup: []*pdu.PDU{joinRules(JoinRuleKnock)},
			event: member(carol, carol, MembershipKnock)},
		{name: "knock: from leave", setup: []*pdu.PDU{joinRules(JoinRuleKnock)}, event: member(frank, frank, MembershipKnock)},
		{name: "knock: invite rule", event: member(newbie, newbie, MembershipKnock), rule: "5.knock"},
		{name: "knock: for someone else", setup: []*pdu.PDU{joinRules(JoinRuleKnock)},
			event: member(bob, newbie, MembershipKnock), rule: "5.knock"},
		{name: "knock: joined", setup: []*pdu.PDU{joinRules(JoinRuleKnock)}, event: member(bob, bob, MembershipKnock), rule: "5.knock"},
		{name: "knock: banned", setup: []*pdu.PDU{joinRules(JoinRuleKnock)}, event: member(dan, dan, MembershipKnock), rule: "5.knock"},

		// Rule 6.
		{name: "message by joined user", event: message(bob)},
		{name: "message by user who left", event: message(frank), rule: "6"},
		{name: "message by invited user", event: message(carol), rule: "6"},
		{name: "message by stranger", event: message(newbie), rule: "6"},

		// Rule 7.
		{name: "state at state_default", event: state("m.room.topic", "", mod, `{"topic":"t"}`)},
		{name: "state below state_default", event: state("m.room.topic", "", bob, `{"topic":"t"}`), rule: "7"},
		{name: "state below events entry", event: state("m.room.name", "", mod, `{"name":"n"}`), rule: "7"},
		{name: "state at events entry", event: state("m.room.name", "", alice, `{"name":"n"}`)},
		{name: "message below events_default", setup: []*pdu.PDU{powerLevels(alice, `{"events_default":20,"users":{"@alice:hub.example":100,"@bob:p.example":10}}`)},
			event: message(bob), rule: "7"},
		{name: "no power levels: creator 100", fresh: true,
			setup: []*pdu.PDU{createEvent(), member(alice, alice, MembershipJoin)},
			event: state("m.room.name", "", alice, `{"name":"n"}`)},
		{name: "no power levels: state_default 0", fresh: true,
			setup: []*pdu.PDU{createEvent(), member(alice, alice, MembershipJoin), member(bob, bob, MembershipJoin)},
			event: state("m.room.name", "", bob, `{"name":"n"}`)},

		// Rule 8.
		{name: "state key of the sender", event: state("m.custom", mod, mod, `{}`)},
		{name: "state key of another user", event: state("m.custom", bob, mod, `{}`), rule: "8"},
		{name: "state key not a user", event: state("m.custom", "bob", mod, `{}`)},

		// Rule 9.
		{name: "pl: first power levels", fresh: true,
			setup: []*pdu.PDU{createEvent(), member(alice, alice, MembershipJoin)},
			event: powerLevels(alice, `{"users":{"@alice:hub.example":100,"@bob:p.example":100}}`)},
		{name: "pl: unchanged", event: powerLevels(mod, basePL)},
		{name: "pl: string level", event: powerLevels(mod, `{"ban":"50"}`), rule: "9.1"},
		{name: "pl: events value not an integer", event: powerLevels(mod, `{"events":{"m.x":"1"}}`), rule: "9.1"},
		{name: "pl: users key not a user ID", event: powerLevels(mod, `{"users":{"bob":1}}`), rule: "9.1"},
		{name: "pl: lower kick within own level", event: powerLevels(mod, plWith(`"kick":40,`))},
		{name: "pl: raise ban above own level", event: powerLevels(mod, plWith(`"ban":60,`)), rule: "9.5"},
		{name: "pl: change ban currently above own level",
			setup: []*pdu.PDU{powerLevels(alice, plWith(`"ban":75,`))},
			event: powerLevels(mod, plWith(`"ban":50,`)), rule: "9.5"},
		{name: "pl: remove ban currently above own level",
			setup: []*pdu.PDU{powerLevels(alice, plWith(`"ban":75,`))},
			event: powerLevels(mod, basePL), rule: "9.5"},
		{name: "pl: add events entry within own level",
			event: powerLevels(mod, `{"users":{"@alice:hub.example":100,"@mod:hub.example":50,"@mod2:hub.example":50,"@bob:p.example":10},"events":{"m.room.power_levels":50,"m.room.name":75,"m.room.topic":40}}`)},
		{name: "pl: add events entry above own level",
			event: powerLevels(mod, `{"users":{"@alice:hub.example":100,"@mod:hub.example":50,"@mod2:hub.example":50,"@bob:p.example":10},"events":{"m.room.power_levels":50,"m.room.name":75,"m.room.topic":60}}`),
			rule:  "9.6"},
		{name: "pl: remove events entry above own level",
			event: powerLevels(mod, `{"users":{"@alice:hub.example":100,"@mod:hub.example":50,"@mod2:hub.example":50,"@bob:p.example":10},"events":{"m.room.power_levels":50}}`),
			rule:  "9.6"},
		{name: "pl: raise user within own level",
			event: powerLevels(mod, `{"users":{"@alice:hub.example":100,"@mod:hub.example":50,"@mod2:hub.example":50,"@bob:p.example":40},"events":{"m.room.power_levels":50,"m.room.name":75}}`)},
		{name: "pl: raise user above own level",
			event: powerLevels(mod, `{"users":{"@alice:hub.example":100,"@mod:hub.example":50,"@mod2:hub.example":50,"@bob:p.example":60},"events":{"m.room.power_levels":50,"m.room.name":75}}`),
			rule:  "9.7"},
		{name: "pl: raise own level",
			event: powerLevels(mod, `{"users":{"@alice:hub.example":100,"@mod:hub.example":60,"@mod2:hub.example":50,"@bob:p.example":10},"events":{"m.room.power_levels":50,"m.room.name":75}}`),
			rule:  "9.7"},
		{name: "pl: lower own level",
			event: powerLevels(mod, `{"users":{"@alice:hub.example":100,"@mod:hub.example":0,"@mod2:hub.example":50,"@bob:p.example":10},"events":{"m.room.power_levels":50,"m.room.name":75}}`)},
		{name: "pl: demote a user below",
			event: powerLevels(mod, `{"users":{"@alice:hub.example":100,"@mod:hub.example":50,"@mod2:hub.example":50},"events":{"m.room.power_levels":50,"m.room.name":75}}`)},
		{name: "pl: demote a user at the same level (9.8 >=)",
			event: powerLevels(mod, `{"users":{"@alice:hub.example":100,"@mod:hub.example":50,"@mod2:hub.example":0,"@bob:p.example":10},"events":{"m.room.power_levels":50,"m.room.name":75}}`),
			rule:  "9.8"},
		{name: "pl: remove a user above",
			event: powerLevels(mod, `{"users":{"@mod:hub.example":50,"@mod2:hub.example":50,"@bob:p.example":10},"events":{"m.room.power_levels":50,"m.room.name":75}}`),
			rule:  "9.8"},
		{name: "pl: below the level to send power levels", event: powerLevels(bob, basePL), rule: "7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s *State
			if c.fresh {
				s = NewState()
			} else {
				s = baseRoom(t)
			}
			forceApply(t, s, c.setup...)
			err := Check(s, c.event)
			if c.rule == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			var re *RuleError
			if !errors.As(err, &re) {
				t.Fatalf("got %v, want rejection by rule %s", err, c.rule)
			}
			if re.Rule != c.rule {
				t.Fatalf("rejected by rule %s (%v), want rule %s", re.Rule, err, c.rule)
			}
			if !errors.Is(err, ErrForbidden) {
				t.Fatal("RuleError does not unwrap to ErrForbidden")
			}
		})
	}
}

// plWith is basePL with extra top-level properties inserted.
func plWith(props string) string {
	return "{" + props + basePL[1:]
}

func TestUnreadableJoinRuleAppliesAndBlocksJoins(t *testing.T) {
	s := baseRoom(t)
	ev := state(TypeJoinRules, "", alice, `{"join_rule":5}`)
	if err := Check(s, ev); err != nil {
		t.Fatal(err)
	}
	forceApply(t, s, ev)
	if err := Check(s, member(carol, carol, MembershipJoin)); err == nil {
		t.Fatal("join allowed under an unreadable join rule")
	}
}
