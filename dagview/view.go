// Package dagview is the DAG room as the bridge sees it: per room, the ordered stream of events, the current state
// and membership (seeded from /state when the room is first seen, then kept by the stream), a persisted cursor, and
// catch-up through /messages for what was missed while lmbridge was away. It receives events from the appservice
// inbox and hands them on, in order, to a Listener (the bridge).
package dagview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/dagview/upgrades"
)

// VersionTable is the version table of the dagview package's tables.
const VersionTable = "dagview_version"

// View keeps the DAG rooms. It implements appservice.EventHandler.
type View struct {
	as       *appservice.AppService
	db       *dbutil.Database
	listener atomic.Pointer[Listener]
	// deliveredUnmarked holds, per room (id.RoomID → *unmarkedEvents), the events the listener accepted whose
	// delivered mark is not yet known to be written. The mark rides on the next write anyway, the room's next append
	// or the appservice's handled mark (RecordHandled), instead of costing a write transaction per event; until it
	// lands, a crash has the event offered again, which the listener tolerates (it dedups by event ID).
	deliveredUnmarked sync.Map
	// seeded holds the rooms (id.RoomID) known to be seeded from /state; nothing unseeds a room.
	seeded sync.Map
	// prepared holds the events (id.EventID) that PrepareEvents appended to their room's stream, with the delivery
	// about to be made counted, and that HandleEvent has not been called for yet: their call skips straight to the
	// listener. The entry is taken by the first call, so a retry after a listener error goes the usual way.
	prepared sync.Map
}

var (
	_ appservice.EventHandler       = (*View)(nil)
	_ appservice.HandledRecorder    = (*View)(nil)
	_ appservice.EventBatchPreparer = (*View)(nil)
)

// unmarkedEvents are a room's events the listener accepted whose delivered marks are not yet written: the last one
// after a one-by-one append, every event since the last write after a run appended in one pass.
type unmarkedEvents struct {
	ids []id.EventID
}

// New makes a view over the rooms the appservice sees; db is the shared database.
func New(as *appservice.AppService, db *dbutil.Database) *View {
	return &View{as: as, db: db.Child(VersionTable, upgrades.Table, nil)}
}

// Upgrade brings the dagview tables to the current schema.
func (v *View) Upgrade(ctx context.Context) error {
	if err := v.db.Upgrade(ctx); err != nil {
		return fmt.Errorf("failed to upgrade dagview tables: %w", err)
	}
	return nil
}

// SetListener installs the listener; events handled before there is one are kept in the stream but not delivered
// to anybody later, so set it before the appservice starts.
func (v *View) SetListener(l Listener) {
	v.listener.Store(&l)
}

func (v *View) botUserID() id.UserID {
	return v.as.BotUserID()
}

// HandleEvent takes one event from the appservice inbox: the bot joins rooms it is invited to, a room seen for the
// first time is seeded from /state, the event is appended to the room's stream and state, then the listener gets it.
//
// The /state snapshot is taken when the bot joins, so it can be newer than state events still queued behind the
// invite; those are applied on top as they come (the stream carries no DAG order to compare them by). In practice the
// queue behind an invite holds the bot's own join and what followed it, so the state converges.
func (v *View) HandleEvent(ctx context.Context, evt *event.Event) error {
	if _, ok := v.prepared.LoadAndDelete(evt.ID); ok {
		return v.deliver(ctx, evt)
	}
	log := zerolog.Ctx(ctx)
	isBotMember := v.isBotMember(evt)
	if isBotMember && evt.Content.AsMember().Membership == event.MembershipInvite {
		if _, err := v.ensureRoom(ctx, evt.RoomID); err != nil {
			return err
		}
		if err := v.joinOnInvite(ctx, evt); err != nil {
			return err
		}
	}
	// A seeded room stays seeded, so only rooms not yet known to be seeded need their row read.
	if _, seeded := v.seeded.Load(evt.RoomID); !seeded {
		room, err := v.ensureRoom(ctx, evt.RoomID)
		if err != nil {
			return err
		}
		switch {
		case room.Seeded:
			v.seeded.Store(evt.RoomID, struct{}{})
		case room.Position == 0 || isBotMember:
			// A room is seeded the first time the bot can read its state: on the first event seen, or when the
			// bot joins.
			if err = v.Seed(ctx, evt.RoomID); err != nil {
				log.Debug().Err(err).Msg("Room not seeded from /state yet")
			}
		}
	}
	// The bytes the homeserver sent, when the appservice has them, keep the event exactly as sent at no encoding cost.
	var raw []byte
	var err error
	if sent, ok := appservice.EventJSON(ctx, evt.ID); ok {
		raw = []byte(sent)
	} else if raw, err = marshalEvent(evt); err != nil {
		return err
	}
	needsDelivery, err := v.appendEvent(ctx, evt, raw)
	if err != nil {
		return fmt.Errorf("failed to append event to stream: %w", err)
	} else if !needsDelivery {
		return nil
	}
	return v.deliver(ctx, evt)
}

func (v *View) isBotMember(evt *event.Event) bool {
	return evt.Type == event.StateMember && evt.StateKey != nil && id.UserID(*evt.StateKey) == v.botUserID()
}

// deliver hands an event already in the stream, with the delivery counted, to the listener.
func (v *View) deliver(ctx context.Context, evt *event.Event) error {
	if l := v.listener.Load(); l != nil {
		if err := (*l).HandleDAGEvent(ctx, evt); err != nil {
			return fmt.Errorf("listener failed: %w", err)
		}
	}
	// A room's calls come one at a time, so nothing else changes the room's entry meanwhile; a new entry each time
	// keeps the writers' CompareAndDelete from dropping an event they did not write.
	var ids []id.EventID
	if prev, ok := v.deliveredUnmarked.Load(evt.RoomID); ok {
		ids = append(ids, prev.(*unmarkedEvents).ids...)
	}
	v.deliveredUnmarked.Store(evt.RoomID, &unmarkedEvents{ids: append(ids, evt.ID)})
	return nil
}

// PrepareEvents appends a run of consecutive events of a seeded room to its stream in one database transaction
// (appservice.EventBatchPreparer), so that HandleEvent then only hands them to the listener. Only the first event of
// the run may be a state event, and not the bot's own membership (an invite or join has work of its own to do first):
// the listener, called for each event in turn, must see the room's state as of that event, and the events after a
// state event would otherwise see it before their turn came. The run also stops at an event already in the stream (a
// redelivery after a crash), which HandleEvent deals with one by one. A run of one event is worth it too: the insert
// that skips an event already in the stream replaces the one-by-one path's read of the cursor joined with the
// event's stream row.
func (v *View) PrepareEvents(ctx context.Context, events []*event.Event) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	roomID := events[0].RoomID
	if _, seeded := v.seeded.Load(roomID); !seeded {
		return 0, nil
	}
	n := 0
	for n < len(events) {
		evt := events[n]
		if evt.RoomID != roomID || (evt.StateKey != nil && (n > 0 || v.isBotMember(evt))) {
			break
		}
		n++
	}
	if n == 0 {
		return 0, nil
	}
	raws := make([][]byte, n)
	for i, evt := range events[:n] {
		if sent, ok := appservice.EventJSON(ctx, evt.ID); ok {
			raws[i] = []byte(sent)
		} else {
			raw, err := marshalEvent(evt)
			if err != nil {
				return 0, err
			}
			raws[i] = raw
		}
	}
	appended, err := v.appendEvents(ctx, events[:n], raws)
	if err != nil {
		return 0, fmt.Errorf("failed to append events to stream: %w", err)
	}
	for _, evt := range events[:appended] {
		v.prepared.Store(evt.ID, struct{}{})
	}
	return appended, nil
}

// RecordHandled writes the delivered mark of the room's last accepted event, inside the appservice's transaction
// that marks the room's events handled (appservice.HandledRecorder). The mark stays pending in memory because that
// transaction may still fail; writing it again with the next append changes nothing.
func (v *View) RecordHandled(ctx context.Context, roomID id.RoomID) error {
	if unmarked, ok := v.deliveredUnmarked.Load(roomID); ok {
		return v.markDelivered(ctx, unmarked.(*unmarkedEvents))
	}
	return nil
}

// joinOnInvite has the bot accept an invite. An invite that can no longer be accepted (withdrawn, or the room is
// gone) is logged and passed on rather than retried; a homeserver that cannot be reached is retried.
func (v *View) joinOnInvite(ctx context.Context, evt *event.Event) error {
	log := zerolog.Ctx(ctx)
	bot := v.as.Bot()
	_, err := bot.JoinRoomByID(ctx, evt.RoomID)
	var httpErr mautrix.HTTPError
	switch {
	case err == nil:
		log.Info().Stringer("inviter", evt.Sender).Msg("Bot joined room on invite")
		if err = v.Seed(ctx, evt.RoomID); err != nil {
			log.Warn().Err(err).Msg("Failed to seed room state after joining")
		}
		return nil
	case errors.As(err, &httpErr) && httpErr.RespError != nil && httpErr.Response != nil && httpErr.Response.StatusCode < 500:
		log.Warn().Err(err).Msg("Bot could not accept invite")
		return nil
	default:
		return fmt.Errorf("failed to join room on invite: %w", err)
	}
}

// Seed replaces the room's current state with the homeserver's /state, read as the bot.
func (v *View) Seed(ctx context.Context, roomID id.RoomID) error {
	state, err := v.as.Bot().Client.State(ctx, roomID)
	if err != nil {
		return fmt.Errorf("failed to get /state of %s: %w", roomID, err)
	}
	count := 0
	err = v.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := v.db.Exec(ctx, ensureRoomQuery, roomID, time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("failed to add room: %w", err)
		}
		for _, byKey := range state {
			for _, evt := range byKey {
				if evt.RoomID == "" {
					evt.RoomID = roomID
				}
				raw, err := marshalEvent(evt)
				if err != nil {
					return err
				}
				if err = v.applyState(ctx, evt, raw); err != nil {
					return err
				}
				count++
			}
		}
		_, err := v.db.Exec(ctx, setSeededQuery, roomID, time.Now().UnixMilli())
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to store /state of %s: %w", roomID, err)
	}
	v.seeded.Store(roomID, struct{}{})
	zerolog.Ctx(ctx).Info().Stringer("room_id", roomID).Int("state_events", count).Msg("Seeded room state from /state")
	return nil
}

// marshalEvent encodes an event with its content exactly as the homeserver sent it, not as mautrix re-encodes the
// parsed struct, so nothing the bridge might need is lost or changed on the way through the database.
func marshalEvent(evt *event.Event) ([]byte, error) {
	cp := *evt
	cp.Content = event.Content{VeryRaw: evt.Content.VeryRaw}
	raw, err := json.Marshal(&cp)
	if err != nil {
		return nil, fmt.Errorf("failed to marshal event %s: %w", evt.ID, err)
	}
	return raw, nil
}
