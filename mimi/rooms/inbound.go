package rooms

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/mimi/content"
	"github.com/lmbridge/lmbridge/mimi/matrixcontent"
	"github.com/lmbridge/lmbridge/mimi/provider"
	"github.com/lmbridge/lmbridge/remote"
)

// OnMessage hands a remote user's message to the listener as the Matrix events it maps to. Content that cannot be
// shown in Matrix is logged and dropped (returning an error would hold the room's inbox up for ever).
func (c *callbacks) OnMessage(ctx context.Context, m provider.Message) error {
	r := c.r
	l, err := r.getListener()
	if err != nil {
		return err
	}
	log := zerolog.Ctx(ctx).With().Str("mimi_room", m.Room).Str("mimi_sender", m.Sender).Logger()
	roomID, err := SeamRoom(m.Room)
	if err != nil {
		log.Warn().Err(err).Msg("MIMI message in a room without a Matrix form, dropping it")
		return nil
	}
	sender, err := SeamUser(m.Sender)
	if err != nil {
		log.Warn().Err(err).Msg("MIMI message from a user without a Matrix form, dropping it")
		return nil
	}
	msg, err := content.Decode(m.Content)
	if err != nil {
		log.Warn().Err(err).Msg("Malformed MIMI content, dropping it")
		return nil
	}
	mid, err := content.ComputeMessageID(idScheme, m.Sender, m.Room, m.Content)
	if err != nil {
		log.Warn().Err(err).Msg("MIMI content without a message ID, dropping it")
		return nil
	}
	log = log.With().Str("mimi_message_id", mid.String()).Logger()
	var mediaErr error
	events, err := matrixcontent.ToMatrix(msg, matrixcontent.ToMatrixOptions{
		ExternalMedia: func(part *content.ExternalPart) (matrixcontent.Uploaded, error) {
			up, err := r.unsealMedia(ctx, sender, part)
			if err != nil && mediaErr == nil {
				mediaErr = err
			}
			return up, err
		},
		EventID: func(target content.MessageID) (id.EventID, bool) {
			return id.EventID(EventIDOf(r.rootOf(ctx, target))), true
		},
		UserID: func(uri string) (id.UserID, bool) {
			u, err := SeamUser(uri)
			return id.UserID(u), err == nil
		},
	})
	switch {
	case mediaErr != nil && !errors.Is(mediaErr, ErrMediaRefused):
		// The homeserver or the database did not answer: the inbox offers the message again.
		return mediaErr
	case mediaErr != nil && err != nil:
		log.Warn().Err(mediaErr).Msg("MIMI message with a file that cannot be bridged, sending a notice instead")
		events = []matrixcontent.Event{{Type: event.EventMessage, Content: &event.MessageEventContent{MsgType: event.MsgNotice,
			Body: "⚠️ A file sent from MIMI could not be bridged: " + mediaErr.Error()}}}
	case err != nil:
		log.Warn().Err(err).Msg("MIMI message with nothing Matrix can show, dropping it")
		return nil
	}
	reaction := slices.ContainsFunc(events, func(e matrixcontent.Event) bool { return e.Type == event.EventReaction })
	if err = r.putMessage(ctx, m.Room, mid, msg, reaction); err != nil {
		return err
	}
	log.Debug().Int("events", len(events)).Msg("Received MIMI message")
	base := EventIDOf(mid)
	for i, e := range events {
		raw, err := json.Marshal(e.Content)
		if err != nil {
			return fmt.Errorf("encoding a Matrix event for MIMI message %s: %w", mid, err)
		}
		evID := string(base)
		if i > 0 {
			evID += "-" + strconv.Itoa(i)
		}
		ev := &remote.Event{RoomID: string(roomID), EventID: evID, Type: e.Type.Type, Sender: string(sender),
			OriginServerTS: m.HubTime.UnixMilli(), Content: raw}
		if err = l.OnEvent(ctx, ev); err != nil {
			return err
		}
	}
	return nil
}

// OnMembership hands participant-list changes to the listener as member events, and a local user's first join to a
// room another provider's user added them to as an invite.
func (c *callbacks) OnMembership(ctx context.Context, m provider.Membership) error {
	r := c.r
	l, err := r.getListener()
	if err != nil {
		return err
	}
	log := zerolog.Ctx(ctx).With().Str("mimi_room", m.Room).Str("mimi_user", m.User).Str("kind", string(m.Kind)).Logger()
	roomID, err := SeamRoom(m.Room)
	if err != nil {
		log.Warn().Err(err).Msg("MIMI room without a Matrix form, ignoring its membership")
		return nil
	}
	target, err := SeamUser(m.User)
	if err != nil {
		log.Warn().Err(err).Msg("MIMI user without a Matrix form, ignoring their membership")
		return nil
	}
	local := r.isOurs(m.User)
	switch m.Kind {
	case provider.MemberAdded:
		if local {
			// Added by us (echo) or by another provider, whose Welcome arrives as LocalJoined.
			return nil
		}
		// Whoever added them, the Matrix side shows the user joining, as a user joins an LM room they were invited to.
		if _, err := r.takeIntent(ctx, m.Room, m.User, intentAdd); err != nil {
			return err
		}
		return l.OnEvent(ctx, r.memberEvent(roomID, m, target, target, "join"))
	case provider.MemberRemoved:
		actor, err := r.takeIntent(ctx, m.Room, m.User, intentRemove)
		if err != nil {
			return err
		}
		sender := target
		if actor != "" {
			if sender, err = SeamUser(actor); err != nil {
				return nil
			}
		} else if local {
			// Another provider's user removed ours; which one the participant list does not say.
			sender = r.remoteActor(ctx, m.Room)
		}
		return l.OnEvent(ctx, r.memberEvent(roomID, m, sender, target, "leave"))
	case provider.LocalJoined:
		if ours, err := r.hasIntent(ctx, m.Room, m.User, intentAdd); err != nil {
			return err
		} else if ours {
			_, err = r.takeIntent(ctx, m.Room, m.User, intentAdd)
			return err
		}
		return r.invite(ctx, l, roomID, m, target)
	}
	return nil
}

// memberEvent is a participant-list change as an m.room.member event, its ID derived from the change so that a
// redelivery is recognised.
func (r *Rooms) memberEvent(roomID remote.RoomID, m provider.Membership, sender, target remote.UserID, membership string) *remote.Event {
	sum := sha256.Sum256([]byte(m.Room + "\x00" + m.User + "\x00" + string(m.Kind) + "\x00" + strconv.FormatInt(m.HubTime.UnixMilli(), 10)))
	stateKey := string(target)
	raw, _ := json.Marshal(map[string]any{"membership": membership})
	return &remote.Event{RoomID: string(roomID), EventID: "$m" + hex.EncodeToString(sum[:]), Type: event.StateMember.Type,
		StateKey: &stateKey, Sender: string(sender), OriginServerTS: m.HubTime.UnixMilli(), Content: raw}
}

// remoteActor is a user of another provider in the room (admins first) to show as the author of a change another
// provider made, or the hub's provider itself.
func (r *Rooms) remoteActor(ctx context.Context, room string) remote.UserID {
	hub, _ := provider.ParseRoom(room)
	if state, err := r.p.RoomState(ctx, room); err == nil {
		ps := slices.Clone(state.Participants)
		slices.SortStableFunc(ps, func(a, b provider.Participant) int { return int(b.Role) - int(a.Role) })
		for _, p := range ps {
			if !r.isOurs(p.User) && p.Role != provider.RoleBanned {
				if u, err := SeamUser(p.User); err == nil {
					return u
				}
			}
		}
	}
	return remote.UserID("@mimi:" + hub)
}

// invite tells the listener that a local user is in a room through another provider.
func (r *Rooms) invite(ctx context.Context, l remote.Listener, roomID remote.RoomID, m provider.Membership, target remote.UserID) error {
	hub, _ := provider.ParseRoom(m.Room)
	inviter := r.remoteActor(ctx, m.Room)
	var stripped []json.RawMessage
	if state, err := r.p.RoomState(ctx, m.Room); err == nil && state.Metadata.Name != "" {
		raw, _ := json.Marshal(map[string]any{"type": event.StateRoomName.Type, "state_key": "",
			"content": map[string]any{"name": state.Metadata.Name}})
		stripped = append(stripped, raw)
	} else if err != nil && !errors.Is(err, provider.ErrUnknownRoom) {
		return err
	}
	sum := sha256.Sum256([]byte(m.Room + "\x00" + m.User + "\x00invite"))
	return l.OnInvite(ctx, &remote.Invite{RoomID: string(roomID), EventID: "$i" + hex.EncodeToString(sum[:]),
		Target: string(target), Sender: string(inviter), HubServer: hub, RoomVersion: "mimi", StrippedState: stripped})
}
