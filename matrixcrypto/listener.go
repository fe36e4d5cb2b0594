//go:build goolm

package matrixcrypto

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/olm"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/dagview"
)

// Listener sits between dagview and the bridge: dagview keeps DAG events as the homeserver sent them (encrypted),
// and the bridge gets them decrypted. Events it cannot bridge (no key in time, an untrusted device, plaintext where
// encryption is required) reach the room as a notice instead, and count as handled.
func (h *Helper) Listener(next dagview.Listener) dagview.Listener {
	h.next = next
	return dagview.ListenerFunc(func(ctx context.Context, evt *event.Event) error {
		return h.handle(ctx, next, evt)
	})
}

func (h *Helper) handle(ctx context.Context, next dagview.Listener, evt *event.Event) error {
	if err := h.prime(ctx, evt.RoomID); err != nil {
		return err
	}
	ours := evt.Sender == h.as.BotUserID() || h.as.IsGhost(evt.Sender)
	switch {
	case evt.Type == event.StateEncryption:
		// The state store took it already (the dispatcher keeps it); LM rooms have no encryption to carry it to.
		zerolog.Ctx(ctx).Info().Stringer("room_id", evt.RoomID).Msg("Encryption is on in the room")
		return nil
	case evt.Type == event.StateMember:
		h.mach.HandleMemberEvent(ctx, evt)
	case evt.Type == event.EventEncrypted && ours:
		// The bridge's own sends, echoed: the bridge skips them anyway, without reading them.
		return h.handOn(ctx, next, evt)
	case evt.Type == event.EventEncrypted:
		decrypted, err := h.decrypt(ctx, evt)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Stringer("event_id", evt.ID).Msg("Event not decrypted")
			if content, ok := evt.Content.Parsed.(*event.EncryptedEventContent); ok && errors.Is(err, ErrUndecryptable) {
				// Its key may still come: then it is bridged late (late.go).
				if err = h.addLate(ctx, evt, content.SessionID); err != nil {
					return err
				}
				err = ErrUndecryptable
			}
			return h.params.NotBridged(ctx, evt, err)
		}
		return h.handOn(ctx, next, decrypted)
	case h.cfg.Require && !ours && evt.StateKey == nil && evt.Type == event.EventMessage:
		linked := true
		if h.params.Linked != nil {
			var err error
			if linked, err = h.params.Linked(ctx, evt.RoomID); err != nil {
				return err
			}
		}
		if linked {
			return h.params.NotBridged(ctx, evt, ErrPlaintext)
		}
	}
	return h.handOn(ctx, next, evt)
}

// handOn hands an event to the bridge under the room's lock, which a late event's bridging takes too.
func (h *Helper) handOn(ctx context.Context, next dagview.Listener, evt *event.Event) error {
	h.roomLocks.Lock(evt.RoomID)
	defer h.roomLocks.Unlock(evt.RoomID)
	return next.HandleDAGEvent(ctx, evt)
}

// decrypt decrypts evt, waiting up to the configured key wait for a room key that has not arrived: a quarter of it
// first (the key is usually just behind the event, on the device's own /sync), then, after asking the sender's
// devices for it, the rest.
func (h *Helper) decrypt(ctx context.Context, evt *event.Event) (*event.Event, error) {
	if evt.Content.Parsed == nil {
		if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
			return nil, fmt.Errorf("%w: %w", ErrUndecryptable, err)
		}
	}
	content, ok := evt.Content.Parsed.(*event.EncryptedEventContent)
	if !ok {
		return nil, fmt.Errorf("%w: its content is not an m.room.encrypted content", ErrUndecryptable)
	}
	decrypted, err := h.mach.DecryptMegolmEvent(ctx, evt)
	if errors.Is(err, crypto.ErrNoSessionFound) || errors.Is(err, olm.ErrUnknownMessageIndex) {
		wait := h.cfg.KeyWait()
		first := wait / 4
		if !h.mach.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, first) {
			// All of the sender's devices are asked: the content's device_id is deprecated (Matrix v1.3), and another of
			// their devices may hold the key too.
			h.RequestSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, evt.Sender, "")
			h.mach.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, wait-first)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		decrypted, err = h.mach.DecryptMegolmEvent(ctx, evt)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (%w)", ErrUndecryptable, err)
	}
	if decrypted.Mautrix.TrustState < h.receiveLevel {
		return nil, ErrUntrustedDevice
	}
	return decrypted, nil
}

// prime tells the state store a room's encryption and members from dagview's state, once per room and run: the
// appservice's transactions carry only what happened after the bot joined, and a room's earlier state comes from
// /state, which dagview keeps but the state store does not see.
func (h *Helper) prime(ctx context.Context, roomID id.RoomID) error {
	if _, ok := h.primed.Load(roomID); ok {
		return nil
	}
	state, err := h.params.RoomState(ctx, roomID)
	if err != nil {
		return fmt.Errorf("failed to read the state of %s: %w", roomID, err)
	}
	for _, evt := range state {
		if evt.Type != event.StateEncryption && evt.Type != event.StateMember {
			continue
		}
		evt.Type.Class = event.StateEventType
		if evt.Content.Parsed == nil {
			_ = evt.Content.ParseRaw(evt.Type)
		}
		mautrix.UpdateStateStore(ctx, h.stateStore, evt)
	}
	h.primed.Store(roomID, struct{}{})
	return nil
}
