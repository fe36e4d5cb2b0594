package dagview

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Dendrite (v0.13.8) never pushes a redaction to application services: its roomserver reports one as
// OutputTypeRedactedEvent, and its appservice consumer forwards only new room events and invites. The redaction is
// in the room's timeline all the same, so PollRedactions reads the latest events of each room the bot is in and queues
// the redactions the view has not seen, through the appservice inbox like a pushed event (the inbox drops one it has,
// so on Synapse, which pushes them, this finds nothing new).

const (
	// redactionPollPage is how many of a room's latest events PollRedactions reads.
	redactionPollPage = 50

	hasEventQuery = `SELECT COUNT(*) FROM dagview_event WHERE room_id=$1 AND event_id=$2`
)

// PollRedactions queues, for every room the bot is joined to, the redactions among its latest events that the view
// has not seen and whose target it has: a redaction of an event from before the bot's time is nobody's business
// here. It returns how many it queued.
func (v *View) PollRedactions(ctx context.Context) (int, error) {
	rooms, err := v.Rooms(ctx)
	if err != nil {
		return 0, err
	}
	client := v.as.Bot().Client
	total := 0
	for _, room := range rooms {
		if !room.BotJoined {
			continue
		}
		page, err := client.Messages(ctx, room.ID, "", "", mautrix.DirectionBackward, nil, redactionPollPage)
		if err != nil {
			if ctx.Err() != nil {
				return total, ctx.Err()
			}
			zerolog.Ctx(ctx).Warn().Err(err).Stringer("room_id", room.ID).Msg("Failed to read the latest events for redactions")
			continue
		}
		var found []*event.Event
		// The page is newest first; the inbox wants them in the room's order.
		for i := len(page.Chunk) - 1; i >= 0; i-- {
			evt := page.Chunk[i]
			if evt.Type != event.EventRedaction {
				continue
			}
			target := evt.Redacts
			if target == "" {
				target = redactsOf(evt)
			}
			if target == "" {
				continue
			}
			if seen, err := v.hasEvent(ctx, room.ID, evt.ID); err != nil || seen {
				continue
			}
			if known, err := v.hasEvent(ctx, room.ID, target); err != nil || !known {
				continue
			}
			if evt.RoomID == "" {
				evt.RoomID = room.ID
			}
			found = append(found, evt)
		}
		if len(found) == 0 {
			continue
		}
		n, err := v.as.Enqueue(ctx, "redactions", found)
		if err != nil {
			return total, err
		}
		if n > 0 {
			zerolog.Ctx(ctx).Info().Stringer("room_id", room.ID).Int("redactions", n).Msg("Found redactions the homeserver did not push")
		}
		total += n
	}
	return total, nil
}

func (v *View) hasEvent(ctx context.Context, roomID id.RoomID, eventID id.EventID) (bool, error) {
	var n int
	if err := v.db.QueryRow(ctx, hasEventQuery, roomID, eventID).Scan(&n); err != nil {
		return false, fmt.Errorf("failed to look up %s: %w", eventID, err)
	}
	return n > 0, nil
}

// redactsOf reads a redaction's target from its content, where room versions 11 and later put it.
func redactsOf(evt *event.Event) id.EventID {
	var c struct {
		Redacts id.EventID `json:"redacts"`
	}
	_ = json.Unmarshal(evt.Content.VeryRaw, &c)
	return c.Redacts
}

// RunRedactionPoll runs PollRedactions every interval until ctx ends; an interval of 0 or less does nothing.
func (v *View) RunRedactionPoll(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		return
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if _, err := v.PollRedactions(ctx); err != nil && ctx.Err() == nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to poll for redactions")
		}
	}
}
