package linearize

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// maxBackfill caps one backfill answer.
const maxBackfill = 100

// hubRoom returns a room we are the hub of, or the federation error the draft gives: 404 M_NOT_FOUND for an unknown
// room, 400 M_WRONG_SERVER when another server is its hub.
func (e *Engine) hubRoom(ctx context.Context, roomID string) (*RoomInfo, error) {
	room, err := e.store.GetRoom(ctx, roomID)
	if err != nil {
		return nil, err
	} else if room == nil {
		return nil, federation.Errorf(http.StatusNotFound, federation.ErrCodeNotFound, "unknown room %s", roomID)
	} else if room.Role != RoleHub {
		return nil, federation.Errorf(http.StatusBadRequest, federation.ErrCodeWrongServer,
			"%s is not the hub of %s, %s is", e.serverName, roomID, room.HubServer)
	}
	return room, nil
}

// mayRead reports whether origin may read the event at index in a room's log. A server with a user joined, invited
// or knocking may read the whole log; one whose users have all left or been banned may read it up to its last
// departure, not what came after. Other servers read nothing. History visibility narrows this further, per event
// (visibility.go).
func (e *Engine) mayRead(ctx context.Context, roomID, origin string, index int64) (bool, error) {
	entries, err := e.store.CurrentState(ctx, roomID)
	if err != nil {
		return false, err
	}
	departed := int64(-1)
	for _, st := range entries {
		if st.Type != "m.room.member" || pdu.ServerName(st.StateKey) != origin {
			continue
		}
		switch st.Membership {
		case "join", "invite", "knock":
			return true, nil
		}
		ev, err := e.store.GetEvent(ctx, st.EventID)
		if err != nil {
			return false, err
		} else if ev != nil {
			departed = max(departed, ev.Index)
		}
	}
	return index <= departed, nil
}

func notFound(format string, args ...any) error {
	return federation.Errorf(http.StatusNotFound, federation.ErrCodeNotFound, format, args...)
}

// logEvent returns an event of a hub room's log that origin may read.
func (e *Engine) logEvent(ctx context.Context, origin, roomID, eventID string) (*StoredEvent, error) {
	if _, err := e.hubRoom(ctx, roomID); err != nil {
		return nil, err
	}
	ev, err := e.store.GetEvent(ctx, eventID)
	if err != nil {
		return nil, err
	} else if ev == nil || ev.RoomID != roomID || ev.Index < 1 {
		return nil, notFound("unknown event %s in %s", eventID, roomID)
	}
	if ok, err := e.mayRead(ctx, roomID, origin, ev.Index); err != nil {
		return nil, err
	} else if !ok {
		return nil, notFound("unknown event %s in %s", eventID, roomID)
	}
	tracker, err := e.visibilityBefore(ctx, origin, roomID, ev.Index)
	if err != nil {
		return nil, err
	}
	p, err := pdu.Parse(ev.PDU)
	if err != nil {
		return nil, fmt.Errorf("failed to parse stored event %s: %w", eventID, err)
	}
	if !tracker.visible(p) {
		return nil, notFound("unknown event %s in %s", eventID, roomID)
	}
	return ev, nil
}

// visibilityBefore is a visibility tracker for origin at the state before the event at index.
func (e *Engine) visibilityBefore(ctx context.Context, origin, roomID string, index int64) (*visibilityTracker, error) {
	state, err := e.store.StateBefore(ctx, roomID, index)
	if err != nil {
		return nil, err
	}
	return newVisibilityTracker(origin, state)
}

// GetEvent implements federation.Handler.
func (e inbound) GetEvent(ctx context.Context, origin, eventID string) (json.RawMessage, error) {
	ev, err := e.store.GetEvent(ctx, eventID)
	if err != nil {
		return nil, err
	} else if ev == nil {
		return nil, notFound("unknown event %s", eventID)
	}
	ev, err = e.logEvent(ctx, origin, ev.RoomID, eventID)
	if err != nil {
		return nil, err
	}
	return ev.PDU, nil
}

// State implements federation.Handler: the state before eventID and its auth chain.
func (e inbound) State(ctx context.Context, origin, roomID, eventID string) (*federation.StateResponse, error) {
	state, chain, err := e.stateAndAuthChain(ctx, origin, roomID, eventID)
	if err != nil {
		return nil, err
	}
	resp := &federation.StateResponse{PDUs: make([]json.RawMessage, 0, len(state)), AuthChain: make([]json.RawMessage, 0, len(chain))}
	for _, s := range state {
		resp.PDUs = append(resp.PDUs, s.PDU)
	}
	for _, c := range chain {
		resp.AuthChain = append(resp.AuthChain, c.PDU)
	}
	return resp, nil
}

// StateIDs implements federation.Handler.
func (e inbound) StateIDs(ctx context.Context, origin, roomID, eventID string) (*federation.StateIDsResponse, error) {
	state, chain, err := e.stateAndAuthChain(ctx, origin, roomID, eventID)
	if err != nil {
		return nil, err
	}
	resp := &federation.StateIDsResponse{PDUIDs: make([]string, 0, len(state)), AuthChainIDs: make([]string, 0, len(chain))}
	for _, s := range state {
		resp.PDUIDs = append(resp.PDUIDs, s.EventID)
	}
	for _, c := range chain {
		resp.AuthChainIDs = append(resp.AuthChainIDs, c.EventID)
	}
	return resp, nil
}

// stateAndAuthChain is what /state and /state_ids answer from: the state before eventID and its auth chain, if
// origin may read the room.
func (e *Engine) stateAndAuthChain(ctx context.Context, origin, roomID, eventID string) (state, chain []*StoredEvent, err error) {
	ev, err := e.logEvent(ctx, origin, roomID, eventID)
	if err != nil {
		return nil, nil, err
	}
	if state, err = e.store.StateBefore(ctx, roomID, ev.Index); err != nil {
		return nil, nil, err
	}
	if chain, err = e.authChain(ctx, state); err != nil {
		return nil, nil, err
	}
	return state, chain, nil
}

// authChain returns the recursive auth events of evs, oldest first (by log index).
func (e *Engine) authChain(ctx context.Context, evs []*StoredEvent) ([]*StoredEvent, error) {
	seen := make(map[string]*StoredEvent)
	var queue []string
	push := func(raw json.RawMessage) {
		var f struct {
			AuthEvents []string `json:"auth_events"`
		}
		_ = json.Unmarshal(raw, &f)
		for _, id := range f.AuthEvents {
			if _, ok := seen[id]; !ok {
				seen[id] = nil
				queue = append(queue, id)
			}
		}
	}
	for _, ev := range evs {
		push(ev.PDU)
	}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		ev, err := e.store.GetEvent(ctx, id)
		if err != nil {
			return nil, err
		} else if ev == nil {
			continue
		}
		seen[id] = ev
		push(ev.PDU)
	}
	out := make([]*StoredEvent, 0, len(seen))
	for _, ev := range seen {
		if ev != nil {
			out = append(out, ev)
		}
	}
	slices.SortFunc(out, func(a, b *StoredEvent) int { return int(a.Index - b.Index) })
	return out, nil
}

// Backfill implements federation.Handler: up to limit events, oldest first, ending with the newest of from.
func (e inbound) Backfill(ctx context.Context, origin, roomID string, from []string, limit int) (*federation.BackfillResponse, error) {
	if _, err := e.hubRoom(ctx, roomID); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > maxBackfill {
		limit = maxBackfill
	}
	var newest int64 = -1
	for _, id := range from {
		ev, err := e.logEvent(ctx, origin, roomID, id)
		if err != nil {
			return nil, err
		}
		newest = max(newest, ev.Index)
	}
	if newest < 0 {
		return nil, federation.Errorf(http.StatusBadRequest, federation.ErrCodeBadJSON, "backfill needs at least one v")
	}
	evs, err := e.store.EventsUpTo(ctx, roomID, newest, limit)
	if err != nil {
		return nil, err
	}
	resp := &federation.BackfillResponse{PDUs: make([]json.RawMessage, 0, len(evs))}
	if len(evs) == 0 {
		return resp, nil
	}
	// evs is newest first; the visibility is followed oldest first from the state before the oldest.
	tracker, err := e.visibilityBefore(ctx, origin, roomID, evs[len(evs)-1].Index)
	if err != nil {
		return nil, err
	}
	for i := len(evs) - 1; i >= 0; i-- {
		raw, err := visibleCopy(tracker, evs[i])
		if err != nil {
			return nil, err
		}
		resp.PDUs = append(resp.PDUs, raw)
	}
	return resp, nil
}

// visibleCopy returns ev as the tracker's server may see it: whole, or redacted (its place in the log kept, its
// content not) when the history visibility hides it, and moves the tracker past it.
func visibleCopy(tracker *visibilityTracker, ev *StoredEvent) (json.RawMessage, error) {
	p, err := pdu.Parse(ev.PDU)
	if err != nil {
		return nil, fmt.Errorf("failed to parse stored event %s: %w", ev.EventID, err)
	}
	visible := tracker.visible(p)
	tracker.apply(p)
	if visible {
		return ev.PDU, nil
	}
	redacted, err := p.Redacted()
	if err != nil {
		return nil, fmt.Errorf("failed to redact %s: %w", ev.EventID, err)
	}
	raw, err := redacted.Canonical()
	if err != nil {
		return nil, fmt.Errorf("failed to encode redacted %s: %w", ev.EventID, err)
	}
	return raw, nil
}
