package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/remote"
)

// Direct chats, as the mautrix bridges make them: a Matrix user invites an LM user's ghost into a new room (or says
// `!lm pm <LM user>`), the ghost joins, and the bridge links the room to a new LM room it hosts and invites the LM
// user there. The link waits for the bot to be in the room, which it joins on the ghost's invite, later on the room's
// own path; bridge_pending_dm holds the request until then.

var (
	// ErrNotLMUser means a command named someone who is not an LM user of another server.
	ErrNotLMUser = errors.New("not an LM user of another server")
	// ErrServerDoesNotAnswer means an LM user's server did not answer the bridge.
	ErrServerDoesNotAnswer = errors.New("their server does not answer")
)

// probeTimeout bounds `!lm resolve`'s question to another server.
const probeTimeout = 15 * time.Second

// parseLMUser reads an LM user as a user types it: their LM ID (@bob:remote.example) or their ghost's Matrix ID. It
// returns the LM ID and the ghost.
func (br *Bridge) parseLMUser(s string) (string, id.UserID, error) {
	lmUser := s
	if fromGhost, ok := br.users.GhostLMUser(id.UserID(s)); ok {
		lmUser = fromGhost
	}
	_, server, err := splitUserID(lmUser)
	if err != nil {
		return "", "", fmt.Errorf("%w; an LM user ID looks like @bob:remote.example", err)
	}
	switch {
	case br.users.IsOurLMUser(lmUser):
		return "", "", fmt.Errorf("%w: %s is a Matrix user of this bridge as LM sees them; talk to them on Matrix", ErrNotLMUser, lmUser)
	case server == br.users.HomeserverDomain:
		return "", "", fmt.Errorf("%w: %s is a user of this homeserver", ErrNotLMUser, lmUser)
	case !validServerName(server):
		return "", "", fmt.Errorf("%w: %q is not a server name", ErrInvalidUserID, server)
	}
	ghost, err := br.users.GhostOf(lmUser)
	if err != nil {
		return "", "", err
	}
	return lmUser, ghost, nil
}

// validServerName checks a server name's characters (a host name, an IP literal, a port): enough to keep a typo or
// a path out of a federation request.
func validServerName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.ContainsRune(".-:[]", c):
		default:
			return false
		}
	}
	return true
}

// isGhostInvite says whether a DAG event is a Matrix user inviting one of our ghosts.
func (br *Bridge) isGhostInvite(evt *event.Event) bool {
	return evt.Type == event.StateMember && evt.StateKey != nil && br.users.IsGhost(id.UserID(*evt.StateKey)) &&
		!br.users.IsPuppet(evt.Sender) && membershipOf(evt) == event.MembershipInvite
}

// startDMFromInvite answers a ghost's invite into a room that is not linked: the ghost joins and invites the bot,
// and the room becomes a direct chat with the LM user once the bot is in. A sender without the "user" level is
// refused by the ghost, with the reason.
func (br *Bridge) startDMFromInvite(ctx context.Context, evt *event.Event) error {
	ghost := id.UserID(*evt.StateKey)
	lmUser, _ := br.users.GhostLMUser(ghost)
	log := zerolog.Ctx(ctx).With().Stringer("ghost", ghost).Str("lm_user", lmUser).Stringer("requested_by", evt.Sender).Logger()
	ctx = log.WithContext(ctx)
	if _, _, err := br.parseLMUser(lmUser); err != nil {
		log.Info().Err(err).Msg("Declining a ghost's invite")
		return br.declineInvite(ctx, evt, ghost, err.Error())
	}
	if level := br.PermissionOf(evt.Sender); level < PermissionUser {
		log.Info().Stringer("level", level).Msg("Declining a direct chat for a user without permission")
		return br.declineInvite(ctx, evt, ghost, fmt.Sprintf(
			"bridge.permissions gives %s %q, and starting a direct chat with an LM user needs \"user\" or \"admin\"", evt.Sender, level))
	}
	if err := br.probeUserServer(ctx, lmUser); err != nil {
		log.Info().Err(err).Msg("Declining a direct chat with a user whose server does not answer")
		return br.declineInvite(ctx, evt, ghost, err.Error())
	}
	br.ensureDefaultGhostProfile(ctx, lmUser)
	if err := br.matrix.SetMembership(ctx, evt.RoomID, ghost, ghost, event.MembershipJoin, ""); err != nil {
		if isPermanent(err) {
			log.Warn().Err(err).Msg("Ghost could not accept the invite")
			return errSkip
		}
		return fmt.Errorf("failed to accept the invite as %s: %w", ghost, err)
	}
	if br.dagMembership(ctx, evt.RoomID, br.users.BotUserID) == event.MembershipJoin {
		// The bot is in already (an existing room it was invited to): no join of its own will come to link it.
		if err := br.db.PutPendingDM(ctx, &bridgedb.PendingDM{DAGRoomID: evt.RoomID, LMUserID: lmUser,
			RequestedBy: evt.Sender, CreatedAt: br.now()}); err != nil {
			return err
		}
		if err := br.linkPendingDM(ctx, evt); err != nil {
			return err
		}
		return errSkip
	}
	if err := br.requestDM(ctx, evt.RoomID, lmUser, ghost, evt.Sender); err != nil {
		return err
	}
	log.Info().Stringer("room_id", evt.RoomID).Msg("Ghost joined on invite; the room becomes a direct chat once the bot is in")
	return errSkip
}

// declineInvite has a ghost refuse a direct chat: it joins, says why in a notice to the inviter, and leaves; a
// reason on a rejected invite alone would not do, since Dendrite drops it. A ghost that cannot join rejects the
// invite with the reason.
func (br *Bridge) declineInvite(ctx context.Context, evt *event.Event, ghost id.UserID, reason string) error {
	log := zerolog.Ctx(ctx)
	if err := br.matrix.SetMembership(ctx, evt.RoomID, ghost, ghost, event.MembershipJoin, ""); err != nil {
		log.Warn().Err(err).Msg("Ghost could not join to say why it declines")
	} else if _, err = br.matrix.SendMessage(ctx, evt.RoomID, ghost, event.EventMessage,
		noticeContent("⚠️ No direct chat with "+ghostName(br, ghost)+" over lmbridge: "+reason, string(evt.ID), string(evt.Sender)),
		time.Time{}, "decline:"+string(evt.ID)); err != nil {
		log.Warn().Err(err).Msg("Ghost could not say why it declines")
	}
	err := br.matrix.SetMembership(ctx, evt.RoomID, ghost, ghost, event.MembershipLeave, "lmbridge: "+reason)
	if err != nil && !isPermanent(err) {
		return fmt.Errorf("failed to decline the invite as %s: %w", ghost, err)
	} else if err != nil {
		log.Warn().Err(err).Msg("Failed to decline the invite")
	}
	return errSkip
}

// ghostName is the LM user a ghost stands for, or the ghost itself.
func ghostName(br *Bridge, ghost id.UserID) string {
	if lmUser, ok := br.users.GhostLMUser(ghost); ok {
		return lmUser
	}
	return string(ghost)
}

// ensureDefaultGhostProfile names a ghost that has no profile yet by its LM user ID, as every ghost is named before
// its user's own member event says otherwise.
func (br *Bridge) ensureDefaultGhostProfile(ctx context.Context, lmUser string) {
	if stored, err := br.db.GetGhostProfile(ctx, lmUser); err != nil || stored != nil {
		return
	}
	if err := br.ensureGhostProfile(ctx, lmUser, lmUser, ""); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("lm_user", lmUser).Msg("Failed to set the ghost's profile")
	}
}

// requestDM records a direct chat for the room and has the ghost invite the bot, whose join links it
// (linkPendingDM). The record comes first: the bot may join before this returns.
func (br *Bridge) requestDM(ctx context.Context, roomID id.RoomID, lmUser string, ghost, by id.UserID) error {
	if err := br.db.PutPendingDM(ctx, &bridgedb.PendingDM{DAGRoomID: roomID, LMUserID: lmUser, RequestedBy: by,
		CreatedAt: br.now()}); err != nil {
		return err
	}
	if err := br.matrix.SetMembership(ctx, roomID, ghost, br.users.BotUserID, event.MembershipInvite, ""); err != nil {
		if isPermanent(err) {
			// The bot may be in the room already, or the ghost may not invite: the bot's join (now or never) decides.
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Ghost could not invite the bot")
			return nil
		}
		return fmt.Errorf("failed to invite the bot as %s: %w", ghost, err)
	}
	return nil
}

// isBotJoin says whether a DAG event is the bot joining.
func (br *Bridge) isBotJoin(evt *event.Event) bool {
	return evt.Type == event.StateMember && evt.StateKey != nil && id.UserID(*evt.StateKey) == br.users.BotUserID &&
		membershipOf(evt) == event.MembershipJoin
}

// linkPendingDM makes the room a direct chat when the bot has joined a room that waits for one: linked with this
// bridge as hub, the LM user invited. dagview has the room's state by now (it reads it when the bot joins). Whatever
// happens, the room is told, and the request is done with.
func (br *Bridge) linkPendingDM(ctx context.Context, evt *event.Event) error {
	pending, err := br.db.GetPendingDM(ctx, evt.RoomID)
	if err != nil || pending == nil {
		return err
	}
	log := zerolog.Ctx(ctx).With().Stringer("room_id", evt.RoomID).Str("lm_user", pending.LMUserID).
		Stringer("requested_by", pending.RequestedBy).Logger()
	ctx = log.WithContext(ctx)
	say := func(text string) {
		_, err := br.matrix.SendMessage(ctx, evt.RoomID, br.users.BotUserID, event.EventMessage,
			noticeContent(text, "", string(pending.RequestedBy)), time.Time{}, "dm:"+string(evt.ID))
		if err != nil {
			log.Err(err).Msg("Failed to tell the room about its direct chat")
		}
	}
	link, err := br.linkByDAG(ctx, evt.RoomID)
	if err != nil {
		return err
	}
	if link == nil {
		ghost, _ := br.users.GhostOf(pending.LMUserID)
		state, err := br.matrix.StateEvents(ctx, evt.RoomID)
		if err != nil {
			return fmt.Errorf("failed to read room state: %w", err)
		}
		if state, err = br.ghostGrantsBotPower(ctx, evt.RoomID, ghost, state); err != nil {
			log.Warn().Err(err).Msg("Ghost could not give the bot power")
		}
		link, err = br.linkAsHub(ctx, br.lmProto, evt.RoomID, string(pending.RequestedBy), state)
		if err != nil {
			if !isPermanent(err) && !errors.Is(err, ErrBotLacksPower) && !errors.Is(err, ErrAlreadyLinked) &&
				!errors.Is(err, ErrInvalidLinkRequest) && !errors.Is(err, ErrEncryptedRoom) {
				return err
			}
			log.Warn().Err(err).Msg("Could not link the direct chat")
			say(fmt.Sprintf("⚠️ Could not make this room a direct chat with %s on LM: %v", pending.LMUserID, err))
			return br.db.DeletePendingDM(ctx, evt.RoomID)
		}
	}
	if err = br.inviteToDM(ctx, link, pending.RequestedBy, pending.LMUserID); err != nil {
		log.Warn().Err(err).Msg("Could not invite the LM user to the direct chat")
		say(fmt.Sprintf("⚠️ This room is linked to the LM room %s, hosted by this bridge, but %s could not be invited: %v. "+
			"%s invite %s tries again.", link.LMRoomID, pending.LMUserID, err, br.cfg.CommandPrefix, pending.LMUserID))
	} else {
		log.Info().Str("lm_room_id", link.LMRoomID).Msg("Made a direct chat with an LM user")
		say(fmt.Sprintf("This room is a direct chat with %s on LM (the LM room %s, hosted by this bridge); they are invited.",
			pending.LMUserID, link.LMRoomID))
	}
	return br.db.DeletePendingDM(ctx, evt.RoomID)
}

// inviteToDM invites the LM user as whoever asked for the chat when they are in the LM room, else as the bot, which
// created it (a `!lm pm` requester has only been invited to the Matrix room so far).
func (br *Bridge) inviteToDM(ctx context.Context, link *bridgedb.Link, by id.UserID, lmUser string) error {
	sender := br.lmProto.botLM
	if byLM, err := br.users.LMUserOf(by); err == nil {
		if state, err := br.lmProto.rooms.RoomState(ctx, remote.RoomID(link.LMRoomID)); err == nil {
			for _, entry := range state {
				if entry.Type == event.StateMember.Type && entry.StateKey == byLM && entry.Membership == string(event.MembershipJoin) {
					sender = byLM
				}
			}
		}
	}
	_, err := br.lmProto.rooms.InviteToRoom(ctx, &remote.MembershipRequest{Room: remote.RoomID(link.LMRoomID),
		Sender: remote.UserID(sender), Target: remote.UserID(lmUser)})
	return err
}

// ghostGrantsBotPower has the ghost raise the bot's power level in a room where the bot lacks what it needs and the
// ghost may change the power levels (a direct chat made with trusted_private_chat, as Element makes them, gives the
// invited ghost 100). It returns the state with the new power levels in place, for the link to check.
func (br *Bridge) ghostGrantsBotPower(ctx context.Context, roomID id.RoomID, ghost id.UserID, state []*event.Event) ([]*event.Event, error) {
	if br.checkBotPower(state, roomID) == nil {
		return state, nil
	}
	pl, err := roomPowerLevels(state)
	if err != nil {
		return state, err
	}
	need := 0
	for _, n := range botNeeds(pl) {
		need = max(need, n.level)
	}
	ghostLevel := pl.GetUserLevel(ghost)
	if ghostLevel < pl.GetEventLevel(event.StatePowerLevels) || ghostLevel < need {
		return state, fmt.Errorf("%w: %s has power level %d", ErrBotLacksPower, ghost, ghostLevel)
	}
	plEvt := findState(state, event.StatePowerLevels, "")
	var content Content
	if plEvt != nil {
		if content, err = parseContent(plEvt.Content.VeryRaw); err != nil {
			return state, err
		}
	} else {
		content = Content{}
	}
	users, _ := content["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
		if plEvt == nil {
			if create := findState(state, event.StateCreate, ""); create != nil {
				users[string(create.Sender)] = 100
			}
		}
	}
	users[string(br.users.BotUserID)] = need
	content["users"] = users
	evtID, err := br.matrix.SendState(ctx, roomID, ghost, event.StatePowerLevels, "", content, time.Time{})
	if err != nil {
		return state, fmt.Errorf("failed to give the bot power as %s: %w", ghost, err)
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return state, err
	}
	empty := ""
	updated := &event.Event{ID: evtID, RoomID: roomID, Sender: ghost, Type: event.StatePowerLevels, StateKey: &empty,
		Content: event.Content{VeryRaw: raw}}
	out := make([]*event.Event, 0, len(state)+1)
	for _, evt := range state {
		if evt != plEvt {
			out = append(out, evt)
		}
	}
	return append(out, updated), nil
}

// StartDM makes a new Matrix room for a direct chat between a Matrix user and an LM user (`!lm pm`): created by the
// LM user's ghost, the bot and the user invited; the bot's join links it.
func (br *Bridge) StartDM(ctx context.Context, by id.UserID, target string) (id.RoomID, string, error) {
	lmUser, ghost, err := br.parseLMUser(target)
	if err != nil {
		return "", "", err
	}
	if err = br.probeUserServer(ctx, lmUser); err != nil {
		return "", "", err
	}
	br.ensureDefaultGhostProfile(ctx, lmUser)
	name := lmUser
	if p, err := br.db.GetGhostProfile(ctx, lmUser); err == nil && p != nil && p.Displayname != "" {
		name = p.Displayname
	}
	req := &mautrix.ReqCreateRoom{
		Preset:   "private_chat",
		IsDirect: true,
		Name:     name,
		PowerLevelOverride: &event.PowerLevelsEventContent{
			Users: map[id.UserID]int{ghost: 100, br.users.BotUserID: 100, by: 100},
		},
		CreationContent: map[string]any{},
	}
	br.addEncryption(req)
	// Nobody is invited by the create call itself: the request must be on record before the bot's invite.
	roomID, err := br.matrix.CreateRoom(ctx, ghost, req)
	if err != nil {
		return "", "", fmt.Errorf("failed to create the room: %w", err)
	}
	if err = br.requestDM(ctx, roomID, lmUser, ghost, by); err != nil {
		return "", "", err
	}
	if err = br.matrix.SetMembership(ctx, roomID, ghost, by, event.MembershipInvite, ""); err != nil {
		return "", "", fmt.Errorf("failed to invite %s: %w", by, err)
	}
	zerolog.Ctx(ctx).Info().Stringer("room_id", roomID).Str("lm_user", lmUser).Msg("Made a room for a direct chat")
	return roomID, lmUser, nil
}

// probeUserServer checks, before a direct chat is made, that the LM user's server answers, so that the user hears at
// once rather than from a failed invite later. An LM side that cannot ask lets it through.
func (br *Bridge) probeUserServer(ctx context.Context, lmUser string) error {
	prober, ok := br.lmProto.rooms.(remote.ServerProber)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if _, err := prober.ProbeServer(ctx, remote.ServerName(ServerOf(lmUser))); err != nil {
		return fmt.Errorf("%w (%s): %w", ErrServerDoesNotAnswer, ServerOf(lmUser), err)
	}
	return nil
}

func cmdPM(ce *commandEvent) {
	br := ce.Meta.br
	if len(ce.Args) != 1 {
		br.reply(ce, "Usage: %s pm <LM user ID>, e.g. %s pm %s", br.cfg.CommandPrefix, br.cfg.CommandPrefix, br.exampleLMUser())
		return
	}
	roomID, lmUser, err := br.StartDM(ce.Ctx, ce.Sender, ce.Args[0])
	if err != nil {
		br.reply(ce, "Could not start a direct chat with %s: %v", ce.Args[0], err)
		return
	}
	br.reply(ce, "Made a direct chat with %s: %s. You are invited; %s is invited on LM once the bridge has linked it.",
		lmUser, roomID, lmUser)
}

func cmdResolve(ce *commandEvent) {
	br := ce.Meta.br
	if len(ce.Args) != 1 {
		br.reply(ce, "Usage: %s resolve <LM user ID>, e.g. %s resolve %s", br.cfg.CommandPrefix, br.cfg.CommandPrefix, br.exampleLMUser())
		return
	}
	lmUser, ghost, err := br.parseLMUser(ce.Args[0])
	if err != nil {
		br.reply(ce, "Could not resolve %s: %v", ce.Args[0], err)
		return
	}
	server := ServerOf(lmUser)
	prober, ok := br.lmProto.rooms.(remote.ServerProber)
	if !ok {
		br.reply(ce, "%s would appear here as %s; this bridge's LM side cannot ask %s whether it answers.", lmUser, ghost, server)
		return
	}
	ctx, cancel := context.WithTimeout(ce.Ctx, probeTimeout)
	defer cancel()
	info, err := prober.ProbeServer(ctx, remote.ServerName(server))
	if err != nil {
		ce.Log.Info().Err(err).Str("server", server).Msg("LM server did not answer")
		br.reply(ce, "%s is on %s, which does not answer: %v. Their ghost here would be %s.", lmUser, server, err, ghost)
		return
	}
	br.reply(ce, "%s is on %s, which answers (signing keys %s, valid until %s). Their ghost here is %s.", lmUser, server,
		strings.Join(info.KeyIDs, ", "), time.UnixMilli(info.ValidUntil).UTC().Format(time.RFC3339), ghost)
}

// exampleLMUser is an LM user ID for the help and usage texts: "bob" on a server that is neither ours nor the
// homeserver.
func (br *Bridge) exampleLMUser() string {
	return "@bob:remote.example"
}
