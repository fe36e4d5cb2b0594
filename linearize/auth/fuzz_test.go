package auth

import (
	"testing"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// FuzzCheck: any event that parses can be checked and selected for without a panic, and an allowed event applies.
func FuzzCheck(f *testing.F) {
	for _, ev := range []*pdu.PDU{
		message(bob), member(carol, carol, MembershipJoin), member(mod, bob, MembershipBan),
		powerLevels(mod, basePL), state("m.custom", mod, mod, `{}`), createEvent(),
	} {
		ev.Hashes.SHA256 = "x"
		ev.Signatures = map[string]map[string]string{}
		ev.AuthEvents, ev.PrevEvents = []string{"$e0"}, []string{"$e1"}
		raw, err := ev.Canonical()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte(`{"room_id":"!room:hub.example","type":"m.room.member","state_key":"@bob:p.example","sender":"@bob:p.example",` +
		`"origin_server_ts":1,"content":{"membership":"join"` + `,"x":1},"hashes":{"sha256":"x"},"signatures":{},"auth_events":[],"prev_events":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := pdu.Parse(data)
		if err != nil {
			return
		}
		s := baseRoomF(t)
		_ = SelectAuthEvents(s, ev)
		if Check(s, ev) == nil {
			if err := s.Apply("$fuzz", ev); err != nil {
				t.Fatalf("allowed event does not apply: %v", err)
			}
		}
	})
}

// baseRoomF is baseRoom for a fuzz target.
func baseRoomF(t *testing.T) *State { return baseRoom(t) }
