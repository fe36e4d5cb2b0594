package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/remote"
)

// OnEvent takes one event of an LM room's log, in log order (remote.Listener). Like HandleDAGEvent, an error
// means try again later, and an event that can never cross is answered with a notice and counts as handled.
func (br *Bridge) OnEvent(ctx context.Context, ev *remote.Event) error {
	return br.onEvent(ctx, br.lmProto, ev)
}

// onEvent is OnEvent for the protocol pr.
func (br *Bridge) onEvent(ctx context.Context, pr *protocol, ev *remote.Event) error {
	if err := br.waitBackfill(ctx, ev.RoomID); err != nil {
		return err
	}
	link, err := br.linkByLM(ctx, ev.RoomID)
	if err != nil {
		return err
	}
	if pr == br.lmProto && link != nil && link.Status == bridgedb.LinkPendingJoin && !pr.users.IsOurLMUser(ev.Sender) {
		// The LM side has a portal's events once its user's join is stored, and waitBackfill held them until the
		// link was active; still pending means a crash came between the join and the activation. Skipping the event
		// as "not linked" would lose it: it is offered again once handlePortalMember has run again. (A MIMI portal's
		// user is in the group before they join the portal, so what comes before that is skipped there.)
		return fmt.Errorf("%w: %s", errPortalJoining, ev.RoomID)
	}
	log := zerolog.Ctx(ctx).With().Str("lm_room_id", ev.RoomID).Str("lm_event_id", ev.EventID).Logger()
	ctx = log.WithContext(ctx)
	if link != nil && link.ProtocolOrLM() != pr.name {
		log.Warn().Str("protocol", pr.name).Msg("Event for a room linked through another protocol, ignoring it")
		return nil
	}
	if pr.users.IsOurLMUser(ev.Sender) {
		// An echo of what we sent, known by its sender alone, so nothing is written for it. As participant, the
		// hub's PDU gives the LM event ID of our LPDU; confirming twice changes nothing.
		if link != nil && ev.LPDUID != "" {
			_, err = br.db.ConfirmLPDU(ctx, link.DAGRoomID, link.LMRoomID, ev.LPDUID, ev.EventID, br.now())
		}
		return err
	}
	if outcome, err := br.db.Processed(ctx, bridgedb.OriginLM, ev.EventID); err != nil {
		return err
	} else if outcome != "" {
		return nil
	}
	var dagID id.EventID
	outcome := bridgedb.OutcomeBridged
	if link == nil || link.Status != bridgedb.LinkActive {
		outcome = bridgedb.OutcomeSkipped
	} else {
		dagID, err = br.handleLM(ctx, pr, ev, link)
		switch {
		case errors.Is(err, errSkip):
			outcome = bridgedb.OutcomeSkipped
		case err != nil && isPermanent(err):
			outcome = bridgedb.OutcomeFailed
			br.refuseLM(ctx, link, ev.EventID, ev.Sender, err)
		case err != nil:
			return err
		}
	}
	return br.recordLM(ctx, link, ev, dagID, outcome)
}

// recordLM marks an LM event as processed: the mapping row alone does it for a bridged event (see
// bridgedb.Processed).
func (br *Bridge) recordLM(ctx context.Context, link *bridgedb.Link, ev *remote.Event, dagID id.EventID, outcome bridgedb.Outcome) error {
	if dagID != "" {
		stored, err := br.db.InsertEventUnlessDAGMapped(ctx, &bridgedb.EventMapping{DAGRoomID: link.DAGRoomID,
			DAGEventID: dagID, LMRoomID: link.LMRoomID, LMEventID: ev.EventID, Origin: bridgedb.OriginLM,
			Sender: ev.Sender, CreatedAt: br.now()})
		if err != nil || stored {
			return err
		}
		zerolog.Ctx(ctx).Debug().Stringer("dag_event_id", dagID).Msg("Homeserver answered with an event that is already mapped")
	}
	return br.db.MarkProcessed(ctx, bridgedb.OriginLM, ev.EventID, outcome, br.now())
}

// errPortalJoining means an LM event came for a portal whose link is not active yet; the LM side delivers it again.
var errPortalJoining = errors.New("the portal's LM join has not been recorded yet")

func (br *Bridge) handleLM(ctx context.Context, pr *protocol, ev *remote.Event, link *bridgedb.Link) (id.EventID, error) {
	isState := ev.StateKey != nil
	if err := classify(ev.Type, isState); err != nil {
		return "", err
	}
	ghost, err := br.users.GhostOf(ev.Sender)
	if err != nil {
		return "", err
	}
	if isState && ev.Type == event.StateMember.Type {
		return "", br.lmMemberToDAG(ctx, pr, ev, link, ghost)
	}
	content, err := parseContent(ev.Content)
	if err != nil {
		return "", err
	}
	evtType := event.Type{Type: ev.Type, Class: event.MessageEventType}
	when := ts(ev.OriginServerTS)
	if isState {
		evtType.Class = event.StateEventType
		var creators []id.UserID
		var dagPL Content
		if evtType == event.StatePowerLevels {
			state, err := br.matrix.StateEvents(ctx, link.DAGRoomID)
			if err != nil {
				return "", fmt.Errorf("failed to read room state: %w", err)
			}
			creators = roomCreators(findState(state, event.StateCreate, ""))
			if pl := findState(state, event.StatePowerLevels, ""); pl != nil {
				dagPL, _ = parseContent(pl.Content.VeryRaw)
			}
		}
		if content, err = pr.tr.translateState(ctx, toDAG, ev.Type, content, creators, dagPL); err != nil {
			return "", err
		}
		if err = br.mediaToDAG(ctx, content, ghost); err != nil {
			return "", err
		}
		return br.asGhostOrBot(ctx, ghost, func(sender id.UserID) (id.EventID, error) {
			return br.matrix.SendState(ctx, link.DAGRoomID, sender, evtType, *ev.StateKey, content, when)
		})
	}
	if content, err = pr.tr.translateMessage(ctx, toDAG, content); err != nil {
		return "", err
	}
	if err = br.mediaToDAG(ctx, content, ghost); err != nil {
		return "", err
	}
	if evtType == event.EventRedaction {
		target, _ := content["redacts"].(string)
		reason, _ := content["reason"].(string)
		return br.asGhostOrBot(ctx, ghost, func(sender id.UserID) (id.EventID, error) {
			return br.matrix.Redact(ctx, link.DAGRoomID, sender, id.EventID(target), reason, ev.EventID)
		})
	}
	return br.matrix.SendMessage(ctx, link.DAGRoomID, ghost, evtType, content, when, ev.EventID)
}

// asGhostOrBot does something as the ghost of the LM sender and, when the homeserver refuses the ghost (it lacks
// power in the DAG room), as the bot, which the room's admins gave the power to act for the LM room.
func (br *Bridge) asGhostOrBot(ctx context.Context, ghost id.UserID, fn func(sender id.UserID) (id.EventID, error)) (id.EventID, error) {
	evtID, err := fn(ghost)
	if err == nil || !isForbiddenHTTP(err) {
		return evtID, err
	}
	zerolog.Ctx(ctx).Debug().Err(err).Stringer("ghost", ghost).Msg("Ghost may not do this, trying as the bot")
	return fn(br.users.BotUserID)
}

func isForbiddenHTTP(err error) bool {
	var httpErr mautrix.HTTPError
	return errors.As(err, &httpErr) && httpErr.RespError != nil && httpErr.RespError.ErrCode == mautrix.MForbidden.ErrCode
}

// lmMemberToDAG carries a membership change of an LM user (or one an LM user made to a Matrix user) to the DAG room.
func (br *Bridge) lmMemberToDAG(ctx context.Context, pr *protocol, ev *remote.Event, link *bridgedb.Link, ghost id.UserID) error {
	target := *ev.StateKey
	targetMX, err := pr.users.MatrixSideOf(target)
	if err != nil {
		return err
	}
	content, err := parseContent(ev.Content)
	if err != nil {
		return err
	}
	mc := parseMember(ev.Sender, target, content, nil)
	if !isKnownMembership(mc.Membership) {
		return fmt.Errorf("%w (membership %q)", ErrUnsupportedType, mc.Membership)
	}
	room := link.DAGRoomID
	self := ev.Sender == target
	if self {
		if mc.Membership == event.MembershipJoin {
			name := mc.Displayname
			if name == "" {
				// Without a name of their own, a ghost is shown by the LM user ID rather than its encoded localpart.
				name = target
			}
			if err = br.ensureGhostProfile(ctx, target, name, mc.AvatarURL); err != nil {
				return err
			}
		}
		return br.matrix.SetMembership(ctx, room, ghost, ghost, mc.Membership, mc.Reason)
	}
	membership := mc.Membership
	if membership == event.MembershipLeave && br.dagMembership(ctx, room, targetMX) == event.MembershipBan {
		membership = MembershipUnban
	}
	_, err = br.asGhostOrBot(ctx, ghost, func(sender id.UserID) (id.EventID, error) {
		reason := mc.Reason
		if sender != ghost {
			reason = joinReason(reason, "by "+ev.Sender+" on "+pr.name)
		}
		return "", br.matrix.SetMembership(ctx, room, sender, targetMX, membership, reason)
	})
	return err
}

func joinReason(reason, suffix string) string {
	if reason == "" {
		return suffix
	}
	return reason + " (" + suffix + ")"
}

// dagMembership returns a user's membership in a DAG room as dagview knows it, "" when unknown.
func (br *Bridge) dagMembership(ctx context.Context, roomID id.RoomID, userID id.UserID) event.Membership {
	state, err := br.matrix.StateEvents(ctx, roomID)
	if err != nil {
		return ""
	}
	if evt := findState(state, event.StateMember, string(userID)); evt != nil {
		c, _ := parseContent(evt.Content.VeryRaw)
		m, _ := c["membership"].(string)
		return event.Membership(m)
	}
	return ""
}

// ensureGhostProfile pushes an LM user's display name and avatar to their ghost when they changed. The homeserver
// carries a global profile change into the member events of the rooms the ghost is in. The stored profile holds the
// LM avatar URI, not its homeserver copy, and holds none when the copy could not be had, so that the next member
// event tries again.
func (br *Bridge) ensureGhostProfile(ctx context.Context, lmUser, displayname, avatar string) error {
	if displayname == "" && avatar == "" {
		return nil
	}
	stored, err := br.db.GetGhostProfile(ctx, lmUser)
	if err != nil {
		return err
	}
	want := bridgedb.GhostProfile{Displayname: displayname, AvatarURL: avatar}
	if stored != nil && *stored == want {
		return nil
	}
	ghost, err := br.users.GhostOf(lmUser)
	if err != nil {
		return err
	}
	local := avatar
	if stored == nil || stored.AvatarURL != avatar {
		if local = br.avatarToDAG(ctx, avatar, ghost); local == "" {
			want.AvatarURL = ""
		}
	} else {
		// Only the name changed: the avatar is on the ghost already.
		local = ""
	}
	avatarURI, _ := id.ParseContentURI(local)
	if err = br.matrix.SetProfile(ctx, ghost, displayname, avatarURI); err != nil {
		return fmt.Errorf("failed to set profile of %s: %w", ghost, err)
	}
	return br.db.PutGhostProfile(ctx, lmUser, want)
}

// syncLMMembers makes the ghosts of the LM room's joined remote users join the DAG room, with their profiles; used
// when a link starts from an LM room that already has members.
func (br *Bridge) syncLMMembers(ctx context.Context, link *bridgedb.Link) {
	log := zerolog.Ctx(ctx)
	pr := br.protoOf(link)
	state, err := pr.rooms.RoomState(ctx, remote.RoomID(link.LMRoomID))
	if err != nil {
		log.Err(err).Str("lm_room_id", link.LMRoomID).Msg("Failed to read LM room state for members")
		return
	}
	for _, entry := range state {
		if entry.Type != event.StateMember.Type || entry.Membership != string(event.MembershipJoin) ||
			pr.users.IsOurLMUser(entry.StateKey) {
			continue
		}
		ghost, err := br.users.GhostOf(entry.StateKey)
		if err != nil {
			continue
		}
		if stored, err := pr.rooms.RoomEvent(ctx, entry.EventID); err == nil && stored == nil {
			// A protocol that keeps no member events (MIMI) has no profile either: the ghost is named by the ID.
			if err = br.ensureGhostProfile(ctx, entry.StateKey, entry.StateKey, ""); err != nil {
				log.Warn().Err(err).Str("lm_user", entry.StateKey).Msg("Failed to set ghost profile")
			}
		} else if err == nil {
			if p, err := parseStoredMember(stored); err == nil {
				if p.Displayname == "" {
					p.Displayname = entry.StateKey
				}
				if err = br.ensureGhostProfile(ctx, entry.StateKey, p.Displayname, p.AvatarURL); err != nil {
					log.Warn().Err(err).Str("lm_user", entry.StateKey).Msg("Failed to set ghost profile")
				}
			}
		}
		if err = br.matrix.SetMembership(ctx, link.DAGRoomID, ghost, ghost, event.MembershipJoin, ""); err != nil {
			log.Warn().Err(err).Stringer("ghost", ghost).Msg("Failed to join ghost to DAG room")
		}
	}
}

func parseStoredMember(stored *remote.Event) (memberChange, error) {
	var content Content
	if err := json.Unmarshal(stored.Content, &content); err != nil {
		return memberChange{}, err
	}
	stateKey := ""
	if stored.StateKey != nil {
		stateKey = *stored.StateKey
	}
	return parseMember(stored.Sender, stateKey, content, nil), nil
}
