package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/remote"
)

var (
	// ErrAlreadyLinked means the DAG room (or the LM room) is linked already.
	ErrAlreadyLinked = bridgedb.ErrLinkExists
	// ErrNotLinked means the DAG room has no link.
	ErrNotLinked = errors.New("room is not linked")
	// ErrEncryptedRoom means the DAG room is encrypted and end-to-bridge encryption is off (encryption.allow).
	ErrEncryptedRoom = errors.New("the room is encrypted, and this bridge does not bridge encrypted rooms " +
		"(encryption.allow is off)")
	// ErrUnencryptedRoom means the DAG room is not encrypted where encryption.require asks for encrypted rooms.
	ErrUnencryptedRoom = errors.New("the room is not encrypted, and this bridge only bridges encrypted rooms " +
		"(encryption.require): turn encryption on in the room, then link it")
	// ErrInvalidLinkRequest means a link request names no valid room or hub.
	ErrInvalidLinkRequest = errors.New("invalid link request")
	// ErrLMJoinFailed means joining the LM room through its hub failed.
	ErrLMJoinFailed = errors.New("failed to join the LM room through its hub")
)

// bridgeStateType is MSC2346's m.bridge, which tells clients the room is bridged and where to.
var bridgeStateType = event.StateBridge

// LinkAsHub creates an LM room with us as hub and links the DAG room to it: the LM room gets the DAG room's power
// levels (users mapped, v12 creators at 100), join rules, history visibility, name, topic and avatar, then its joined
// Matrix users; the DAG room gets an m.bridge state event. by is who asked, for the record.
func (br *Bridge) LinkAsHub(ctx context.Context, roomID id.RoomID, by string) (*bridgedb.Link, error) {
	return br.linkAsHub(ctx, br.lmProto, roomID, by, nil)
}

// linkAsHub is LinkAsHub through the protocol pr, with the room's state given (nil: read from dagview), for a caller
// that has just changed it (a direct chat's ghost giving the bot power, which dagview has not seen yet).
func (br *Bridge) linkAsHub(ctx context.Context, pr *protocol, roomID id.RoomID, by string, given []*event.Event) (*bridgedb.Link, error) {
	state, err := br.checkLinkableState(ctx, roomID, given)
	if err != nil {
		return nil, err
	}
	initial, err := br.projectState(ctx, pr, state)
	if err != nil {
		return nil, err
	}
	newRoomID, err := pr.rooms.NewRoom(ctx, remote.UserID(pr.botLM), initial)
	if err != nil {
		return nil, fmt.Errorf("failed to create %s room: %w", pr.name, err)
	}
	lmRoomID := string(newRoomID)
	link := &bridgedb.Link{DAGRoomID: roomID, LMRoomID: lmRoomID, HubServer: string(pr.rooms.Server()),
		Role: bridgedb.RoleHub, Status: bridgedb.LinkActive, CreatedBy: by, CreatedAt: br.now(), Protocol: pr.name}
	if err = br.insertLink(ctx, link); err != nil {
		return nil, err
	}
	for _, evt := range state {
		br.projectMember(ctx, link, evt)
	}
	br.markBridged(ctx, link)
	zerolog.Ctx(ctx).Info().Stringer("dag_room_id", roomID).Str("lm_room_id", lmRoomID).Str("by", by).
		Str("protocol", pr.name).Msg("Linked DAG room to a new remote room as hub")
	return link, nil
}

// LinkToLM links the DAG room to an existing LM room that hub owns: the DAG room's joined Matrix users join it
// through the hub (the first, who asked, must succeed), and the LM room's joined users appear as ghosts.
func (br *Bridge) LinkToLM(ctx context.Context, roomID id.RoomID, lmRoomID, hub string, by id.UserID) (*bridgedb.Link, error) {
	return br.linkTo(ctx, br.lmProto, roomID, lmRoomID, hub, by)
}

func (br *Bridge) linkTo(ctx context.Context, pr *protocol, roomID id.RoomID, lmRoomID, hub string, by id.UserID) (*bridgedb.Link, error) {
	if !strings.HasPrefix(lmRoomID, "!") || len(lmRoomID) < 2 || strings.ContainsAny(lmRoomID, " /") {
		return nil, fmt.Errorf("%w: %q is not an LM room ID", ErrInvalidLinkRequest, lmRoomID)
	}
	if hub == "" || strings.ContainsAny(hub, "/@!# ") {
		return nil, fmt.Errorf("%w: %q is not a server name", ErrInvalidLinkRequest, hub)
	}
	if hub == string(pr.rooms.Server()) {
		return nil, fmt.Errorf("%w: %s is hosted by this bridge; link rooms it hosts from their own link", ErrInvalidLinkRequest, lmRoomID)
	}
	if existing, err := br.linkByLM(ctx, lmRoomID); err != nil {
		return nil, err
	} else if existing != nil {
		return nil, fmt.Errorf("%w: %s is linked to %s", ErrAlreadyLinked, lmRoomID, existing.DAGRoomID)
	}
	state, err := br.checkLinkable(ctx, roomID)
	if err != nil {
		return nil, err
	}
	byLM, err := pr.users.LMUserOf(by)
	if err != nil {
		return nil, err
	}
	byMember := findState(state, event.StateMember, string(by))
	if br.users.IsPuppet(by) || byMember == nil || membershipOf(byMember) != event.MembershipJoin {
		return nil, fmt.Errorf("%w: %s is not a Matrix user joined to %s", ErrInvalidLinkRequest, by, roomID)
	}
	byContent, _ := parseContent(byMember.Content.VeryRaw)
	byProfile := parseMember(byLM, byLM, byContent, nil)
	// The room's events after our join wait until the link and its history are in place.
	done := br.backfilling.open(lmRoomID)
	defer done()
	if _, err = pr.rooms.JoinRoom(ctx, &remote.MembershipRequest{Room: remote.RoomID(lmRoomID), Sender: remote.UserID(byLM),
		Via: remote.ServerName(hub), Displayname: byProfile.Displayname, AvatarURL: br.avatarOut(pr, byProfile.AvatarURL)}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLMJoinFailed, err)
	}
	link := &bridgedb.Link{DAGRoomID: roomID, LMRoomID: lmRoomID, HubServer: hub, Role: bridgedb.RoleParticipant,
		Status: bridgedb.LinkActive, CreatedBy: string(by), CreatedAt: br.now(), Protocol: pr.name}
	if err = br.insertLink(ctx, link); err != nil {
		return nil, err
	}
	for _, evt := range state {
		if evt.StateKey != nil && id.UserID(*evt.StateKey) != by {
			br.projectMember(ctx, link, evt)
		}
	}
	br.syncLMMembers(ctx, link)
	br.backfill(ctx, link)
	br.markBridged(ctx, link)
	zerolog.Ctx(ctx).Info().Stringer("dag_room_id", roomID).Str("lm_room_id", lmRoomID).Str("hub", hub).
		Str("protocol", pr.name).Msg("Linked DAG room to a remote room as participant")
	return link, nil
}

// Unlink ends a link. The LM room stays as it is; the DAG room loses its m.bridge marker.
func (br *Bridge) Unlink(ctx context.Context, roomID id.RoomID) (*bridgedb.Link, error) {
	link, err := br.linkByDAG(ctx, roomID)
	if err != nil {
		return nil, err
	} else if link == nil {
		return nil, ErrNotLinked
	}
	if err = br.deleteLink(ctx, link); err != nil {
		return nil, err
	}
	_, err = br.matrix.SendState(ctx, roomID, br.users.BotUserID, bridgeStateType, bridgeStateKey(link), Content{}, br.now())
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to clear m.bridge state")
	}
	zerolog.Ctx(ctx).Info().Stringer("dag_room_id", roomID).Str("lm_room_id", link.LMRoomID).Msg("Unlinked room")
	return link, nil
}

// LinkStatus is a link with the members of each side.
type LinkStatus struct {
	*bridgedb.Link
	DAGMembers []id.UserID `json:"dag_members"`
	LMMembers  []string    `json:"lm_members"`
	// Deliveries are the other LM servers of the room and what waits for each.
	Deliveries []remote.Delivery `json:"deliveries"`
}

// Status returns the link of a DAG room and who is joined on each side.
func (br *Bridge) Status(ctx context.Context, roomID id.RoomID) (*LinkStatus, error) {
	link, err := br.db.GetLinkByDAGRoom(ctx, roomID)
	if err != nil {
		return nil, err
	} else if link == nil {
		return nil, ErrNotLinked
	}
	st := &LinkStatus{Link: link, DAGMembers: []id.UserID{}, LMMembers: []string{}}
	pr := br.protoOf(link)
	if state, err := br.matrix.StateEvents(ctx, roomID); err == nil {
		for _, evt := range state {
			if evt.Type == event.StateMember && evt.StateKey != nil && membershipOf(evt) == event.MembershipJoin {
				st.DAGMembers = append(st.DAGMembers, id.UserID(*evt.StateKey))
			}
		}
	}
	if state, err := pr.rooms.RoomState(ctx, remote.RoomID(link.LMRoomID)); err == nil {
		for _, entry := range state {
			if entry.Type == event.StateMember.Type && entry.Membership == string(event.MembershipJoin) {
				st.LMMembers = append(st.LMMembers, entry.StateKey)
			}
		}
	}
	if deliveries, err := pr.rooms.DeliveryStatus(ctx, remote.RoomID(link.LMRoomID)); err == nil {
		st.Deliveries = deliveries
	} else {
		zerolog.Ctx(ctx).Warn().Err(err).Str("lm_room_id", link.LMRoomID).Msg("Failed to read the room's deliveries")
		st.Deliveries = []remote.Delivery{}
	}
	return st, nil
}

// checkLinkable refuses rooms that are linked or encrypted, or where the bot lacks power, and returns the room's
// state.
func (br *Bridge) checkLinkable(ctx context.Context, roomID id.RoomID) ([]*event.Event, error) {
	return br.checkLinkableState(ctx, roomID, nil)
}

// checkLinkableState is checkLinkable on the given state (nil: read from dagview).
func (br *Bridge) checkLinkableState(ctx context.Context, roomID id.RoomID, state []*event.Event) ([]*event.Event, error) {
	if existing, err := br.linkByDAG(ctx, roomID); err != nil {
		return nil, err
	} else if existing != nil {
		return nil, fmt.Errorf("%w: %s is linked to %s", ErrAlreadyLinked, roomID, existing.LMRoomID)
	}
	if state == nil {
		var err error
		if state, err = br.matrix.StateEvents(ctx, roomID); err != nil {
			return nil, fmt.Errorf("failed to read room state: %w", err)
		}
	}
	if err := br.encryptionRefused(state); err != nil {
		return nil, err
	}
	if findState(state, event.StateCreate, "") == nil {
		return nil, fmt.Errorf("%w: the bridge does not know room %s (is its bot in it?)", ErrInvalidLinkRequest, roomID)
	}
	if err := br.checkBotPower(state, roomID); err != nil {
		return nil, err
	}
	return state, nil
}

// projectState turns the DAG room's state into the initial state of a new LM room.
func (br *Bridge) projectState(ctx context.Context, pr *protocol, state []*event.Event) ([]remote.InitialState, error) {
	creators := roomCreators(findState(state, event.StateCreate, ""))
	var initial []remote.InitialState
	for _, evtType := range []event.Type{event.StatePowerLevels, event.StateJoinRules, event.StateHistoryVisibility,
		event.StateRoomName, event.StateTopic, event.StateRoomAvatar} {
		evt := findState(state, evtType, "")
		if evt == nil {
			continue
		}
		content, err := parseContent(evt.Content.VeryRaw)
		if err != nil {
			return nil, err
		}
		if content, err = pr.tr.translateState(ctx, toLM, evtType.Type, content, creators, nil); err != nil {
			return nil, fmt.Errorf("failed to project %s: %w", evtType.Type, err)
		}
		if err = br.mediaToLM(content); err != nil {
			return nil, fmt.Errorf("failed to project %s: %w", evtType.Type, err)
		}
		if evtType == event.StatePowerLevels {
			content["users"].(map[string]any)[pr.botLM] = creatorLevel
		}
		initial = append(initial, remote.InitialState{Type: evtType.Type, Content: content})
	}
	return initial, nil
}

// projectMember joins a joined Matrix user of the DAG room to the LM room (not the bridge's own users); a failure is
// logged and recorded, and does not stop the link.
func (br *Bridge) projectMember(ctx context.Context, link *bridgedb.Link, evt *event.Event) {
	if evt.Type != event.StateMember || evt.StateKey == nil || membershipOf(evt) != event.MembershipJoin {
		return
	}
	user := id.UserID(*evt.StateKey)
	if br.users.IsPuppet(user) {
		return
	}
	userLM, err := br.protoOf(link).users.LMUserOf(user)
	if err == nil {
		content, _ := parseContent(evt.Content.VeryRaw)
		_, err = br.joinLM(ctx, link, userLM, parseMember(userLM, userLM, content, nil), evt.ID.String())
	}
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Stringer("user_id", user).Str("lm_room_id", link.LMRoomID).
			Msg("Failed to join Matrix user to LM room")
		_ = br.db.SetLinkError(ctx, link.DAGRoomID, fmt.Sprintf("failed to join %s: %v", user, err), br.now())
	}
}

func membershipOf(evt *event.Event) event.Membership {
	c, _ := parseContent(evt.Content.VeryRaw)
	m, _ := c["membership"].(string)
	return event.Membership(m)
}

func bridgeStateKey(link *bridgedb.Link) string {
	return "org.lmbridge://" + link.ProtocolOrLM() + "/" + link.HubServer + "/" + link.LMRoomID
}

// markBridged sets MSC2346's m.bridge in the DAG room. checkLinkable made sure the bot may; if it fails all the same
// (the power levels changed meanwhile, the homeserver is down), the link stands and the failure is its last error,
// which `!lm status` shows.
func (br *Bridge) markBridged(ctx context.Context, link *bridgedb.Link) {
	content := Content{
		"bridgebot": string(br.users.BotUserID),
		"creator":   link.CreatedBy,
		"protocol":  bridgeProtocol(link),
		"network":   map[string]any{"id": link.HubServer, "displayname": link.HubServer},
		"channel":   map[string]any{"id": link.LMRoomID},
	}
	_, err := br.matrix.SendState(ctx, link.DAGRoomID, br.users.BotUserID, bridgeStateType, bridgeStateKey(link), content, br.now())
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Stringer("dag_room_id", link.DAGRoomID).Msg("Failed to set m.bridge state")
		_ = br.db.SetLinkError(ctx, link.DAGRoomID, fmt.Sprintf("failed to set m.bridge state: %v", err), br.now())
	}
}

// OnInvite takes an LM invite for one of our users (a Matrix user seen from LM) into a room another server hosts.
// In a room that is linked already, the inviter's ghost invites the Matrix user to the DAG room. Otherwise a portal
// room is made: created by the inviter's ghost, the bot and the Matrix user invited; when the Matrix user joins it,
// we join the LM room for them through the hub.
func (br *Bridge) OnInvite(ctx context.Context, inv *remote.Invite) error {
	return br.onInvite(ctx, br.lmProto, inv)
}

// onInvite is OnInvite for the protocol pr.
func (br *Bridge) onInvite(ctx context.Context, pr *protocol, inv *remote.Invite) error {
	log := zerolog.Ctx(ctx).With().Str("lm_room_id", inv.RoomID).Str("inviter", inv.Sender).Str("invitee", inv.Target).Logger()
	ctx = log.WithContext(ctx)
	user, err := pr.users.MatrixUserOf(inv.Target)
	if err != nil {
		log.Warn().Err(err).Msg("LM invite for a user the bridge cannot map, ignoring it")
		return nil
	}
	ghost, err := br.users.GhostOf(inv.Sender)
	if err != nil {
		log.Warn().Err(err).Msg("LM invite from a user the bridge cannot map, ignoring it")
		return nil
	}
	link, err := br.linkByLM(ctx, inv.RoomID)
	if err != nil {
		return err
	}
	if link != nil {
		_, err = br.asGhostOrBot(ctx, ghost, func(sender id.UserID) (id.EventID, error) {
			return "", br.matrix.SetMembership(ctx, link.DAGRoomID, sender, user, event.MembershipInvite, "")
		})
		if err != nil && !isPermanent(err) {
			return err
		}
		return nil
	}
	hub := inv.HubServer
	if hub == "" {
		hub = ServerOf(inv.Sender)
	}
	// The inviter's ghost creates the portal, which is its first join: its profile is set before, from the inviter's
	// member event in the stripped state, or to the LM user ID when the hub sent none, as for any ghost without a name.
	stripped := parseStrippedState(inv.StrippedState)
	dn, av := inv.Sender, ""
	if p, ok := stripped[event.StateMember.Type+"|"+inv.Sender]; ok {
		if name, _ := p["displayname"].(string); name != "" {
			dn = name
		}
		av, _ = p["avatar_url"].(string)
	}
	if err = br.ensureGhostProfile(ctx, inv.Sender, dn, av); err != nil {
		log.Warn().Err(err).Msg("Failed to set inviter's ghost profile")
	}
	req := &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		Invite: []id.UserID{br.users.BotUserID, user},
		PowerLevelOverride: &event.PowerLevelsEventContent{
			Users: map[id.UserID]int{ghost: 100, br.users.BotUserID: 100},
		},
		CreationContent: map[string]any{},
	}
	br.addEncryption(req)
	if name, ok := stripped[event.StateRoomName.Type+"|"]; ok {
		req.Name, _ = name["name"].(string)
	}
	if topic, ok := stripped[event.StateTopic.Type+"|"]; ok {
		req.Topic, _ = topic["topic"].(string)
	}
	portal, err := br.matrix.CreateRoom(ctx, ghost, req)
	if err != nil {
		if isPermanent(err) {
			log.Err(err).Msg("Homeserver refused to create a portal room for an LM invite")
			return nil
		}
		return fmt.Errorf("failed to create portal room: %w", err)
	}
	link = &bridgedb.Link{DAGRoomID: portal, LMRoomID: inv.RoomID, HubServer: hub, Role: bridgedb.RoleParticipant,
		Status: bridgedb.LinkPendingJoin, PendingUser: user, CreatedBy: inv.Sender, CreatedAt: br.now(), Protocol: pr.name}
	if err = br.insertLink(ctx, link); err != nil {
		return err
	}
	if err = br.matrix.SetMembership(ctx, portal, br.users.BotUserID, br.users.BotUserID, event.MembershipJoin, ""); err != nil {
		log.Warn().Err(err).Stringer("portal", portal).Msg("Bot failed to join the portal room")
	}
	log.Info().Stringer("portal", portal).Stringer("user_id", user).Msg("Made a portal room for an LM invite")
	return nil
}

// handlePortalMember waits, in a portal room made for an LM invite, for the invited Matrix user to join; then we join
// the LM room for them through its hub and the link starts carrying events. A user who declines ends the portal.
func (br *Bridge) handlePortalMember(ctx context.Context, evt *event.Event, link *bridgedb.Link) error {
	if evt.Type != event.StateMember || evt.StateKey == nil || id.UserID(*evt.StateKey) != link.PendingUser ||
		evt.Sender != link.PendingUser {
		return errSkip
	}
	pr := br.protoOf(link)
	userLM, err := pr.users.LMUserOf(link.PendingUser)
	if err != nil {
		return err
	}
	switch membershipOf(evt) {
	case event.MembershipJoin:
		content, _ := parseContent(evt.Content.VeryRaw)
		profile := parseMember(userLM, userLM, content, nil)
		done := br.backfilling.open(link.LMRoomID)
		defer done()
		if _, err = pr.rooms.JoinRoom(ctx, &remote.MembershipRequest{Room: remote.RoomID(link.LMRoomID), Sender: remote.UserID(userLM),
			Via: remote.ServerName(link.HubServer), Displayname: profile.Displayname, AvatarURL: br.avatarOut(pr, profile.AvatarURL)}); err != nil {
			return fmt.Errorf("%w: %w", ErrLMJoinFailed, err)
		}
		if err = br.activateLink(ctx, link); err != nil {
			return err
		}
		link.Status = bridgedb.LinkActive
		br.syncLMMembers(ctx, link)
		br.backfill(ctx, link)
		br.markBridged(ctx, link)
		zerolog.Ctx(ctx).Info().Str("lm_room_id", link.LMRoomID).Msg("Joined LM room for the portal's user")
		return nil
	case event.MembershipLeave:
		if _, err = pr.rooms.LeaveRoom(ctx, &remote.MembershipRequest{Room: remote.RoomID(link.LMRoomID), Sender: remote.UserID(userLM)}); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to decline LM invite")
		}
		if err = br.deleteLink(ctx, link); err != nil {
			return err
		}
		return errSkip
	}
	return errSkip
}

// parseStrippedState indexes an invite's stripped state by "type|state_key".
func parseStrippedState(raw []json.RawMessage) map[string]Content {
	out := make(map[string]Content, len(raw))
	for _, r := range raw {
		var ev struct {
			Type     string  `json:"type"`
			StateKey string  `json:"state_key"`
			Content  Content `json:"content"`
		}
		if json.Unmarshal(r, &ev) == nil && ev.Content != nil {
			out[ev.Type+"|"+ev.StateKey] = ev.Content
		}
	}
	return out
}

// bridgeProtocol is m.bridge's protocol of a link.
func bridgeProtocol(link *bridgedb.Link) map[string]any {
	if link.ProtocolOrLM() == bridgedb.ProtocolMIMI {
		return map[string]any{"id": "mimi", "displayname": "MIMI"}
	}
	return map[string]any{"id": "linearized-matrix", "displayname": "Linearized Matrix"}
}
