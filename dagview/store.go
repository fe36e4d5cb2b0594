package dagview

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
)

const (
	ensureRoomQuery = `
		INSERT INTO dagview_room (room_id, first_seen_at) VALUES ($1, $2)
		ON CONFLICT (room_id) DO NOTHING
	`
	getRoomQuery = `
		SELECT room_id, bot_joined, seeded_at, position, last_event_id FROM dagview_room WHERE room_id=$1
	`
	getRoomsQuery = `
		SELECT room_id, bot_joined, seeded_at, position, last_event_id FROM dagview_room ORDER BY first_seen_at, room_id
	`
	advanceRoomQuery = `
		UPDATE dagview_room SET position=$2, last_event_id=$3 WHERE room_id=$1
	`
	setBotJoinedQuery = `
		UPDATE dagview_room SET bot_joined=$2 WHERE room_id=$1
	`
	setSeededQuery = `
		UPDATE dagview_room SET seeded_at=$2 WHERE room_id=$1
	`
	// The room's cursor and whether the event is already in the stream (and delivered), in one read.
	getPositionAndEventQuery = `
		SELECT r.position, e.event_id IS NOT NULL, e.delivered_at IS NOT NULL
		FROM dagview_room r LEFT JOIN dagview_event e ON e.event_id=$2
		WHERE r.room_id=$1
	`
	getPositionQuery = `
		SELECT position FROM dagview_room WHERE room_id=$1
	`
	// An event already in the stream is left alone: PrepareEvents stops there and HandleEvent deals with it.
	insertEventIfNewQuery = `
		INSERT INTO dagview_event (room_id, position, event_id, sender, type, state_key, origin_server_ts, event_json, deliveries)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1)
		ON CONFLICT (event_id) DO NOTHING
	`
	insertEventQuery = `
		INSERT INTO dagview_event (room_id, position, event_id, sender, type, state_key, origin_server_ts, event_json, deliveries)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1)
	`
	countDeliveryQuery = `
		UPDATE dagview_event SET deliveries=deliveries+1 WHERE event_id=$1
	`
	// Marks are written late (see View.deliveredUnmarked) and may be written twice; the first time stands.
	markDeliveredQuery = `
		UPDATE dagview_event SET delivered_at=$2 WHERE event_id=$1 AND delivered_at IS NULL
	`
	getEventsQuery = `
		SELECT position, event_json, deliveries FROM dagview_event
		WHERE room_id=$1 AND position>$2 ORDER BY position LIMIT $3
	`
	upsertStateQuery = `
		INSERT INTO dagview_state (room_id, type, state_key, event_id, sender, membership, event_json)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (room_id, type, state_key) DO UPDATE
			SET event_id=excluded.event_id, sender=excluded.sender, membership=excluded.membership,
				event_json=excluded.event_json
	`
	getStateQuery = `
		SELECT event_json FROM dagview_state WHERE room_id=$1 AND type=$2 AND state_key=$3
	`
	getAllStateQuery = `
		SELECT event_json FROM dagview_state WHERE room_id=$1 ORDER BY type, state_key
	`
	getMembersQuery = `
		SELECT state_key, membership FROM dagview_state WHERE room_id=$1 AND type='m.room.member'
	`
)

// Room is a DAG room as the view knows it.
type Room struct {
	ID        id.RoomID
	BotJoined bool
	// Seeded says whether the current state was seeded from /state; otherwise it holds only what the stream showed.
	Seeded bool
	// Position is the stream position of the last event, LastEventID its ID: the cursor catch-up resumes from.
	Position    int64
	LastEventID id.EventID
}

func scanRoom(row dbutil.Scannable) (*Room, error) {
	var room Room
	var seededAt sql.NullInt64
	var lastEventID sql.NullString
	if err := row.Scan(&room.ID, &room.BotJoined, &seededAt, &room.Position, &lastEventID); err != nil {
		return nil, err
	}
	room.Seeded = seededAt.Valid
	room.LastEventID = id.EventID(lastEventID.String)
	return &room, nil
}

// StreamEvent is one event of a room's stream.
type StreamEvent struct {
	Position int64
	Event    *event.Event
	// Deliveries is how many times the listener was called with the event: more than 1 after a listener error or a
	// crash between the call and its bookkeeping.
	Deliveries int
}

// Room returns what the view knows of a room, or nil if it does not track it.
func (v *View) Room(ctx context.Context, roomID id.RoomID) (*Room, error) {
	room, err := scanRoom(v.db.QueryRow(ctx, getRoomQuery, roomID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to get room %s: %w", roomID, err)
	}
	return room, nil
}

// Rooms returns every room the view tracks.
func (v *View) Rooms(ctx context.Context) ([]*Room, error) {
	rows, err := v.db.Query(ctx, getRoomsQuery)
	rooms, err := dbutil.NewRowIterWithError(rows, scanRoom, err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to list rooms: %w", err)
	}
	return rooms, nil
}

// Events returns up to limit events of a room's stream after position after, in order.
func (v *View) Events(ctx context.Context, roomID id.RoomID, after int64, limit int) ([]*StreamEvent, error) {
	rows, err := v.db.Query(ctx, getEventsQuery, roomID, after, limit)
	events, err := dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (*StreamEvent, error) {
		var se StreamEvent
		var raw string
		if err := row.Scan(&se.Position, &raw, &se.Deliveries); err != nil {
			return nil, err
		}
		evt, err := appservice.DecodeEvent(raw)
		if err != nil {
			return nil, err
		}
		se.Event = evt
		return &se, nil
	}, err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to read stream of %s: %w", roomID, err)
	}
	return events, nil
}

// State returns the current state event of a type and state key, or nil if the room has none.
func (v *View) State(ctx context.Context, roomID id.RoomID, evtType event.Type, stateKey string) (*event.Event, error) {
	var raw string
	err := v.db.QueryRow(ctx, getStateQuery, roomID, evtType.Type, stateKey).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to get state %s/%s of %s: %w", evtType.Type, stateKey, roomID, err)
	}
	return appservice.DecodeEvent(raw)
}

// StateEvents returns the room's whole current state.
func (v *View) StateEvents(ctx context.Context, roomID id.RoomID) ([]*event.Event, error) {
	rows, err := v.db.Query(ctx, getAllStateQuery, roomID)
	events, err := dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (*event.Event, error) {
		var raw string
		if err := row.Scan(&raw); err != nil {
			return nil, err
		}
		return appservice.DecodeEvent(raw)
	}, err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to read state of %s: %w", roomID, err)
	}
	return events, nil
}

// Members returns the membership of every user with a member event in the room (join, invite, leave, ban, knock).
func (v *View) Members(ctx context.Context, roomID id.RoomID) (map[id.UserID]event.Membership, error) {
	rows, err := v.db.Query(ctx, getMembersQuery, roomID)
	if err != nil {
		return nil, fmt.Errorf("failed to read members of %s: %w", roomID, err)
	}
	members := make(map[id.UserID]event.Membership)
	err = dbutil.NewRowIterWithError(rows, func(row dbutil.Scannable) (struct{}, error) {
		var userID id.UserID
		var membership sql.NullString
		err := row.Scan(&userID, &membership)
		members[userID] = event.Membership(membership.String)
		return struct{}{}, err
	}, nil).Iter(func(struct{}) (bool, error) { return true, nil })
	if err != nil {
		return nil, fmt.Errorf("failed to read members of %s: %w", roomID, err)
	}
	return members, nil
}

func (v *View) ensureRoom(ctx context.Context, roomID id.RoomID) (*Room, error) {
	// Read first: the insert would take SQLite's write lock on every event for a room that exists nearly always.
	room, err := scanRoom(v.db.QueryRow(ctx, getRoomQuery, roomID))
	if err == nil {
		return room, nil
	} else if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("failed to get room %s: %w", roomID, err)
	}
	if _, err = v.db.Exec(ctx, ensureRoomQuery, roomID, time.Now().UnixMilli()); err != nil {
		return nil, fmt.Errorf("failed to add room %s: %w", roomID, err)
	}
	room, err = scanRoom(v.db.QueryRow(ctx, getRoomQuery, roomID))
	if err != nil {
		return nil, fmt.Errorf("failed to get room %s: %w", roomID, err)
	}
	return room, nil
}

// appendEvent appends evt to its room's stream and applies it to the current state, in one database transaction.
// It reports whether the event still needs delivering (false when it was already delivered) and, when it does,
// counts the delivery about to be made in the same transaction, so a crash during the listener's call still shows
// as a second delivery. The same transaction writes the marks of the room's previous events that are still
// unwritten: the delivered mark of the last one the listener accepted, and the appservice inbox's handled marks.
func (v *View) appendEvent(ctx context.Context, evt *event.Event, raw []byte) (needsDelivery bool, err error) {
	err = v.appendTxn(ctx, evt.RoomID, func(ctx context.Context) error {
		var lastPosition int64
		var inStream, delivered bool
		err := v.db.QueryRow(ctx, getPositionAndEventQuery, evt.RoomID, evt.ID).Scan(&lastPosition, &inStream, &delivered)
		if err != nil {
			return fmt.Errorf("failed to look up room and event: %w", err)
		}
		if inStream {
			needsDelivery = !delivered
			if needsDelivery {
				if _, err = v.db.Exec(ctx, countDeliveryQuery, evt.ID); err != nil {
					return fmt.Errorf("failed to count delivery: %w", err)
				}
			}
			return nil
		}
		needsDelivery = true
		position := lastPosition + 1
		_, err = v.db.Exec(ctx, insertEventQuery, evt.RoomID, position, evt.ID, evt.Sender, evt.Type.Type,
			evt.StateKey, evt.Timestamp, string(raw))
		if err != nil {
			return fmt.Errorf("failed to insert event: %w", err)
		}
		if _, err = v.db.Exec(ctx, advanceRoomQuery, evt.RoomID, position, evt.ID); err != nil {
			return fmt.Errorf("failed to advance room cursor: %w", err)
		}
		if evt.StateKey != nil {
			if err = v.applyState(ctx, evt, raw); err != nil {
				return err
			}
		}
		return nil
	})
	return
}

// appendTxn runs fn in one database transaction with the writes a room's append carries: first the marks of the
// room's earlier events that are still unwritten (the appservice inbox's handled marks and the delivered marks of
// the events the listener accepted), which are known written once it commits.
func (v *View) appendTxn(ctx context.Context, roomID id.RoomID, fn func(ctx context.Context) error) error {
	unmarked, hasUnmarked := v.deliveredUnmarked.Load(roomID)
	var inboxMarked func()
	// Without ctx's cancellation: a cancellable context has mattn/go-sqlite3 run every statement on a goroutine of
	// its own so that it can interrupt it, a hand-off per statement for a transaction that takes microseconds.
	err := v.db.DoTxn(context.WithoutCancel(ctx), nil, func(ctx context.Context) error {
		var err error
		if inboxMarked, err = appservice.WriteHandledMarks(ctx); err != nil {
			return err
		}
		if hasUnmarked {
			if err = v.markDelivered(ctx, unmarked.(*unmarkedEvents)); err != nil {
				return err
			}
		}
		return fn(ctx)
	})
	if err != nil {
		return err
	}
	inboxMarked()
	if hasUnmarked {
		v.deliveredUnmarked.CompareAndDelete(roomID, unmarked)
	}
	return nil
}

// appendEvents appends a run of a room's events to its stream, as appendEvent does one, in one database transaction:
// one read of the cursor, a row per event, one cursor update. Only the first event may be a state event (see
// PrepareEvents). It stops at the first event already in the stream and returns how many it appended, each with the
// delivery about to be made counted.
func (v *View) appendEvents(ctx context.Context, events []*event.Event, raws [][]byte) (appended int, err error) {
	roomID := events[0].RoomID
	err = v.appendTxn(ctx, roomID, func(ctx context.Context) error {
		appended = 0
		var position int64
		if err := v.db.QueryRow(ctx, getPositionQuery, roomID).Scan(&position); err != nil {
			return fmt.Errorf("failed to read room cursor: %w", err)
		}
		for i, evt := range events {
			result, err := v.db.Exec(ctx, insertEventIfNewQuery, roomID, position+1, evt.ID, evt.Sender, evt.Type.Type,
				evt.StateKey, evt.Timestamp, string(raws[i]))
			if err != nil {
				return fmt.Errorf("failed to insert event %s: %w", evt.ID, err)
			}
			if n, err := result.RowsAffected(); err != nil {
				return fmt.Errorf("failed to count inserted event rows: %w", err)
			} else if n == 0 {
				break
			}
			position++
			appended++
			if evt.StateKey != nil {
				if err = v.applyState(ctx, evt, raws[i]); err != nil {
					return err
				}
			}
		}
		if appended == 0 {
			return nil
		}
		if _, err := v.db.Exec(ctx, advanceRoomQuery, roomID, position, events[appended-1].ID); err != nil {
			return fmt.Errorf("failed to advance room cursor: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return appended, nil
}

func (v *View) applyState(ctx context.Context, evt *event.Event, raw []byte) error {
	var membership *string
	if evt.Type == event.StateMember {
		var content struct {
			Membership string `json:"membership"`
		}
		_ = json.Unmarshal(evt.Content.VeryRaw, &content)
		membership = &content.Membership
		if id.UserID(*evt.StateKey) == v.botUserID() {
			if _, err := v.db.Exec(ctx, setBotJoinedQuery, evt.RoomID, content.Membership == string(event.MembershipJoin)); err != nil {
				return fmt.Errorf("failed to update bot membership: %w", err)
			}
		}
	}
	_, err := v.db.Exec(ctx, upsertStateQuery, evt.RoomID, evt.Type.Type, *evt.StateKey, evt.ID, evt.Sender, membership, string(raw))
	if err != nil {
		return fmt.Errorf("failed to apply state %s/%s: %w", evt.Type.Type, *evt.StateKey, err)
	}
	return nil
}

func (v *View) markDelivered(ctx context.Context, unmarked *unmarkedEvents) error {
	now := time.Now().UnixMilli()
	for _, eventID := range unmarked.ids {
		if _, err := v.db.Exec(ctx, markDeliveredQuery, eventID, now); err != nil {
			return fmt.Errorf("failed to mark %s delivered: %w", eventID, err)
		}
	}
	return nil
}
