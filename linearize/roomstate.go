package linearize

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/lmbridge/lmbridge/linearize/auth"
	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// roomState is the engine's in-memory view of a room: its head index, the auth state after the head, and the joined
// users per server for fan-out. A batch of appends works on a clone, which replaces the cached one only once the
// database transaction has committed.
type roomState struct {
	info    *RoomInfo
	headIdx int64
	st      *auth.State
	// joined counts joined users per server.
	joined map[string]int
}

func newRoomState(info *RoomInfo) *roomState {
	return &roomState{info: info, st: auth.NewState(), joined: make(map[string]int)}
}

func (rs *roomState) clone() *roomState {
	return &roomState{info: rs.info, headIdx: rs.headIdx, st: rs.st.Clone(), joined: maps.Clone(rs.joined)}
}

// headID is the event ID at the head of the log: the prev_events entry of the next event.
func (rs *roomState) headID() string {
	return rs.st.LastEventID()
}

// membership returns a user's current membership, or "" if they have no member event.
func (rs *roomState) membership(userID string) string {
	return rs.st.Membership(userID)
}

// isJoined reports whether a server has at least one joined user.
func (rs *roomState) isJoined(server string) bool {
	return rs.joined[server] > 0
}

func membershipOf(p *pdu.PDU) string {
	if p == nil || p.Type != auth.TypeMember {
		return ""
	}
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(p.Content, &c)
	return c.Membership
}

// apply records an appended event.
func (rs *roomState) apply(p *pdu.PDU, eventID string, idx int64) error {
	if p.Type == auth.TypeMember && p.StateKey != nil {
		server := pdu.ServerName(*p.StateKey)
		if rs.st.Membership(*p.StateKey) == auth.MembershipJoin {
			rs.joined[server]--
		}
		if membershipOf(p) == auth.MembershipJoin {
			rs.joined[server]++
		}
		if rs.joined[server] <= 0 {
			delete(rs.joined, server)
		}
	}
	rs.headIdx = idx
	if err := rs.st.Apply(eventID, p); err != nil {
		return fmt.Errorf("failed to apply %s to room state: %w", eventID, err)
	}
	return nil
}

// selectAuthEvents is §5.2.1's selection against the state before p.
func selectAuthEvents(p *pdu.PDU, rs *roomState) []string {
	return auth.SelectAuthEvents(rs.st, p)
}

// checkAuth runs the auth rules against the state before p; a refusal wraps ErrForbidden and the rule's error.
func checkAuth(p *pdu.PDU, rs *roomState) error {
	if err := auth.Check(rs.st, p); err != nil {
		return fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	return nil
}

// stateOrder applies create first and power levels second, so that later entries parse against them.
func stateOrder(t string) int {
	switch t {
	case auth.TypeCreate:
		return 0
	case auth.TypePowerLevels:
		return 1
	case auth.TypeJoinRules:
		return 2
	default:
		return 3
	}
}

// loadRoom returns the cached state of a room, loading it from the database the first time. Call with writeLock held.
func (e *Engine) loadRoom(ctx context.Context, roomID string) (*roomState, error) {
	if rs, ok := e.rooms[roomID]; ok {
		return rs, nil
	}
	info, err := e.store.GetRoom(ctx, roomID)
	if err != nil {
		return nil, err
	} else if info == nil {
		return nil, nil
	}
	rs := newRoomState(info)
	entries, err := e.store.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(entries, func(a, b StateEntry) int { return cmp.Compare(stateOrder(a.Type), stateOrder(b.Type)) })
	for _, entry := range entries {
		if err = e.applyStored(ctx, rs, entry.EventID); err != nil {
			return nil, err
		}
	}
	var headID string
	rs.headIdx, headID, err = e.store.LastEvent(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if headID != "" {
		// The head becomes the last event (prev_events of the next one); reapplying a state head changes nothing.
		if err = e.applyStored(ctx, rs, headID); err != nil {
			return nil, err
		}
	}
	e.rooms[roomID] = rs
	return rs, nil
}

func (e *Engine) applyStored(ctx context.Context, rs *roomState, eventID string) error {
	ev, err := e.store.GetEvent(ctx, eventID)
	if err != nil {
		return err
	} else if ev == nil {
		return fmt.Errorf("event %s of %s is missing", eventID, rs.info.RoomID)
	}
	p, err := parseStored(ev.PDU)
	if err != nil {
		return fmt.Errorf("failed to parse stored event %s: %w", eventID, err)
	}
	idx := rs.headIdx
	if err = rs.apply(p, eventID, idx); err != nil {
		return err
	}
	return nil
}
