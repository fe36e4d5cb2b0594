package auth

import (
	"fmt"
	"slices"
	"testing"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

func TestStateCloneIsIndependent(t *testing.T) {
	s := baseRoom(t)
	// Enough state changes to fold the overlay into a new base at least twice.
	for i := 0; i < 3*flattenAfter; i++ {
		user := fmt.Sprintf("@u%d:p.example", i)
		forceApply(t, s, member(user, user, MembershipJoin))
	}
	before := s.Len()
	snap := s.Clone()
	forceApply(t, s, member(bob, bob, MembershipLeave), member("@late:p.example", "@late:p.example", MembershipJoin))
	if snap.Membership(bob) != MembershipJoin || snap.Membership("@late:p.example") != "" || snap.Len() != before {
		t.Fatalf("snapshot changed: bob %q, late %q, len %d→%d", snap.Membership(bob),
			snap.Membership("@late:p.example"), before, snap.Len())
	}
	if s.Membership(bob) != MembershipLeave || s.Len() != before+1 {
		t.Fatalf("state: bob %q, len %d", s.Membership(bob), s.Len())
	}
	for _, st := range []*State{s, snap} {
		n := 0
		st.Range(func(k Key, e *Entry) bool {
			got, ok := st.Get(k.Type, k.StateKey)
			if !ok || got != e {
				t.Fatalf("Range gave %v, Get disagrees", k)
			}
			n++
			return true
		})
		if n != st.Len() {
			t.Fatalf("Range visited %d entries, Len is %d", n, st.Len())
		}
	}
	if snap.LastEventID() == s.LastEventID() || snap.Length()+2 != s.Length() {
		t.Fatal("log position shared between clones")
	}
	joined := s.JoinedMembers()
	if !slices.Contains(joined, "@late:p.example") || slices.Contains(joined, bob) || len(joined) != 3+3*flattenAfter+1 {
		t.Fatalf("joined members: %d", len(joined))
	}
}

func TestSelectAuthEvents(t *testing.T) {
	s := baseRoom(t)
	ids := func(ev *pdu.PDU) []string { return SelectAuthEvents(s, ev) }
	// Event IDs in baseRoom: $e0 create, $e1 alice, $e2 power levels, $e3 join rules, $e4 mod, $e5 mod2, $e6 bob,
	// $e7 carol (invite), $e8 dan, $e9 erin, $e10 frank.
	cases := []struct {
		name string
		ev   *pdu.PDU
		want []string
	}{
		{"create", createEvent(), nil},
		{"message", message(bob), []string{"$e0", "$e2", "$e6"}},
		{"join from invite: sender = target, once", member(carol, carol, MembershipJoin), []string{"$e0", "$e2", "$e7", "$e3"}},
		{"invite of a stranger", member(bob, newbie, MembershipInvite), []string{"$e0", "$e2", "$e6", "$e3"}},
		{"kick", member(mod, bob, MembershipLeave), []string{"$e0", "$e2", "$e4", "$e6"}},
		{"knock selects join rules (v11)", member(frank, frank, MembershipKnock), []string{"$e0", "$e2", "$e10", "$e3"}},
		{"stranger's message", message(newbie), []string{"$e0", "$e2"}},
	}
	for _, c := range cases {
		if got := ids(c.ev); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestApplyRejectsUnreadableState(t *testing.T) {
	s := baseRoom(t)
	if err := s.Apply("$bad", state(TypeMember, bob, bob, `{"membership":5}`)); err == nil {
		t.Error("member event without a string membership applied")
	}
	if err := s.Apply("$bad", powerLevels(alice, `{"ban":"x"}`)); err == nil {
		t.Error("unreadable power levels applied")
	}
	if err := NewState().Apply("$bad", state(TypeCreate, "", alice, `{"room_version":"10"}`)); err == nil {
		t.Error("create of a non-LM room version applied")
	}
}
