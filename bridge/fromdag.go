package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/remote"
)

// sent is what crossed for one event: the ID on the other side, whether it is an LPDU ID awaiting the hub's echo, and
// whether its mapping row was written in the engine's transaction already.
type sent struct {
	lmID     string
	isLPDU   bool
	recorded bool
}

// HandleDAGEvent takes one event of a DAG room, in the room's order (dagview.Listener). An error means the event
// could not be handled for a reason that may pass (the database, the network) and should be offered again; an event
// that cannot cross for good is answered with a notice to its sender and counts as handled.
func (br *Bridge) HandleDAGEvent(ctx context.Context, evt *event.Event) error {
	if br.isBotJoin(evt) {
		// The bot joining a room that waits for it to become a direct chat.
		return br.linkPendingDM(ctx, evt)
	}
	if br.users.IsPuppet(evt.Sender) {
		// Our bot and our ghosts only ever say what the bridge made them say: echoes, skipped without a write.
		return nil
	}
	link, err := br.linkByDAG(ctx, evt.RoomID)
	if err != nil {
		return err
	}
	if _, isCmd := br.commandArgs(evt); link == nil && !isCmd && !br.isGhostInvite(evt) {
		// Rooms without a link are most rooms the bot is in; handling their events again changes nothing.
		return nil
	}
	// The per-event reads and writes run without ctx's cancellation: with it, mattn/go-sqlite3 runs every statement
	// on a goroutine of its own so that it can interrupt it, a hand-off per statement on the room's serial path.
	// They are local and short, and a write that has started must land anyway.
	dbCtx := context.WithoutCancel(ctx)
	if outcome, err := br.db.Processed(dbCtx, bridgedb.OriginDAG, string(evt.ID)); err != nil {
		return err
	} else if outcome != "" {
		return nil
	}
	out, err := br.handleDAG(ctx, evt, link)
	outcome := bridgedb.OutcomeBridged
	switch {
	case errors.Is(err, errSkip):
		outcome = bridgedb.OutcomeSkipped
	case err != nil && isPermanent(err):
		outcome = bridgedb.OutcomeFailed
		br.refuseDAG(ctx, evt, link, err)
	case err != nil:
		return err
	}
	if out != nil && out.recorded {
		return nil
	}
	if out != nil && out.lmID != "" {
		return br.recordDAG(dbCtx, evt, link, out)
	}
	return br.db.MarkProcessed(dbCtx, bridgedb.OriginDAG, string(evt.ID), outcome, br.now())
}

// recordDAG writes the mapping of a DAG event that crossed; the mapping row alone marks it as processed (see
// bridgedb.Processed).
func (br *Bridge) recordDAG(ctx context.Context, evt *event.Event, link *bridgedb.Link, out *sent) error {
	if out.isLPDU {
		return br.db.InsertLPDU(ctx, evt.RoomID, evt.ID, link.LMRoomID, out.lmID, string(evt.Sender), br.now())
	}
	return br.db.InsertEvent(ctx, &bridgedb.EventMapping{DAGRoomID: evt.RoomID, DAGEventID: evt.ID,
		LMRoomID: link.LMRoomID, LMEventID: out.lmID, Origin: bridgedb.OriginDAG,
		Sender: string(evt.Sender), CreatedAt: br.now()})
}

func (br *Bridge) handleDAG(ctx context.Context, evt *event.Event, link *bridgedb.Link) (*sent, error) {
	if args, isCmd := br.commandArgs(evt); isCmd {
		br.handleCommand(ctx, evt, link, args)
		return nil, errSkip
	}
	if link == nil {
		if br.isGhostInvite(evt) {
			return nil, br.startDMFromInvite(ctx, evt)
		}
		return nil, errSkip
	}
	if link.Status == bridgedb.LinkPendingJoin {
		return nil, br.handlePortalMember(ctx, evt, link)
	}
	isState := evt.StateKey != nil
	if err := classify(evt.Type.Type, isState); err != nil {
		return nil, err
	}
	if isState && evt.Type == event.StateMember {
		return br.dagMemberToLM(ctx, evt, link)
	}
	pr := br.protoOf(link)
	sender, err := pr.users.LMUserOf(evt.Sender)
	if err != nil {
		return nil, err
	}
	content, err := parseContent(evt.Content.VeryRaw)
	if err != nil {
		return nil, err
	}
	if isState {
		var creators []id.UserID
		if evt.Type == event.StatePowerLevels {
			if creators, err = br.dagCreators(ctx, evt.RoomID); err != nil {
				return nil, err
			}
		}
		if content, err = pr.tr.translateState(ctx, toLM, evt.Type.Type, content, creators, nil); err != nil {
			return nil, err
		}
		if err = br.mediaToLM(content); err != nil {
			return nil, err
		}
		if evt.Type == event.StatePowerLevels && link.Role == bridgedb.RoleHub {
			// The bridge stays able to act in the rooms it hosts whatever the DAG room says about its bot.
			content["users"].(map[string]any)[pr.botLM] = creatorLevel
		}
	} else {
		if evt.Type == event.EventRedaction && evt.Redacts != "" {
			content["redacts"] = string(evt.Redacts)
		}
		if content, err = pr.tr.translateMessage(ctx, toLM, content); err != nil {
			return nil, err
		}
		if err = br.mediaToLM(content); err != nil {
			return nil, err
		}
	}
	// The engine's send is local (an append, or an LPDU queued in its outbox): without ctx's cancellation for the
	// same reason as the bridge's own statements. The mapping row is written in the engine's transaction: a commit
	// fewer per event, and no crash can leave the event sent but not marked processed.
	out := &sent{isLPDU: pr.sendIsLPDU(link)}
	lmID, err := pr.rooms.SendRoomEvent(context.WithoutCancel(ctx), &remote.SendRequest{Room: remote.RoomID(link.LMRoomID),
		Sender: remote.UserID(sender), Type: evt.Type.Type, StateKey: evt.StateKey, Content: content,
		TS: ts(evt.Timestamp), Key: evt.ID.String(),
		With: func(ctx context.Context, lmID remote.EventID) error {
			return br.recordDAG(ctx, evt, link, &sent{lmID: string(lmID), isLPDU: out.isLPDU})
		}})
	if isState && errors.Is(err, remote.ErrUnsupported) {
		// A protocol without this kind of state (MIMI has no topic or power levels): the room's own business.
		zerolog.Ctx(ctx).Debug().Err(err).Str("type", evt.Type.Type).Msg("State event has no counterpart in the protocol")
		return nil, errSkip
	}
	if err != nil {
		return nil, fmt.Errorf("failed to send to %s: %w", pr.name, err)
	}
	out.lmID, out.recorded = string(lmID), true
	return out, nil
}

// dagMemberToLM carries a membership change of a Matrix user (or a change a Matrix user made to a ghost) to LM.
func (br *Bridge) dagMemberToLM(ctx context.Context, evt *event.Event, link *bridgedb.Link) (*sent, error) {
	target := id.UserID(*evt.StateKey)
	if target == br.users.BotUserID {
		return nil, errSkip
	}
	content, err := parseContent(evt.Content.VeryRaw)
	if err != nil {
		return nil, err
	}
	var prev Content
	if evt.Unsigned.PrevContent != nil {
		prev, _ = parseContent(evt.Unsigned.PrevContent.VeryRaw)
	}
	pr := br.protoOf(link)
	senderLM, err := pr.users.LMUserOf(evt.Sender)
	if err != nil {
		return nil, err
	}
	targetLM, err := pr.users.LMUserOf(target)
	if err != nil {
		return nil, err
	}
	mc := parseMember(senderLM, targetLM, content, prev)
	if !isKnownMembership(mc.Membership) {
		return nil, fmt.Errorf("%w (membership %q)", ErrUnsupportedType, mc.Membership)
	}
	self := evt.Sender == target
	req := &remote.MembershipRequest{Room: remote.RoomID(link.LMRoomID), Sender: remote.UserID(senderLM),
		Target: remote.UserID(targetLM), Via: remote.ServerName(link.HubServer)}
	var lmID remote.EventID
	switch {
	case mc.Membership == event.MembershipJoin && self:
		lmID, err = br.joinLM(ctx, link, targetLM, mc, evt.ID.String())
	case mc.Membership == event.MembershipKnock && self && link.Role == bridgedb.RoleParticipant:
		err = pr.rooms.KnockRoom(ctx, req)
	case mc.Membership == event.MembershipLeave && self && link.Role == bridgedb.RoleParticipant:
		_, err = pr.rooms.LeaveRoom(ctx, req)
	case mc.Membership == event.MembershipInvite:
		lmID, err = pr.rooms.InviteToRoom(ctx, req)
	default:
		// Kicks, bans, unbans, and leaves and knocks in a room we host are plain member events on LM.
		req.Membership, req.Reason, req.TS, req.Key = string(mc.Membership), mc.Reason, ts(evt.Timestamp), evt.ID.String()
		if mc.Membership == event.MembershipJoin {
			req.Displayname, req.AvatarURL = mc.Displayname, br.avatarToLM(mc.AvatarURL)
		}
		lmID, err = pr.rooms.SetMembership(ctx, req)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to carry %s of %s to %s: %w", mc.Membership, target, pr.name, err)
	}
	if link.Role != bridgedb.RoleHub {
		// As participant, membership goes through make_/send_ calls or /invite whose answers are not LPDU IDs the
		// echo could be matched by; nothing refers to member events by ID, so none is recorded.
		return nil, nil
	}
	return &sent{lmID: string(lmID)}, nil
}

// joinLM joins a Matrix user's LM identity to the LM room: as hub a hub-local join, invited by the bot first when
// the join rules want an invite; as participant make_join/send_join through the hub, the profile in the join itself.
// A join over a join is a profile change. key is the DAG join's event ID: a refused first attempt stores no key, so
// the retry after the invite reuses it.
func (br *Bridge) joinLM(ctx context.Context, link *bridgedb.Link, userLM string, mc memberChange, key string) (remote.EventID, error) {
	req := &remote.MembershipRequest{Room: remote.RoomID(link.LMRoomID), Sender: remote.UserID(userLM),
		Target: remote.UserID(userLM), Membership: string(event.MembershipJoin), Reason: mc.Reason,
		Displayname: mc.Displayname, Via: remote.ServerName(link.HubServer), Key: key}
	pr := br.protoOf(link)
	req.AvatarURL = br.avatarOut(pr, mc.AvatarURL)
	if link.Role == bridgedb.RoleHub || mc.PrevMembership == event.MembershipJoin {
		req.TS = br.now()
		evtID, err := pr.rooms.SetMembership(ctx, req)
		if err == nil || link.Role != bridgedb.RoleHub || !isForbidden(err) {
			return evtID, err
		}
		invite := &remote.MembershipRequest{Room: req.Room, Sender: remote.UserID(pr.botLM), Target: req.Target}
		if _, err = pr.rooms.InviteToRoom(ctx, invite); err != nil {
			return "", fmt.Errorf("failed to invite %s before joining: %w", userLM, err)
		}
		req.TS = br.now()
		return pr.rooms.SetMembership(ctx, req)
	}
	return pr.rooms.JoinRoom(ctx, req)
}

// dagCreators returns the v12 creators of a DAG room from dagview's state.
func (br *Bridge) dagCreators(ctx context.Context, roomID id.RoomID) ([]id.UserID, error) {
	state, err := br.matrix.StateEvents(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("failed to read room state: %w", err)
	}
	return roomCreators(findState(state, event.StateCreate, "")), nil
}

func findState(state []*event.Event, evtType event.Type, stateKey string) *event.Event {
	for _, evt := range state {
		if evt.Type == evtType && evt.StateKey != nil && *evt.StateKey == stateKey {
			return evt
		}
	}
	return nil
}

func isForbidden(err error) bool {
	return errors.Is(err, remote.ErrForbidden)
}

// isPermanent says whether an error means the event can never cross (tell the sender) rather than not yet (retry).
func isPermanent(err error) bool {
	var peerErr *remote.PeerError
	if errors.As(err, &peerErr) {
		return peerErr.Status >= 400 && peerErr.Status < 500 && peerErr.Status != http.StatusTooManyRequests
	}
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		code := httpErr.Response.StatusCode
		return code >= 400 && code < 500 && code != http.StatusTooManyRequests
	}
	for _, perm := range []error{ErrUnsupportedType, ErrTooLarge, ErrUnknownTarget, ErrEncrypted, ErrInvalidUserID,
		ErrUserIDTooLong, ErrNotOurs, ErrMediaRefused, remote.ErrForbidden, remote.ErrNotFound, remote.ErrNotJoined,
		remote.ErrNotOurUser, remote.ErrUnsupported} {
		if errors.Is(err, perm) {
			return true
		}
	}
	var syntaxErr *json.SyntaxError
	return errors.As(err, &syntaxErr)
}
