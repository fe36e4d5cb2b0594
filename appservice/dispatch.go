package appservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// EventHandler receives the events of the inbox. Calls for one room come one at a time, in the order the homeserver
// sent them; calls for different rooms run concurrently. An event counts as handled once HandleEvent returns nil:
// after a crash, anything not yet marked handled is delivered again, so delivery is at least once and the handler
// dedups by event ID.
type EventHandler interface {
	HandleEvent(ctx context.Context, evt *event.Event) error
}

// EventHandlerFunc adapts a function to EventHandler.
type EventHandlerFunc func(ctx context.Context, evt *event.Event) error

// HandleEvent calls fn.
func (fn EventHandlerFunc) HandleEvent(ctx context.Context, evt *event.Event) error {
	return fn(ctx, evt)
}

// ErrPermanent marks a handler error that retrying cannot fix (the event is malformed for its type, or refers to
// something that will never exist): the event is recorded as failed at once and its room moves on. Wrap it with
// Permanent.
var ErrPermanent = errors.New("permanent failure")

// Permanent wraps err so that the dispatcher gives up on the event instead of retrying it.
func Permanent(err error) error {
	return fmt.Errorf("%w: %w", ErrPermanent, err)
}

const (
	// dispatchBatch is how many pending events a room worker reads at once.
	dispatchBatch = 64
	// maxHandleAttempts is how often an event is offered before it is recorded as failed so its room can move on.
	// With the backoff below that is about 20 minutes: enough to ride out a homeserver restart, short enough that a
	// room does not stay stuck behind one bad event for good.
	maxHandleAttempts = 30
	maxRetryDelay     = time.Minute
)

// dispatcher runs one worker per room with pending events, so a slow room never holds up another.
type dispatcher struct {
	as      *AppService
	handler EventHandler

	lock    sync.Mutex
	workers map[id.RoomID]chan struct{}
	wg      sync.WaitGroup
	ctx     context.Context
}

// notify wakes the worker of a room, starting one if the room has none.
func (d *dispatcher) notify(roomID id.RoomID) {
	d.lock.Lock()
	defer d.lock.Unlock()
	if d.ctx == nil || d.ctx.Err() != nil {
		// Not started, or stopping: the events stay in the inbox for the next start.
		return
	}
	if wake, ok := d.workers[roomID]; ok {
		select {
		case wake <- struct{}{}:
		default:
		}
		return
	}
	wake := make(chan struct{}, 1)
	d.workers[roomID] = wake
	d.wg.Add(1)
	go d.runRoom(roomID, wake)
}

// idle retires a room's worker unless it was woken meanwhile; the check runs under the lock notify takes, so an event
// stored between the last read and the exit is never stranded.
func (d *dispatcher) idle(roomID id.RoomID, wake chan struct{}) bool {
	d.lock.Lock()
	defer d.lock.Unlock()
	select {
	case <-wake:
		return false
	default:
		delete(d.workers, roomID)
		return true
	}
}

func (d *dispatcher) runRoom(roomID id.RoomID, wake chan struct{}) {
	defer d.wg.Done()
	log := zerolog.Ctx(d.ctx).With().Stringer("room_id", roomID).Logger()
	ctx := log.WithContext(d.ctx)
	for {
		events, err := d.as.inbox.pending(ctx, roomID, dispatchBatch)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Err(err).Msg("Failed to read pending events")
			if !sleepCtx(ctx, time.Second) {
				return
			}
			continue
		}
		if len(events) == 0 {
			if d.idle(roomID, wake) {
				return
			}
			continue
		}
		for _, ie := range events {
			if !d.handleOne(ctx, ie) {
				return
			}
		}
	}
}

// handleOne offers one event to the handler until it succeeds or runs out of attempts; false means ctx ended.
func (d *dispatcher) handleOne(ctx context.Context, ie inboxEvent) bool {
	log := zerolog.Ctx(ctx).With().Stringer("event_id", ie.eventID).Logger()
	evt, err := decodeEvent(ie.json)
	if err != nil {
		// Validated on the way in, so this is a bug or a corrupted row; recording it beats blocking the room.
		log.Err(err).Msg("Failed to decode stored event")
		if err = d.as.inbox.markGivenUp(ctx, ie.seq, err); err != nil {
			log.Err(err).Msg("Failed to mark undecodable event")
		}
		return ctx.Err() == nil
	}
	// Bookkeeping after the handler ran must land even when shutdown cancels ctx, or a finished event would be
	// handled a second time after the restart.
	markCtx := context.WithoutCancel(ctx)
	mautrix.UpdateStateStore(ctx, d.as.stateStore, evt)
	attempts := ie.attempts
	for {
		err = d.handler.HandleEvent(log.WithContext(ctx), evt)
		if err == nil {
			if err = d.as.inbox.markHandled(markCtx, ie.seq); err != nil {
				log.Err(err).Msg("Failed to mark event handled")
				return ctx.Err() == nil
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		attempts++
		if attempts >= maxHandleAttempts || errors.Is(err, ErrPermanent) {
			log.Err(err).Int("attempts", attempts).Msg("Giving up on event after repeated handler failures")
			if err = d.as.inbox.markGivenUp(markCtx, ie.seq, err); err != nil {
				log.Err(err).Msg("Failed to mark event as given up")
			}
			return ctx.Err() == nil
		}
		delay := min(time.Duration(1<<min(attempts, 16))*250*time.Millisecond, maxRetryDelay)
		log.Warn().Err(err).Int("attempts", attempts).Dur("retry_in", delay).Msg("Event handler failed, retrying")
		if markErr := d.as.inbox.markAttemptFailed(markCtx, ie.seq, err); markErr != nil {
			log.Err(markErr).Msg("Failed to record handler failure")
		}
		if !sleepCtx(ctx, delay) {
			return false
		}
	}
}

func decodeEvent(raw string) (*event.Event, error) {
	var evt event.Event
	if err := json.Unmarshal([]byte(raw), &evt); err != nil {
		return nil, fmt.Errorf("failed to unmarshal event: %w", err)
	}
	if evt.StateKey != nil {
		evt.Type.Class = event.StateEventType
	} else {
		evt.Type.Class = event.MessageEventType
	}
	// Content a known type cannot hold stays available raw; the handler decides what to do with it.
	_ = evt.Content.ParseRaw(evt.Type)
	return &evt, nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
