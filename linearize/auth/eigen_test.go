package auth

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// The eigen fixtures live with package pdu's tests.
var eigenDir = filepath.Join("..", "pdu", "testdata", "interop", "eigen")

type loggedEvent struct {
	id  string
	raw []byte
}

func loadTimeline(t *testing.T, name string) []loggedEvent {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(eigenDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Response struct {
			Body []json.RawMessage `json:"body"`
		} `json:"response"`
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	list := doc.Response.Body
	if list == nil {
		list = doc.Events
	}
	out := make([]loggedEvent, 0, len(list))
	for _, r := range list {
		var withID struct {
			EventID string `json:"event_id"`
		}
		if err := json.Unmarshal(r, &withID); err != nil {
			t.Fatal(err)
		}
		out = append(out, loggedEvent{id: withID.EventID, raw: r})
	}
	return out
}

// TestReplayEigenTimelines replays the hubs' logs in order through the auth rules: everything eigen (and, for 32-*,
// eigen B as a participant) accepted must be accepted, and the auth events we would select must be the ones the hub
// chose.
func TestReplayEigenTimelines(t *testing.T) {
	for _, name := range []string{"20-hub-dump-room.json", "32-independent-hub-room-timeline.json"} {
		t.Run(name, func(t *testing.T) {
			events := loadTimeline(t, name)
			if len(events) < 9 {
				t.Fatalf("only %d events", len(events))
			}
			s := NewState()
			for i, le := range events {
				ev, err := pdu.Parse(le.raw)
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				id, err := ev.EventID()
				if err != nil || id != le.id {
					t.Fatalf("event %d: ID %s (%v), log says %s", i, id, err, le.id)
				}
				if i > 0 {
					if len(ev.PrevEvents) != 1 || ev.PrevEvents[0] != s.LastEventID() {
						t.Errorf("event %d: prev_events %v, the log's previous event is %s", i, ev.PrevEvents, s.LastEventID())
					}
				}
				selected := SelectAuthEvents(s, ev)
				if !sameSet(selected, ev.AuthEvents) {
					t.Errorf("event %d (%s): we select auth events %v, the hub chose %v", i, ev.Type, selected, ev.AuthEvents)
				}
				if err := Check(s, ev); err != nil {
					t.Fatalf("event %d (%s %s): %v", i, ev.Type, ev.StateKeyValue(), err)
				}
				if err := s.Apply(id, ev); err != nil {
					t.Fatal(err)
				}
			}
			if s.JoinRule() != JoinRuleInvite || len(s.JoinedMembers()) != 2 {
				t.Errorf("final state: join rule %s, joined %v", s.JoinRule(), s.JoinedMembers())
			}
		})
	}
}

// TestReplayRejectsOutOfOrder: the same events in a wrong order must not all pass, which shows the replay above
// tests something.
func TestReplayRejectsOutOfOrder(t *testing.T) {
	events := loadTimeline(t, "20-hub-dump-room.json")
	s := NewState()
	// Skip bob's invite (index 5): his join (6) and message (8) must then fail.
	var rejected []int
	for i, le := range events {
		if i == 5 {
			continue
		}
		ev, err := pdu.Parse(le.raw)
		if err != nil {
			t.Fatal(err)
		}
		ev.AuthEvents = nil // rule 4 would catch the gap first; this test is about rules 5 and 6
		if err := Check(s, ev); err != nil {
			if !errors.Is(err, ErrForbidden) {
				t.Fatal(err)
			}
			rejected = append(rejected, i)
			continue
		}
		if err := s.Apply(le.id, ev); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(rejected, []int{6, 8}) {
		t.Fatalf("rejected %v, want [6 8]", rejected)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
