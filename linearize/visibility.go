package linearize

import (
	"encoding/json"
	"fmt"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// Matrix's history visibility, applied to what another server may read of a hub's log as Synapse applies it to
// federation: under "joined" (or "invited") an event is visible to a server only if one of its users was joined (or
// invited or joined) when it was sent; "shared" and "world_readable" show everything. An event sent by the server's
// users, or about their membership, is always visible to it. The draft leaves history visibility undefined
// (§3.5.3.5); this is Matrix's rule, which the bridge's rooms carry over from their DAG side.

// visibilityTracker follows, along the log, a room's history visibility and the memberships of one server's users.
type visibilityTracker struct {
	origin     string
	visibility string
	members    map[string]string
}

// newVisibilityTracker starts a tracker from the state before an event.
func newVisibilityTracker(origin string, stateBefore []*StoredEvent) (*visibilityTracker, error) {
	v := &visibilityTracker{origin: origin, visibility: "shared", members: make(map[string]string)}
	for _, ev := range stateBefore {
		p, err := pdu.Parse(ev.PDU)
		if err != nil {
			return nil, fmt.Errorf("failed to parse state event %s: %w", ev.EventID, err)
		}
		v.apply(p)
	}
	return v, nil
}

// apply moves the tracker past p.
func (v *visibilityTracker) apply(p *pdu.PDU) {
	if p.StateKey == nil {
		return
	}
	switch p.Type {
	case "m.room.history_visibility":
		var c struct {
			HistoryVisibility string `json:"history_visibility"`
		}
		_ = json.Unmarshal(p.Content, &c)
		v.visibility = c.HistoryVisibility
		if v.visibility == "" {
			v.visibility = "shared"
		}
	case "m.room.member":
		if pdu.ServerName(*p.StateKey) == v.origin {
			v.members[*p.StateKey] = membershipOf(p)
		}
	}
}

// visible says whether the server may see p, given the state before it.
func (v *visibilityTracker) visible(p *pdu.PDU) bool {
	if pdu.ServerName(p.Sender) == v.origin || (p.Type == "m.room.member" && p.StateKey != nil && pdu.ServerName(*p.StateKey) == v.origin) {
		return true
	}
	switch v.visibility {
	case "joined", "invited":
	default:
		return true
	}
	for _, m := range v.members {
		if m == "join" || (m == "invite" && v.visibility == "invited") {
			return true
		}
	}
	return false
}
