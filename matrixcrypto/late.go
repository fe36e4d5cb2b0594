//go:build goolm

package matrixcrypto

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const (
	addLateQuery = `
		INSERT INTO matrixcrypto_late_event (event_id, room_id, session_id, event_json, failed_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (event_id) DO NOTHING
	`
	lateSessionsQuery = `SELECT DISTINCT room_id, session_id FROM matrixcrypto_late_event`
	lateEventsQuery   = `SELECT event_json FROM matrixcrypto_late_event WHERE room_id=$1 AND session_id=$2 ORDER BY failed_at`
	deleteLateQuery   = `DELETE FROM matrixcrypto_late_event WHERE event_id=$1`
	pruneLateQuery    = `DELETE FROM matrixcrypto_late_event WHERE failed_at<$1`
)

// lateRetention is how long an event that could not be decrypted waits for its key after its notice. An LM room
// gets it out of its place in the conversation; a day later it would be more confusing than useful.
const lateRetention = 24 * time.Hour

// addLate records an event whose key did not come within the key wait, before the room is told so.
func (h *Helper) addLate(ctx context.Context, evt *event.Event, sessionID id.SessionID) error {
	data, err := json.Marshal(evt)
	if err != nil {
		return fmt.Errorf("failed to encode event %s: %w", evt.ID, err)
	}
	if _, err = h.db.Exec(ctx, addLateQuery, evt.ID, evt.RoomID, sessionID, string(data), time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("failed to record event %s as waiting for its key: %w", evt.ID, err)
	}
	h.hasLate.Store(true)
	return nil
}

// kickLate has the late-event worker look for keys that came; it never blocks, and kicks while the worker is busy
// merge into one more pass.
func (h *Helper) kickLate() {
	select {
	case h.lateKick <- struct{}{}:
	default:
	}
}

// lateWorker bridges waiting events whose keys came, after each batch of to-device messages (keys come in them),
// until ctx ends. One pass at the start covers keys that came while lmbridge was down.
func (h *Helper) lateWorker(ctx context.Context) {
	log := zerolog.Ctx(ctx)
	for {
		if h.hasLate.Load() {
			if err := h.retryLate(ctx); err != nil && ctx.Err() == nil {
				log.Warn().Err(err).Msg("Failed to bridge events whose keys came late")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-h.lateKick:
		}
	}
}

type lateSession struct {
	roomID    id.RoomID
	sessionID id.SessionID
}

// retryLate bridges the waiting events whose session the device now has, after forgetting those that waited too
// long.
func (h *Helper) retryLate(ctx context.Context) error {
	if _, err := h.db.Exec(ctx, pruneLateQuery, time.Now().Add(-lateRetention).UnixMilli()); err != nil {
		return fmt.Errorf("failed to forget events that waited too long for their keys: %w", err)
	}
	rows, err := h.db.Query(ctx, lateSessionsQuery)
	if err != nil {
		return fmt.Errorf("failed to read the sessions waited for: %w", err)
	}
	var sessions []lateSession
	for rows.Next() {
		var s lateSession
		if err = rows.Scan(&s.roomID, &s.sessionID); err != nil {
			_ = rows.Close()
			return fmt.Errorf("failed to read a session waited for: %w", err)
		}
		sessions = append(sessions, s)
	}
	if err = rows.Close(); err != nil {
		return fmt.Errorf("failed to read the sessions waited for: %w", err)
	}
	if len(sessions) == 0 {
		h.hasLate.Store(false)
		return nil
	}
	for _, s := range sessions {
		if igs, err := h.store.GetGroupSession(ctx, s.roomID, s.sessionID); err != nil || igs == nil {
			// Still missing, or withheld: the waiting goes on until the key comes or the row is pruned.
			continue
		}
		if err = h.retrySession(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// retrySession decrypts and bridges the waiting events of a session that came.
func (h *Helper) retrySession(ctx context.Context, s lateSession) error {
	rows, err := h.db.Query(ctx, lateEventsQuery, s.roomID, s.sessionID)
	if err != nil {
		return fmt.Errorf("failed to read the events waiting for session %s: %w", s.sessionID, err)
	}
	var events []*event.Event
	for rows.Next() {
		var data string
		if err = rows.Scan(&data); err != nil {
			_ = rows.Close()
			return fmt.Errorf("failed to read an event waiting for session %s: %w", s.sessionID, err)
		}
		evt := &event.Event{}
		if err = json.Unmarshal([]byte(data), evt); err != nil {
			_ = rows.Close()
			return fmt.Errorf("failed to decode an event waiting for session %s: %w", s.sessionID, err)
		}
		events = append(events, evt)
	}
	if err = rows.Close(); err != nil {
		return fmt.Errorf("failed to read the events waiting for session %s: %w", s.sessionID, err)
	}
	for _, evt := range events {
		if err = h.bridgeLate(ctx, evt); err != nil {
			return err
		}
	}
	return nil
}

// bridgeLate hands a waiting event to the bridge now that it decrypts, as the room's worker would have. The room
// lock keeps it from running beside the room's worker; the bridge's record of processed events keeps it from being
// bridged twice (a redelivery after a crash decrypts now too). An event that still does not decrypt (its key came
// from a later index) or comes from a device below the receive level stays or goes without being bridged.
func (h *Helper) bridgeLate(ctx context.Context, evt *event.Event) error {
	log := zerolog.Ctx(ctx).With().Stringer("room_id", evt.RoomID).Stringer("event_id", evt.ID).Logger()
	ctx = log.WithContext(ctx)
	evt.Type.Class = event.MessageEventType
	if err := evt.Content.ParseRaw(evt.Type); err != nil {
		return h.dropLate(ctx, evt, "Dropped a waiting event whose content does not parse", err)
	}
	decrypted, err := h.mach.DecryptMegolmEvent(ctx, evt)
	if err != nil {
		log.Debug().Err(err).Msg("A waiting event does not decrypt with the session that came")
		return nil
	}
	if decrypted.Mautrix.TrustState < h.receiveLevel {
		return h.dropLate(ctx, evt, "Dropped a waiting event sent from a device below the receive trust level", nil)
	}
	h.roomLocks.Lock(evt.RoomID)
	err = h.next.HandleDAGEvent(ctx, decrypted)
	h.roomLocks.Unlock(evt.RoomID)
	if err != nil {
		return fmt.Errorf("failed to bridge event %s late: %w", evt.ID, err)
	}
	log.Info().Msg("Bridged an event late: its key came after the room was told it could not be bridged")
	return h.dropLate(ctx, evt, "", nil)
}

// dropLate stops waiting for an event's key, logging why unless msg is empty.
func (h *Helper) dropLate(ctx context.Context, evt *event.Event, msg string, reason error) error {
	if msg != "" {
		zerolog.Ctx(ctx).Warn().AnErr("reason", reason).Msg(msg)
	}
	if _, err := h.db.Exec(ctx, deleteLateQuery, evt.ID); err != nil {
		return fmt.Errorf("failed to forget waiting event %s: %w", evt.ID, err)
	}
	return nil
}
