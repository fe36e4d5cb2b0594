package bridge

import (
	"context"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/remote"
)

// ts turns a millisecond timestamp into the time the sends take; zero stays zero (now).
func ts(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// noticeContent is a bot notice in reply to an event, mentioning whom it is for.
func noticeContent(text string, replyTo string, mention string) Content {
	c := Content{"msgtype": string(event.MsgNotice), "body": text}
	if replyTo != "" {
		c["m.relates_to"] = map[string]any{"m.in_reply_to": map[string]any{"event_id": replyTo}}
	}
	if mention != "" {
		c["m.mentions"] = map[string]any{"user_ids": []any{mention}}
	}
	return c
}

// refuseDAG tells the sender of a DAG event that it did not cross, and why, and logs it with both rooms.
func (br *Bridge) refuseDAG(ctx context.Context, evt *event.Event, link *bridgedb.Link, reason error) {
	br.tellDAG(ctx, evt.RoomID, evt.ID, evt.Sender, link, "Your event was not bridged to LM: "+reason.Error(), reason)
}

// tellDAG posts a notice about a DAG event in its room, logs it, and records it as the link's last error.
func (br *Bridge) tellDAG(ctx context.Context, roomID id.RoomID, eventID id.EventID, sender id.UserID, link *bridgedb.Link, text string, reason error) {
	log := zerolog.Ctx(ctx).Warn().Err(reason).Stringer("dag_room_id", roomID).Stringer("dag_event_id", eventID).
		Stringer("sender", sender)
	if link != nil {
		log = log.Str("lm_room_id", link.LMRoomID)
	}
	log.Msg("Event not bridged to LM")
	if link != nil {
		if err := br.db.SetLinkError(ctx, link.DAGRoomID, reason.Error(), br.now()); err != nil {
			zerolog.Ctx(ctx).Err(err).Msg("Failed to record link error")
		}
	}
	_, err := br.matrix.SendMessage(ctx, roomID, br.users.BotUserID, event.EventMessage,
		noticeContent("⚠️ "+text, string(eventID), string(sender)), time.Time{}, "notice:"+string(eventID))
	if err != nil {
		zerolog.Ctx(ctx).Err(err).Stringer("dag_event_id", eventID).Msg("Failed to send not-bridged notice")
	}
}

// refuseLM tells the LM sender of an event that it did not reach the DAG room, through the bot's LM identity where
// it is in the room (the rooms we host), and logs it with both rooms either way.
func (br *Bridge) refuseLM(ctx context.Context, link *bridgedb.Link, lmEventID, sender string, reason error) {
	zerolog.Ctx(ctx).Warn().Err(reason).Str("lm_room_id", link.LMRoomID).Str("lm_event_id", lmEventID).
		Str("sender", sender).Stringer("dag_room_id", link.DAGRoomID).Msg("Event not bridged to Matrix")
	if err := br.db.SetLinkError(ctx, link.DAGRoomID, reason.Error(), br.now()); err != nil {
		zerolog.Ctx(ctx).Err(err).Msg("Failed to record link error")
	}
	if link.Role != bridgedb.RoleHub {
		return
	}
	content := noticeContent("⚠️ Your event was not bridged to Matrix: "+reason.Error(), lmEventID, sender)
	pr := br.protoOf(link)
	if _, err := pr.rooms.SendRoomEvent(ctx, &remote.SendRequest{Room: remote.RoomID(link.LMRoomID), Sender: remote.UserID(pr.botLM),
		Type: event.EventMessage.Type, Content: content}); err != nil {
		zerolog.Ctx(ctx).Err(err).Str("lm_event_id", lmEventID).Msg("Failed to send not-bridged notice on LM")
	}
}

// OnLPDUFailed is called when a hub refused an LPDU we sent for a DAG event: its sender hears why.
func (br *Bridge) OnLPDUFailed(ctx context.Context, roomID, lpduID, reason string) {
	br.refused.add(lpduID, br.now())
	m, err := br.db.GetEventByLPDU(ctx, lpduID)
	if err != nil || m == nil || m.DAGEventID == "" {
		zerolog.Ctx(ctx).Warn().Err(err).Str("lm_room_id", roomID).Str("lpdu_id", lpduID).Str("reason", reason).
			Msg("Hub refused an LPDU that maps to no DAG event")
		return
	}
	log := zerolog.Ctx(ctx).With().Str("lpdu_id", lpduID).Str("lm_room_id", roomID).Logger()
	ctx = log.WithContext(ctx)
	link, err := br.linkByLM(ctx, roomID)
	if err != nil {
		log.Err(err).Msg("Failed to get link of refused LPDU")
	}
	br.tellDAG(ctx, m.DAGRoomID, m.DAGEventID, id.UserID(m.Sender), link,
		"Your event was rejected by the LM room's hub: "+reason, &hubRefusal{reason: reason})
}

// hubRefusal is the reason a hub gave in failed_pdus.
type hubRefusal struct{ reason string }

func (e *hubRefusal) Error() string { return "rejected by the hub: " + e.reason }
