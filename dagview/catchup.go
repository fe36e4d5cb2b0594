package dagview

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// catchUpPage is the /messages page size used when catching up.
const catchUpPage = 100

// catchUpContext is the /context limit of a catch-up: homeservers split it between the events before and after the
// cursor, and cap it at 100 (Dendrite).
const catchUpContext = 100

// catchUpBoundary is the /context limit used at each page boundary of a catch-up.
const catchUpBoundary = 20

// CatchUp fetches the events of a room that came after its cursor (the last event in the stream) through /context and
// /messages, and queues those the view does not have through the appservice inbox, so they reach the listener in
// order like pushed events. It returns how many new events it queued. Call it when a gap is suspected; CatchUpAll
// runs it for every room at start-up.
//
// Missed events are queued behind whatever the inbox already holds for the room. After a restart that is the right
// order (the homeserver retries its queue oldest first, and both paths dedup by event ID); but if the homeserver truly
// dropped events and pushes newer ones while catch-up runs, the recovered older events reach the listener after
// those newer ones: late, never lost.
func (v *View) CatchUp(ctx context.Context, roomID id.RoomID) (int, error) {
	room, err := v.Room(ctx, roomID)
	if err != nil {
		return 0, err
	} else if room == nil || room.LastEventID == "" {
		return 0, nil
	}
	client := v.as.Bot().Client
	// /context gives a pagination token right after our last event, which /messages then walks forward from. Our last
	// event is the last to arrive, which need not be the last in the room's order: where the DAG forked (a ghost and
	// a user sending at once), an event beside it or just before it that never arrived would be behind the token. So
	// the events just before ours are taken too, in the room's order; those we have are dropped by the inbox.
	around, err := client.Context(ctx, roomID, room.LastEventID, nil, catchUpContext)
	if err != nil {
		return 0, fmt.Errorf("failed to get context of %s in %s: %w", room.LastEventID, roomID, err)
	}
	missed := make([]*event.Event, 0, len(around.EventsBefore)+len(around.EventsAfter))
	// events_before is newest first.
	for i := len(around.EventsBefore) - 1; i >= 0; i-- {
		missed = append(missed, around.EventsBefore[i])
	}
	missed = append(missed, around.EventsAfter...)
	from := around.End
	for from != "" {
		page, err := client.Messages(ctx, roomID, from, "", mautrix.DirectionForward, nil, catchUpPage)
		if err != nil {
			return 0, fmt.Errorf("failed to get /messages of %s: %w", roomID, err)
		}
		missed = append(missed, page.Chunk...)
		if len(page.Chunk) == 0 || page.End == "" || page.End == from {
			break
		}
		// Dendrite v0.13.8 can leave out an event at a page boundary (seen where the DAG forked); /context of the
		// page's last event has it. Queued before the next page, it keeps its place; the copies the next page repeats
		// are dropped by the inbox.
		last := page.Chunk[len(page.Chunk)-1]
		boundary, err := client.Context(ctx, roomID, last.ID, nil, catchUpBoundary)
		if err != nil {
			return 0, fmt.Errorf("failed to get context of %s in %s: %w", last.ID, roomID, err)
		}
		missed = append(missed, boundary.EventsAfter...)
		from = page.End
	}
	for _, evt := range missed {
		if evt.RoomID == "" {
			evt.RoomID = roomID
		}
	}
	if len(missed) == 0 {
		return 0, nil
	}
	n, err := v.as.Enqueue(ctx, "catchup", missed)
	if err != nil {
		return 0, err
	}
	if n > 0 {
		zerolog.Ctx(ctx).Info().Stringer("room_id", roomID).Int("events", n).Msg("Caught up on missed events")
	}
	return n, nil
}

// CatchUpAll runs CatchUp for every room the bot is joined to; a room that fails is logged and skipped.
func (v *View) CatchUpAll(ctx context.Context) error {
	rooms, err := v.Rooms(ctx)
	if err != nil {
		return err
	}
	total := 0
	for _, room := range rooms {
		if !room.BotJoined {
			continue
		}
		n, err := v.CatchUp(ctx, room.ID)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			zerolog.Ctx(ctx).Warn().Err(err).Stringer("room_id", room.ID).Msg("Failed to catch up room")
			continue
		}
		total += n
	}
	level := zerolog.DebugLevel
	if total > 0 {
		level = zerolog.InfoLevel
	}
	zerolog.Ctx(ctx).WithLevel(level).Int("rooms", len(rooms)).Int("missed_events", total).Msg("Catch-up finished")
	return nil
}

// CatchUpInterval is how often RunCatchUp looks for events the homeserver never pushed. Pushes are retried by the
// homeserver, but one that restarts with its queue in memory (Dendrite) loses what was queued; without this the
// events would stay missing until lmbridge's own restart.
const CatchUpInterval = 10 * time.Minute

// RunCatchUp runs CatchUpAll at once and then every interval until ctx ends.
func (v *View) RunCatchUp(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if err := v.CatchUpAll(ctx); err != nil && ctx.Err() == nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to catch up rooms")
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
