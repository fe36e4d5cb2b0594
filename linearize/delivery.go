package linearize

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// Delivery is what the outbox holds for one server of a room: what an operator needs to see where events are stuck.
type Delivery struct {
	Server string `json:"server"`
	// Queued counts the room's PDUs (as hub) and LPDUs (as participant) not yet acknowledged by the server, the
	// transaction in flight included.
	Queued int `json:"queued"`
	// RetryCount, NextAttempt and LastError describe the server's last failures; zero when its last send worked.
	RetryCount  int       `json:"retry_count,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitzero"`
}

// Deliveries reports, for every other server a room's events go to (the hub when we are a participant, the servers
// with members when we are the hub), what is queued for it and how the last attempt went.
func (e *Engine) Deliveries(ctx context.Context, roomID string) ([]Delivery, error) {
	room, err := e.store.GetRoom(ctx, roomID)
	if err != nil {
		return nil, err
	} else if room == nil {
		return nil, fmt.Errorf("unknown room %s", roomID)
	}
	var servers []string
	if room.Role == RoleHub {
		state, err := e.store.CurrentState(ctx, roomID)
		if err != nil {
			return nil, err
		}
		for _, st := range state {
			if st.Type == "m.room.member" {
				servers = append(servers, pdu.ServerName(st.StateKey))
			}
		}
	} else {
		servers = append(servers, room.HubServer)
	}
	slices.Sort(servers)
	servers = slices.Compact(servers)
	out := make([]Delivery, 0, len(servers))
	for _, server := range servers {
		if server == e.serverName {
			continue
		}
		d := Delivery{Server: server}
		if d.Queued, err = e.store.RoomQueued(ctx, server, roomID); err != nil {
			return nil, err
		}
		var nextAttempt int64
		if d.RetryCount, nextAttempt, d.LastError, err = e.store.DestStatus(ctx, server); err != nil {
			return nil, err
		}
		if nextAttempt > 0 {
			d.NextAttempt = time.UnixMilli(nextAttempt)
		}
		out = append(out, d)
	}
	return out, nil
}
