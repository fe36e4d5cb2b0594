package provider

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

func sampleState() *RoomState {
	max := uint32(10)
	roles := DefaultRoles()
	roles[0].MaxParticipants = &max
	return &RoomState{Roles: roles,
		Participants: []Participant{{"mimi://a.example/u/alice", RoleAdmin}, {"mimi://b.example/u/bob", RoleParticipant}},
		Metadata: RoomMetadata{RoomURI: "mimi://a.example/r/x", Name: "X", Subject: "s", Mood: "m", Avatar: "https://a.example/x.png",
			Descriptions: []RichDescription{{"", "en", "a room"}, {"text/markdown", "de", "*ein* Raum"}}}}
}

func TestRoomStateRoundTrip(t *testing.T) {
	s := sampleState()
	exts := s.Extensions(wire.Extensions{{Type: wire.ExtensionExternalSenders, Data: []byte{0}}})
	if len(exts) != 2 || exts[0].Type != wire.ExtensionExternalSenders {
		t.Fatalf("extensions %+v", exts)
	}
	got, err := DecodeRoomState(exts)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("decoded %+v, want %+v", got, s)
	}
	if !bytes.Equal(got.encode(), s.encode()) {
		t.Fatal("re-encoding differs")
	}
	// Replacing the dictionary keeps one.
	if again := got.WithParticipant("mimi://c.example/u/cathy", RoleObserver).Extensions(exts); len(again) != 2 {
		t.Fatalf("replaced extensions %+v", again)
	}
}

func TestRoomStateRejects(t *testing.T) {
	good := sampleState().encode()
	for name, data := range map[string][]byte{
		"empty":     {},
		"truncated": good[:len(good)-1],
		"trailing":  append(append([]byte{}, good...), 0),
		"missing": func() []byte {
			var w codec.Writer
			w.Vector(func(w *codec.Writer) {
				component(w, ComponentParticipantList, func(w *codec.Writer) { w.Vector(func(*codec.Writer) {}) })
			})
			return w.Bytes()
		}(),
		"unordered": func() []byte {
			var w codec.Writer
			w.Vector(func(w *codec.Writer) {
				component(w, ComponentRoomMetadata, func(*codec.Writer) {})
				component(w, ComponentParticipantList, func(*codec.Writer) {})
			})
			return w.Bytes()
		}(),
	} {
		if _, err := DecodeRoomState(wire.Extensions{{Type: ExtensionAppDataDictionary, Data: data}}); !errors.Is(err, ErrBadRoomState) {
			t.Errorf("%s: %v", name, err)
		}
	}
	dup := sampleState()
	dup.Participants = append(dup.Participants, dup.Participants[0])
	if _, err := DecodeRoomState(dup.Extensions(nil)); !errors.Is(err, ErrBadRoomState) {
		t.Errorf("duplicate participant: %v", err)
	}
	undefined := sampleState()
	undefined.Participants[1].Role = 99
	if _, err := DecodeRoomState(undefined.Extensions(nil)); !errors.Is(err, ErrBadRoomState) {
		t.Errorf("undefined role: %v", err)
	}
	if _, err := DecodeRoomState(nil); !errors.Is(err, ErrBadRoomState) {
		t.Errorf("no extension: %v", err)
	}
}

func TestPolicy(t *testing.T) {
	alice, bob, cathy := "mimi://a.example/u/alice", "mimi://b.example/u/bob", "mimi://c.example/u/cathy"
	base := sampleState()
	counts := map[string]int{alice: 1, bob: 1}
	with := func(extra map[string]int) map[string]int {
		out := map[string]int{}
		for k, v := range counts {
			out[k] = v
		}
		for k, v := range extra {
			out[k] += v
		}
		return out
	}
	for _, tc := range []struct {
		name string
		c    commitChange
		ok   bool
	}{
		{"admin adds", commitChange{committer: alice, before: base, after: base.WithParticipant(cathy, RoleParticipant),
			added: []string{"mimi://c.example/d/cathy/1"}, remaining: with(map[string]int{cathy: 1})}, true},
		{"participant adds participant", commitChange{committer: bob, before: base, after: base.WithParticipant(cathy, RoleParticipant),
			added: []string{"mimi://c.example/d/cathy/1"}, remaining: with(map[string]int{cathy: 1})}, true},
		{"participant adds admin", commitChange{committer: bob, before: base, after: base.WithParticipant(cathy, RoleAdmin),
			added: []string{"mimi://c.example/d/cathy/1"}, remaining: with(map[string]int{cathy: 1})}, false},
		{"client without participant entry", commitChange{committer: alice, before: base, after: base,
			added: []string{"mimi://c.example/d/cathy/1"}, remaining: with(map[string]int{cathy: 1})}, false},
		{"admin removes", commitChange{committer: alice, before: base, after: base.WithParticipant(bob, RoleNone),
			removed: []removal{{"mimi://b.example/d/bob/1", bob, alice}}, remaining: with(map[string]int{bob: -1})}, true},
		{"participant removes admin", commitChange{committer: bob, before: base, after: base.WithParticipant(alice, RoleNone),
			removed: []removal{{"mimi://a.example/d/alice/1", alice, bob}}, remaining: with(map[string]int{alice: -1})}, false},
		{"removal leaving clients", commitChange{committer: alice, before: base, after: base.WithParticipant(bob, RoleNone), remaining: counts}, false},
		{"leave committed by another", commitChange{committer: alice, before: base, after: base.WithParticipant(bob, RoleNone),
			removed: []removal{{"mimi://b.example/d/bob/1", bob, bob}}, remaining: with(map[string]int{bob: -1})}, true},
		{"own new device", commitChange{committer: bob, external: true, before: base, after: base,
			added: []string{"mimi://b.example/d/bob/2"}, remaining: with(map[string]int{bob: 1})}, true},
		{"stranger's external join", commitChange{committer: cathy, external: true, before: base, after: base,
			added: []string{"mimi://c.example/d/cathy/2"}, remaining: with(map[string]int{cathy: 1})}, false},
		{"stranger commits", commitChange{committer: cathy, before: base, after: base, remaining: counts}, false},
		{"rename by participant", commitChange{committer: bob, before: base, after: func() *RoomState { s := base.Clone(); s.Metadata.Name = "Y"; return s }(), remaining: counts}, false},
		{"rename by admin", commitChange{committer: alice, before: base, after: func() *RoomState { s := base.Clone(); s.Metadata.Name = "Y"; return s }(), remaining: counts}, true},
		{"ReInit", commitChange{committer: alice, before: base, after: base, remaining: counts, otherProposals: []string{"5"}}, false},
	} {
		err := checkCommit(&tc.c)
		if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if err := checkSend(base, bob, 1); err != nil {
		t.Errorf("participant sending: %v", err)
	}
	if err := checkSend(base.WithParticipant(bob, RoleObserver), bob, 1); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("observer sending: %v", err)
	}
	if err := checkSend(base, bob, 0); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("sending without a client: %v", err)
	}
}

func FuzzDecodeRoomState(f *testing.F) {
	f.Add(sampleState().encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeRoomState(wire.Extensions{{Type: ExtensionAppDataDictionary, Data: data}})
		if err != nil {
			return
		}
		if again, err := DecodeRoomState(s.Extensions(nil)); err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("re-decoding a decoded state: %v", err)
		}
	})
}
