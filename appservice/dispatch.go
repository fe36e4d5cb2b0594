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

	"github.com/lmbridge/lmbridge/database"
)

// EventHandler receives the events of the inbox. Calls for one room come one at a time, in the order the homeserver
// sent them; calls for different rooms run concurrently. An event counts as handled once HandleEvent returns nil:
// after a crash, anything not yet marked handled is delivered again, so delivery is at least once and the handler
// dedups by event ID.
type EventHandler interface {
	HandleEvent(ctx context.Context, evt *event.Event) error
}

// HandledRecorder is implemented by an EventHandler that keeps its own record of the events it finished and writes
// it lazily: the dispatcher calls RecordHandled inside the database transaction that marks a room's events handled
// in the inbox (ctx carries that transaction), so that both records cost one write per pass over the room's queue
// instead of one write each per event.
type HandledRecorder interface {
	RecordHandled(ctx context.Context, roomID id.RoomID) error
}

// EventBatchPreparer is implemented by an EventHandler that can do the storing part of its work for several
// consecutive events of a room in one database transaction instead of one each. When a room worker has events ready
// (one or more), it calls PrepareEvents with them (in order) before offering them one by one to HandleEvent as usual;
// the handler prepares as many of them from the start as it can and says how many. An error, or a count of 0, only
// means the events are handled one by one without it. ctx is the worker's: WriteHandledMarks and EventJSON work in
// it for the events given.
type EventBatchPreparer interface {
	PrepareEvents(ctx context.Context, events []*event.Event) (prepared int, err error)
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
	// The events handled are marked in few writes rather than one write each: in one statement for a stretch of
	// them, written by the next event's handler in its own transaction or at the latest when the room goes quiet.
	// Until then a crash only has them offered again, and the handler dedups by event ID.
	done := handledRange{inbox: d.as.inbox, roomID: roomID}
	ctx := context.WithValue(log.WithContext(d.ctx), handledMarksKey{}, &done)
	// after is the last event this worker finished with: events after it whose marks are still unwritten are not
	// read again.
	var after int64
	for {
		events, err := d.as.inbox.pending(ctx, roomID, after, dispatchBatch)
		if err != nil {
			if ctx.Err() != nil {
				d.markHandled(ctx, &done)
				return
			}
			log.Err(err).Msg("Failed to read pending events")
			if !sleepCtx(ctx, time.Second) {
				d.markHandled(ctx, &done)
				return
			}
			continue
		}
		decoded := make([]*event.Event, len(events))
		decodeErrs := make([]error, len(events))
		for i := range events {
			decoded[i], decodeErrs[i] = DecodeEvent(events[i].json)
		}
		preparedUntil := 0
		for i, ie := range events {
			if i >= preparedUntil {
				preparedUntil = i + d.prepare(ctx, events[i:], decoded[i:], decodeErrs[i:])
			}
			if !d.handleOne(ctx, ie, decoded[i], decodeErrs[i], &done) {
				d.markHandled(ctx, &done)
				return
			}
			after = ie.seq
		}
		if len(events) < dispatchBatch {
			// A short page was everything pending when it was read; anything stored since has woken the worker, so
			// without a wake-up the room is idle and another read would come back empty. The marks wait a moment
			// for the room's next event, whose handler writes them with its own (WriteHandledMarks).
			if !d.lingerForMarks(ctx, wake, &done) {
				return
			}
			if d.idle(roomID, wake) {
				return
			}
		}
	}
}

// markDelay is how long a room's handled marks wait for the room's next event to carry them before they are written
// on their own. Until then a crash has the room's last events offered again, which the handler recognises.
const markDelay = 50 * time.Millisecond

// lingerForMarks waits until the room's unwritten marks are written: by the next event's handler if one comes within
// markDelay (a wake-up, answered by putting the wake-up back for the caller), else here. false means ctx ended.
func (d *dispatcher) lingerForMarks(ctx context.Context, wake chan struct{}, done *handledRange) bool {
	if done.first == 0 {
		return true
	}
	timer := time.NewTimer(markDelay)
	defer timer.Stop()
	select {
	case <-wake:
		select {
		case wake <- struct{}{}:
		default:
		}
	case <-timer.C:
		d.markHandled(ctx, done)
	case <-ctx.Done():
		d.markHandled(ctx, done)
		return false
	}
	return true
}

// handledRange is the stretch of a room's inbox that a pass handled and has not yet marked. Events of one room are
// handled in seq order, one at a time, so the stretch is contiguous: everything from first to last that is still
// unhandled in the inbox (events given up on are marked at once) was handled by the pass.
type handledRange struct {
	inbox       *inbox
	roomID      id.RoomID
	first, last int64
}

type handledMarksKey struct{}

type eventJSONKey struct{}

type batchJSONKey struct{}

// EventJSON returns the event as the homeserver sent it, when ctx is the dispatcher's call for that event: a handler
// that stores events can keep these bytes instead of encoding the parsed event again.
func EventJSON(ctx context.Context, eventID id.EventID) (string, bool) {
	if ie, ok := ctx.Value(eventJSONKey{}).(*inboxEvent); ok && ie.eventID == eventID {
		return ie.json, true
	}
	if batch, ok := ctx.Value(batchJSONKey{}).([]inboxEvent); ok {
		for i := range batch {
			if batch[i].eventID == eventID {
				return batch[i].json, true
			}
		}
	}
	return "", false
}

// WriteHandledMarks writes the inbox's handled marks for the events of the room that the dispatcher finished before
// the one being handled, using ctx's database transaction: a handler that writes a transaction per event anyway calls
// it inside, so the marks cost no write of their own. committed must be called once that transaction has committed
// (and not otherwise): the marks are then forgotten; until then they stay pending, and writing them twice is harmless.
// Outside a dispatcher's call it does nothing.
func WriteHandledMarks(ctx context.Context) (committed func(), err error) {
	r, ok := ctx.Value(handledMarksKey{}).(*handledRange)
	if !ok || r.first == 0 {
		return func() {}, nil
	}
	first, last := r.first, r.last
	if err = r.inbox.markHandled(ctx, r.roomID, first, last); err != nil {
		return nil, err
	}
	return func() {
		if r.first == first && r.last == last {
			r.first, r.last = 0, 0
		}
	}, nil
}

func (r *handledRange) add(seq int64) {
	if r.first == 0 {
		r.first = seq
	}
	r.last = seq
}

// markHandled writes the range as handled, together with the handler's own record of it (HandledRecorder), in one
// database transaction, and empties it; false means it could not, and the events will be offered again. Either way
// the range restarts empty, so it never stretches over an event that was not handled.
func (d *dispatcher) markHandled(ctx context.Context, r *handledRange) bool {
	if r.first == 0 {
		return true
	}
	first, last := r.first, r.last
	r.first, r.last = 0, 0
	// Bookkeeping after the handler ran must land even when shutdown cancels ctx, or finished events would be
	// handled a second time after the restart.
	markCtx := context.WithoutCancel(ctx)
	recorder, _ := d.handler.(HandledRecorder)
	err := d.as.inbox.db.DoTxn(markCtx, nil, func(ctx context.Context) error {
		if err := d.as.inbox.markHandled(ctx, r.roomID, first, last); err != nil {
			return err
		}
		if recorder != nil {
			return recorder.RecordHandled(ctx, r.roomID)
		}
		return nil
	})
	if err != nil {
		zerolog.Ctx(ctx).Err(err).Int64("first_seq", first).Int64("last_seq", last).Msg("Failed to mark events handled")
		return false
	}
	return true
}

// prepare offers the run of decodable events at the start of events to the handler's PrepareEvents, when it has one. It returns how many events the next call should skip: those prepared, and
// at least the first one, so each event is offered for preparing once per page.
func (d *dispatcher) prepare(ctx context.Context, events []inboxEvent, decoded []*event.Event, decodeErrs []error) int {
	preparer, ok := d.handler.(EventBatchPreparer)
	if !ok {
		return len(events)
	}
	run := 0
	for run < len(events) && decodeErrs[run] == nil {
		run++
	}
	if run == 0 {
		return 1
	}
	n, err := preparer.PrepareEvents(context.WithValue(ctx, batchJSONKey{}, events[:run]), decoded[:run])
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Int("events", run).Msg("Failed to prepare events together, handling them one by one")
		return 1
	}
	return max(n, 1)
}

// handleOne offers one event to the handler until it succeeds or runs out of attempts, adding it to done when it
// succeeds; false means ctx ended. evt and err are the event decoded from ie.
func (d *dispatcher) handleOne(ctx context.Context, ie inboxEvent, evt *event.Event, err error, done *handledRange) bool {
	log := zerolog.Ctx(ctx).With().Stringer("event_id", ie.eventID).Logger()
	markCtx := context.WithoutCancel(ctx)
	if err != nil {
		// Validated on the way in, so this is a bug or a corrupted row; recording it beats blocking the room.
		log.Err(err).Msg("Failed to decode stored event")
		d.markHandled(ctx, done)
		if err = d.as.inbox.markGivenUp(markCtx, ie.seq, err); err != nil {
			log.Err(err).Msg("Failed to mark undecodable event")
		}
		return ctx.Err() == nil
	}
	mautrix.UpdateStateStore(ctx, d.as.stateStore, evt)
	handlerCtx := context.WithValue(log.WithContext(ctx), eventJSONKey{}, &ie)
	attempts := ie.attempts
	for {
		err = d.handler.HandleEvent(handlerCtx, evt)
		if err == nil {
			done.add(ie.seq)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		// What was handled before this event is marked now, not after a retry that may take minutes.
		d.markHandled(ctx, done)
		if !database.IsFull(err) {
			attempts++
		}
		if givesUp(attempts, err) {
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

// DecodeEvent parses an event as the homeserver sent it (and as the inbox and dagview store it): its type class set
// from whether it has a state key, its content parsed where the type is known.
func DecodeEvent(raw string) (*event.Event, error) {
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

// givesUp says whether an event whose handler failed attempts times, the last with err, is given up so that its
// room can move on. A full database is never the event's fault and does not count: an event given up then would be
// lost however soon space came back, and every event of the room would fail the same way meanwhile.
func givesUp(attempts int, err error) bool {
	if database.IsFull(err) {
		return false
	}
	return attempts >= maxHandleAttempts || errors.Is(err, ErrPermanent)
}
