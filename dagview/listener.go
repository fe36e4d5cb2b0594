package dagview

import (
	"context"

	"maunium.net/go/mautrix/event"
)

// Listener is what the bridge implements to receive the DAG side.
//
// HandleDAGEvent is called once per event of every room the view tracks:
//   - per room, one call at a time, in stream order (the order the homeserver pushed the events, then the order
//     catch-up found them after a gap); different rooms are called concurrently, so a slow room does not hold up
//     another;
//   - after the event has been appended to the room's stream and, for a state event, applied to the room's current
//     state: View.State, View.StateEvents and View.Members called from inside HandleDAGEvent see the room as of
//     this event;
//   - at least once: returning nil marks the event delivered; returning an error has it offered again, with
//     backoff, until it succeeds or the appservice gives up on it (recorded with the error, the room moves on). A
//     crash between the listener's success and the mark redelivers the event after the restart, so the listener
//     dedups by event ID (evt.ID);
//   - for every event, including the bot's own, the ghosts' own (echoes of what the bridge sent) and invites: echo
//     suppression and permission checks are the listener's job;
//   - with evt.Content parsed where mautrix knows the type (evt.Content.Parsed), and evt.Content.Raw always set.
//
// ctx carries the logger (with room_id and event_id) and is cancelled at shutdown.
type Listener interface {
	HandleDAGEvent(ctx context.Context, evt *event.Event) error
}

// ListenerFunc adapts a function to Listener.
type ListenerFunc func(ctx context.Context, evt *event.Event) error

// HandleDAGEvent calls fn.
func (fn ListenerFunc) HandleDAGEvent(ctx context.Context, evt *event.Event) error {
	return fn(ctx, evt)
}
