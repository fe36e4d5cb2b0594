package linearize

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/remote"
)

// Listener receives what happens in LM rooms: the seam's listener (the bridge implements it), whose OnEvent is
// called for every event appended to a room's log, per room in log order; the listener's cursor is only advanced
// after OnEvent returns nil. OnLPDUFailed reports a hub's failed_pdus entry for an LPDU we sent.
type Listener = remote.Listener

// Event is one event of a room's log as delivered to a Listener.
type Event = remote.Event

// OwnEventsSkipper is a Listener that does not need the events sent through this engine's SendEvent and
// SendEventKeyed (and Kick, Ban and Unban, which use them) delivered back (the bridge, which already knows them): when
// SkipOwnEvents returns true, OnEvent is not called for an event appended as hub from such a call, nor for the echo
// of such an LPDU, and the listener's cursor moves past them as past any other. The skip is best effort: an event
// recognised only after a restart, or read back from the log because the listener was behind, is still delivered, so
// the listener must still expect its own events (at least once, deduplicated by event ID or LPDU ID). An echo is the
// only place an LPDU's final event ID appears, so a listener that needs it must not skip.
type OwnEventsSkipper = remote.OwnEventsSkipper

// Invite is an invite for one of our users into a room that another server hosts.
type Invite = remote.Invite

// heldEvent is an event in listener form with what the engine knows of it at append.
type heldEvent struct {
	*Event
	// own marks an event sent through this engine's SendEvent, as held at append (not known for events read back
	// from the log).
	own bool
}

type namedListener struct {
	name    string
	l       Listener
	skipOwn bool
}

// dispatchLoop delivers log events and invites to every listener: the rooms marked dirty when woken after an append,
// and every room every few seconds, which retries a listener that failed.
func (e *Engine) dispatchLoop(ctx context.Context) {
	defer close(e.dispatchDone)
	log := zerolog.Ctx(ctx)
	ticker := time.NewTicker(2 * time.Second)
	defer ticker.Stop()
	all := true
	for {
		e.dispatchLock.Lock()
		dirty := e.dirty
		e.dirty = make(map[string]struct{})
		invites := e.invitesDirty || all
		e.invitesDirty = false
		e.dispatchLock.Unlock()
		var roomIDs []string
		if all {
			rooms, err := e.store.ListRooms(ctx)
			if err != nil && ctx.Err() == nil {
				log.Warn().Err(err).Msg("Failed to list rooms for delivery")
			}
			for _, room := range rooms {
				roomIDs = append(roomIDs, room.RoomID)
			}
		} else {
			for roomID := range dirty {
				roomIDs = append(roomIDs, roomID)
			}
		}
		for _, nl := range e.listeners {
			if invites {
				if err := e.dispatchInvites(ctx, nl); err != nil && ctx.Err() == nil {
					log.Warn().Err(err).Str("listener", nl.name).Msg("Failed to deliver invites")
				}
			}
			for _, roomID := range roomIDs {
				if err := e.dispatchRoom(ctx, nl, roomID); err != nil && ctx.Err() == nil {
					log.Warn().Err(err).Str("listener", nl.name).Str("room_id", roomID).
						Msg("Listener failed, will retry")
				}
			}
		}
		e.trimRecent(roomIDs)
		all = false
		select {
		case <-ctx.Done():
			e.saveCursors(ctx)
			return
		case <-e.dispatchWake:
		case <-ticker.C:
			all = true
		}
	}
}

func (e *Engine) markDirty(roomID string) {
	e.dispatchLock.Lock()
	e.dirty[roomID] = struct{}{}
	e.dispatchLock.Unlock()
}

func (e *Engine) markInvitesDirty() {
	e.dispatchLock.Lock()
	e.invitesDirty = true
	e.dispatchLock.Unlock()
	e.wakeDispatch()
}

// cursorSaveInterval is how long a listener's cursor may stay ahead of the stored one while events keep coming: a
// busy room then costs a cursor write per interval or page, not one per delivery round (at low rates a round is an
// event). At-least-once allows it: a crash re-delivers what was delivered since the last write (at most a page or
// about cursorSaveInterval plus the dispatcher's tick); a stop writes every cursor.
const cursorSaveInterval = 500 * time.Millisecond

// storedCursor is a listener cursor as last written, and when.
type storedCursor struct {
	listener, roomID string
	idx              int64
	at               time.Time
}

func (e *Engine) dispatchRoom(ctx context.Context, nl namedListener, roomID string) error {
	// Only dispatchLoop's goroutine reads and writes cursors, so they are cached after the first read.
	key := nl.name + "\x00" + roomID
	cur, ok := e.cursors[key]
	if !ok {
		var err error
		if cur, err = e.store.Cursor(ctx, nl.name, roomID); err != nil {
			return err
		}
		e.cursors[key] = cur
		e.storedCursors[key] = storedCursor{listener: nl.name, roomID: roomID, idx: cur}
	}
	save := func() error {
		e.cursors[key] = cur
		stored := e.storedCursors[key]
		if cur == stored.idx || (cur-stored.idx < dispatchPage && time.Since(stored.at) < cursorSaveInterval) {
			return nil
		}
		return e.saveCursor(ctx, key, cur)
	}
	for {
		evs, err := e.eventsForListener(ctx, roomID, cur)
		if err != nil || len(evs) == 0 {
			return errors.Join(err, save())
		}
		for _, ev := range evs {
			if ctx.Err() != nil {
				return errors.Join(ctx.Err(), save())
			}
			// An unreadable stored event has no listener form; it is skipped.
			if ev.PDU != nil && !(nl.skipOwn && ev.own) {
				if err = nl.l.OnEvent(ctx, ev.Event); err != nil {
					return errors.Join(err, save())
				}
			}
			cur = ev.Index
		}
		if err = save(); err != nil || len(evs) < dispatchPage {
			return err
		}
	}
}

// saveCursor writes a listener's cursor, even when shutdown has begun, so that delivered events are not delivered
// again.
func (e *Engine) saveCursor(ctx context.Context, key string, cur int64) error {
	stored := e.storedCursors[key]
	if err := e.store.SetCursor(context.WithoutCancel(ctx), stored.listener, stored.roomID, cur); err != nil {
		return err
	}
	stored.idx, stored.at = cur, time.Now()
	e.storedCursors[key] = stored
	return nil
}

// saveCursors writes every cursor that is ahead of the stored one (at stop).
func (e *Engine) saveCursors(ctx context.Context) {
	for key, cur := range e.cursors {
		if cur == e.storedCursors[key].idx {
			continue
		}
		if err := e.saveCursor(ctx, key, cur); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Str("listener", e.storedCursors[key].listener).
				Str("room_id", e.storedCursors[key].roomID).Msg("Failed to store listener cursor")
		}
	}
}

// trimRecent drops the recent events of rooms that every listener has had.
func (e *Engine) trimRecent(roomIDs []string) {
	for _, roomID := range roomIDs {
		upTo := int64(-1)
		for i, nl := range e.listeners {
			cur, ok := e.cursors[nl.name+"\x00"+roomID]
			if !ok {
				upTo = -1
				break
			}
			if i == 0 || cur < upTo {
				upTo = cur
			}
		}
		if upTo >= 0 {
			e.recent.trim(roomID, upTo)
		}
	}
}

// eventsForListener returns up to dispatchPage events of roomID after index cur, from the recent events when they
// are held there, else from the log. An event of the log that cannot be read comes back with only its index set.
func (e *Engine) eventsForListener(ctx context.Context, roomID string, cur int64) ([]heldEvent, error) {
	if evs, ok := e.recent.after(roomID, cur, dispatchPage); ok {
		return evs, nil
	}
	stored, err := e.store.EventsAfter(ctx, roomID, cur, dispatchPage)
	if err != nil {
		return nil, err
	}
	evs := make([]heldEvent, len(stored))
	for i, ev := range stored {
		out, err := toListenerEvent(ev)
		if err != nil {
			zerolog.Ctx(ctx).Err(err).Str("event_id", ev.EventID).Msg("Stored event is unreadable, skipping it")
			out = &Event{Index: ev.Index}
		}
		evs[i] = heldEvent{Event: out}
	}
	return evs, nil
}

// dispatchPage is how many events dispatchRoom reads at a time; a short page means it has reached the head.
const dispatchPage = 200

func (e *Engine) dispatchInvites(ctx context.Context, nl namedListener) error {
	invites, err := e.store.UndeliveredInvites(ctx, nl.name)
	if err != nil {
		return err
	}
	for _, inv := range invites {
		if err = fillInvite(inv); err != nil {
			zerolog.Ctx(ctx).Err(err).Str("event_id", inv.EventID).Msg("Stored invite is unreadable")
		} else if err = nl.l.OnInvite(ctx, inv); err != nil {
			return err
		}
		if err = e.store.MarkInviteDelivered(ctx, nl.name, inv.EventID); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) wakeDispatch() {
	select {
	case e.dispatchWake <- struct{}{}:
	default:
	}
}

// eventFields is the part of an LM event the listener and the engine's bookkeeping read.
type eventFields struct {
	RoomID         string          `json:"room_id"`
	Type           string          `json:"type"`
	StateKey       *string         `json:"state_key"`
	Sender         string          `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Content        json.RawMessage `json:"content"`
	HubServer      string          `json:"hub_server"`
}

func toListenerEvent(ev *StoredEvent) (*Event, error) {
	var f eventFields
	if err := json.Unmarshal(ev.PDU, &f); err != nil {
		return nil, err
	}
	return &Event{
		RoomID: ev.RoomID, Index: ev.Index, EventID: ev.EventID, LPDUID: ev.LPDUID,
		Type: f.Type, StateKey: f.StateKey, Sender: f.Sender, OriginServerTS: f.OriginServerTS, Content: f.Content,
		PDU: ev.PDU,
	}, nil
}

func fillInvite(inv *Invite) error {
	var f eventFields
	if err := json.Unmarshal(inv.Event, &f); err != nil {
		return err
	}
	inv.Sender = f.Sender
	inv.HubServer = f.HubServer
	return nil
}
