package dagview

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
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

// orderCheckSpan is how many queued events one order check covers: with the event before them it must fit in the
// events_before of a /context (half of catchUpContext).
const orderCheckSpan = 40

// CatchUp fetches the events of a room that came after its cursor (the last event in the stream) through /context and
// /messages, and queues those the view does not have through the appservice inbox, so they reach the listener in
// order like pushed events. It returns how many new events it queued. Call it when a gap is suspected; CatchUpAll
// runs it for every room at start-up.
//
// The fetch runs on the room's worker in the appservice (AppService.CatchUpRoom, calling OrderRoom), so no event of
// the room is handled while it runs: events pushed meanwhile wait, and are queued after the older ones found, in the
// homeserver's order, so a homeserver that skipped an event and pushes newer ones during the catch-up does not get
// them to the listener first.
func (v *View) CatchUp(ctx context.Context, roomID id.RoomID) (int, error) {
	n, err := v.as.CatchUpRoom(ctx, roomID)
	if err != nil {
		return 0, err
	}
	if n > 0 {
		zerolog.Ctx(ctx).Info().Stringer("room_id", roomID).Int("events", n).Msg("Caught up on missed events")
	}
	return n, nil
}

// OrderRoom gives the room worker the room's events in the homeserver's order (appservice.RoomOrderer). With full
// set it is the catch-up's fetch; otherwise it checks the queued events against the room: the events the homeserver
// has just before the first orderCheckSpan of them (down to the stream's first event) must all be in the stream or
// queued. Those that are not (the homeserver skipped them) come back in the room's order with the queued ones around
// them, to be queued first; when nothing is missing, nothing comes back and the events go as pushed.
//
// The whole window is looked at, not only back to the first event the stream holds: where the DAG forked, an event
// pushed after the skipped one can sit after it in the room's order (a ghost's message sent while alice's was left
// behind), and a walk that stopped there would miss it.
func (v *View) OrderRoom(ctx context.Context, roomID id.RoomID, queued []*event.Event, full bool) ([]*event.Event, error) {
	if full {
		return v.fetchMissed(ctx, roomID)
	}
	room, err := v.Room(ctx, roomID)
	if err != nil || room == nil || room.LastEventID == "" || len(queued) == 0 {
		return nil, err
	}
	queued = queued[:min(len(queued), orderCheckSpan)]
	isQueued := make(map[id.EventID]bool, len(queued))
	for _, evt := range queued {
		isQueued[evt.ID] = true
	}
	anchor := queued[len(queued)-1]
	around, err := v.as.Bot().Client.Context(ctx, roomID, anchor.ID, nil, catchUpContext)
	if err != nil {
		return nil, fmt.Errorf("failed to get context of %s in %s: %w", anchor.ID, roomID, err)
	}
	first, err := v.firstEventID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	// events_before is newest first; what comes before the stream's first event was never the view's.
	var before []*event.Event
	missing := 0
	for _, evt := range around.EventsBefore {
		if evt.ID == first {
			break
		}
		if !isQueued[evt.ID] {
			inStream, err := v.inStream(ctx, evt.ID)
			if err != nil {
				return nil, err
			} else if inStream {
				continue
			}
			missing++
		}
		before = append(before, evt)
	}
	if missing == 0 {
		return nil, nil
	}
	inOrder := make([]*event.Event, 0, len(before)+1)
	for i := len(before) - 1; i >= 0; i-- {
		inOrder = append(inOrder, before[i])
	}
	inOrder = append(inOrder, anchor)
	for _, evt := range inOrder {
		if evt.RoomID == "" {
			evt.RoomID = roomID
		}
	}
	zerolog.Ctx(ctx).Info().Stringer("room_id", roomID).Int("missing", missing).Stringer("before", anchor.ID).
		Msg("Homeserver skipped events; putting them before the newer ones")
	return inOrder, nil
}

// fetchMissed is the catch-up's fetch: the room's events after the stream's last event, and the ones just before it,
// in the room's order.
func (v *View) fetchMissed(ctx context.Context, roomID id.RoomID) ([]*event.Event, error) {
	room, err := v.Room(ctx, roomID)
	if err != nil {
		return nil, err
	} else if room == nil || room.LastEventID == "" {
		return nil, nil
	}
	client := v.as.Bot().Client
	// /context gives a pagination token right after our last event, which /messages then walks forward from. Our last
	// event is the last to arrive, which need not be the last in the room's order: where the DAG forked (a ghost and
	// a user sending at once), an event beside it or just before it that never arrived would be behind the token. So
	// the events just before ours are taken too, in the room's order; those we have are dropped by the inbox.
	around, err := client.Context(ctx, roomID, room.LastEventID, nil, catchUpContext)
	if err != nil {
		return nil, fmt.Errorf("failed to get context of %s in %s: %w", room.LastEventID, roomID, err)
	}
	// events_before is newest first. Those before the stream's first event (the room's history before the bot was
	// invited, never pushed) were never the view's: handed on now, they would put old state over the current one.
	first, err := v.firstEventID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	before := around.EventsBefore
	for i, evt := range before {
		if evt.ID == first {
			before = before[:i]
			break
		}
	}
	missed := make([]*event.Event, 0, len(before)+len(around.EventsAfter))
	for i := len(before) - 1; i >= 0; i-- {
		missed = append(missed, before[i])
	}
	missed = append(missed, around.EventsAfter...)
	from := around.End
	for from != "" {
		page, err := client.Messages(ctx, roomID, from, "", mautrix.DirectionForward, nil, catchUpPage)
		if err != nil {
			return nil, fmt.Errorf("failed to get /messages of %s: %w", roomID, err)
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
			return nil, fmt.Errorf("failed to get context of %s in %s: %w", last.ID, roomID, err)
		}
		missed = append(missed, boundary.EventsAfter...)
		from = page.End
	}
	for _, evt := range missed {
		if evt.RoomID == "" {
			evt.RoomID = roomID
		}
	}
	return missed, nil
}

// catchUpParallel is how many rooms CatchUpAll catches up at once: each waits for its room's worker, which may be
// busy retrying an event, and one such room must not hold up the others.
const catchUpParallel = 4

// CatchUpAll runs CatchUp for every room the bot is joined to; a room that fails is logged and skipped.
func (v *View) CatchUpAll(ctx context.Context) error {
	rooms, err := v.Rooms(ctx)
	if err != nil {
		return err
	}
	var total atomic.Int64
	var wg sync.WaitGroup
	slots := make(chan struct{}, catchUpParallel)
	for _, room := range rooms {
		if !room.BotJoined {
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(roomID id.RoomID) {
			defer func() { <-slots; wg.Done() }()
			n, err := v.CatchUp(ctx, roomID)
			if err != nil {
				if ctx.Err() == nil {
					zerolog.Ctx(ctx).Warn().Err(err).Stringer("room_id", roomID).Msg("Failed to catch up room")
				}
				return
			}
			total.Add(int64(n))
		}(room.ID)
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	level := zerolog.DebugLevel
	if total.Load() > 0 {
		level = zerolog.InfoLevel
	}
	zerolog.Ctx(ctx).WithLevel(level).Int("rooms", len(rooms)).Int64("missed_events", total.Load()).Msg("Catch-up finished")
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
