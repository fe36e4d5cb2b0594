package linearize

import (
	"context"
	"errors"
	"fmt"

	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/remote"
)

var _ remote.HistoryReader = (*Engine)(nil)

// maxHistory caps what RoomHistory returns, whatever the caller asks for.
const maxHistory = 1000

// RoomHistory returns up to limit events of a room that came before the first event of our log (remote.HistoryReader),
// oldest first: in a room another server hosts, the events before our join, asked of the hub with /backfill and
// verified like any PDU (a redacted event comes back redacted). The hub decides what we may see (its history
// visibility). A room we host has no history we did not log, so it returns nothing.
func (e *Engine) RoomHistory(ctx context.Context, roomID remote.RoomID, limit int) ([]*remote.Event, error) {
	room, err := e.store.GetRoom(ctx, string(roomID))
	if err != nil {
		return nil, err
	} else if room == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownRoom, roomID)
	} else if room.Role == RoleHub || limit <= 0 {
		return nil, nil
	}
	limit = min(limit, maxHistory)
	first, err := e.store.EventsAfter(ctx, string(roomID), 0, 1)
	if err != nil {
		return nil, err
	} else if len(first) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotJoined, roomID)
	}
	p, err := parseEvent(first[0].PDU)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the first event of %s: %w", roomID, err)
	}
	if len(p.PrevEvents) == 0 {
		return nil, nil
	}
	want := p.PrevEvents[0]
	var out []*remote.Event
	for len(out) < limit {
		resp, err := e.remote.Backfill(ctx, room.HubServer, string(roomID), []string{want}, min(limit-len(out), maxBackfill))
		if err != nil {
			return nil, seamError(fmt.Errorf("failed to backfill %s from %s: %w", roomID, room.HubServer, err))
		}
		byID := make(map[string]*remote.Event, len(resp.PDUs))
		prev := make(map[string]string, len(resp.PDUs))
		for _, raw := range resp.PDUs {
			ev, prevID, err := e.historyEvent(ctx, string(roomID), raw)
			if err != nil {
				return nil, err
			}
			byID[ev.EventID] = ev
			prev[ev.EventID] = prevID
		}
		// The chain from want, walked by prev pointers, so that the answer's own order does not matter.
		progressed := false
		for len(out) < limit {
			ev, ok := byID[want]
			if !ok {
				break
			}
			out = append(out, ev)
			progressed = true
			if want = prev[ev.EventID]; want == "" {
				break
			}
		}
		if want == "" || len(out) >= limit {
			break
		}
		if !progressed {
			if len(out) > 0 {
				break // the hub shows no more than this (history visibility)
			}
			return nil, fmt.Errorf("%w: the hub's backfill of %s did not hold %s", ErrBadRemoteAnswer, roomID, want)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// historyEvent verifies one PDU of a backfill answer and returns it in listener form, with its prev event.
func (e *Engine) historyEvent(ctx context.Context, roomID string, raw []byte) (*remote.Event, string, error) {
	p, err := parseEvent(raw)
	if err != nil {
		return nil, "", fmt.Errorf("%w: backfilled event: %w", ErrBadRemoteAnswer, err)
	}
	if p.RoomID != roomID {
		return nil, "", fmt.Errorf("%w: backfill of %s holds an event of %s", ErrBadRemoteAnswer, roomID, p.RoomID)
	}
	if _, err = verifyPDU(ctx, &p, e.keys, false); err != nil {
		return nil, "", fmt.Errorf("%w: backfilled event: %w", ErrBadRemoteAnswer, err)
	}
	evID, err := eventID(p)
	if err != nil {
		return nil, "", err
	}
	canon, err := p.Canonical()
	if err != nil {
		return nil, "", err
	}
	prevID := ""
	if len(p.PrevEvents) > 0 {
		prevID = p.PrevEvents[0]
	}
	return &remote.Event{RoomID: roomID, EventID: evID, Type: p.Type, StateKey: p.StateKey, Sender: p.Sender,
		OriginServerTS: p.OriginServerTS, Content: p.Content, PDU: canon}, prevID, nil
}

var _ remote.ServerProber = (*Engine)(nil)

// ProbeServer asks another LM server for its signing keys, unauthenticated as any server may, through the same
// transport and address blocklist as every federation request (remote.ServerProber). It is how a user learns whether
// a server answers before inviting its users.
func (e *Engine) ProbeServer(ctx context.Context, server remote.ServerName) (*remote.ServerInfo, error) {
	if server == "" {
		return nil, errors.New("no server name")
	}
	client := federation.NewClient(e.serverName, e.key, federation.ClientOptions{AllowHTTPPeers: e.cfg.AllowHTTPPeers,
		BlockedRanges: e.cfg.BlockedRanges()})
	keys, err := client.ServerKeys(ctx, string(server))
	if err != nil {
		return nil, seamError(fmt.Errorf("failed to fetch the keys of %s: %w", server, err))
	}
	info := &remote.ServerInfo{Server: remote.ServerName(keys.ServerName), ValidUntil: keys.ValidUntilTS}
	for keyID := range keys.VerifyKeys {
		info.KeyIDs = append(info.KeyIDs, keyID)
	}
	return info, nil
}
