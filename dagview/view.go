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
	// deliveredUnmarked holds, per room (id.RoomID → id.EventID), the last event the listener accepted whose
	// delivered mark is not yet known to be written. The mark rides on the next write anyway, the room's next append
	// or the appservice's handled mark (RecordHandled), instead of costing a write transaction per event; until it
	// lands, a crash has the event offered again, which the listener tolerates (it dedups by event ID).
	deliveredUnmarked sync.Map
	// seeded holds the rooms (id.RoomID) known to be seeded from /state; nothing unseeds a room.
	seeded sync.Map
}

var (
	_ appservice.EventHandler    = (*View)(nil)
	_ appservice.HandledRecorder = (*View)(nil)
)

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
	log := zerolog.Ctx(ctx)
	isBotMember := evt.Type == event.StateMember && evt.StateKey != nil && id.UserID(*evt.StateKey) == v.botUserID()
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
	if l := v.listener.Load(); l != nil {
		if err = (*l).HandleDAGEvent(ctx, evt); err != nil {
			return fmt.Errorf("listener failed: %w", err)
		}
	}
	v.deliveredUnmarked.Store(evt.RoomID, evt.ID)
	return nil
}

// RecordHandled writes the delivered mark of the room's last accepted event, inside the appservice's transaction
// that marks the room's events handled (appservice.HandledRecorder). The mark stays pending in memory because that
// transaction may still fail; writing it again with the next append changes nothing.
func (v *View) RecordHandled(ctx context.Context, roomID id.RoomID) error {
	if unmarked, ok := v.deliveredUnmarked.Load(roomID); ok {
		return v.markDelivered(ctx, unmarked.(id.EventID))
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
