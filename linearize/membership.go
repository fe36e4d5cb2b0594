package linearize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/linearize/auth"
	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// ErrBadRemoteAnswer means another server answered with something we cannot accept.
var ErrBadRemoteAnswer = errors.New("bad answer from remote server")

func supportedVersions() []string {
	var out []string
	for _, rv := range pdu.RoomVersions() {
		out = append(out, rv.ID)
	}
	return out
}

// InviteUser invites target into a room as sender. When target's server already has a user joined (or is us), the
// invite goes through the log like any event; otherwise the target's server countersigns it over /invite first (as
// hub directly, as participant through the hub). It returns the event ID (as participant sending through /send: the
// LPDU ID).
func (e *Engine) InviteUser(ctx context.Context, roomID, sender, target string) (string, error) {
	if pdu.ServerName(sender) != e.serverName {
		return "", fmt.Errorf("%w: %s", ErrNotOurUser, sender)
	}
	targetServer := pdu.ServerName(target)
	e.writeLock.Lock()
	rs, err := e.loadRoom(ctx, roomID)
	var inRoom bool
	var hub string
	if rs != nil {
		inRoom = targetServer == e.serverName || targetServer == rs.info.HubServer || rs.isJoined(targetServer)
		hub = rs.info.HubServer
	}
	e.writeLock.Unlock()
	if err != nil {
		return "", err
	} else if rs == nil {
		return "", fmt.Errorf("%w %s", ErrUnknownRoom, roomID)
	}
	content := map[string]any{"membership": auth.MembershipInvite}
	if inRoom {
		return e.SendEvent(ctx, roomID, sender, auth.TypeMember, pdu.StringPtr(target), content, time.Time{})
	}
	p := &pdu.PDU{RoomID: roomID, Type: auth.TypeMember, StateKey: pdu.StringPtr(target), Sender: sender, OriginServerTS: e.now().UnixMilli()}
	if err = p.SetContent(content); err != nil {
		return "", err
	}
	if rs.info.Role == RoleHub {
		ev, err := e.inviteRemote(ctx, roomID, p, "")
		if err != nil {
			return "", err
		}
		return ev.EventID, nil
	}
	lpduID, raw, err := e.makeLPDU(p, hub)
	if err != nil {
		return "", err
	}
	resp, err := e.remote.Invite(ctx, hub, lpduID, &federation.InviteRequest{Event: raw, RoomVersion: rs.info.RoomVersion})
	if err != nil {
		return "", fmt.Errorf("failed to invite through hub %s: %w", hub, err)
	}
	signed := resp.PDU
	if len(signed) == 0 {
		signed = resp.Event
	}
	done, err := parseEvent(signed)
	if err != nil {
		return "", fmt.Errorf("%w: invite answer: %w", ErrBadRemoteAnswer, err)
	}
	// The echo through /send is what enters our log; the ID lets the caller match it.
	return eventID(done)
}

// Join joins userID (ours) to a room that hub owns: make_join, our signed LPDU to send_join, and the returned event,
// state and auth chain verified and stored. The room then follows the hub's log from the join on. It returns the
// join's event ID.
func (e *Engine) Join(ctx context.Context, roomID, userID, hub string) (string, error) {
	return e.join(ctx, roomID, userID, hub, auth.MembershipJoin, nil)
}

// JoinWithProfile is Join with the user's display name and avatar (each left out when empty) in the join event
// itself, as Matrix servers fill in a make_join template: the room's other servers know the user by name from their
// first event on, rather than from a second member event after the join.
func (e *Engine) JoinWithProfile(ctx context.Context, roomID, userID, hub, displayname, avatarURL string) (string, error) {
	profile := map[string]any{}
	if displayname != "" {
		profile["displayname"] = displayname
	}
	if avatarURL != "" {
		profile["avatar_url"] = avatarURL
	}
	return e.join(ctx, roomID, userID, hub, auth.MembershipJoin, profile)
}

// Knock knocks on a room that hub owns as userID; the room's stripped state is returned. The hub's answer to the
// knock (an invite) arrives over /invite.
func (e *Engine) Knock(ctx context.Context, roomID, userID, hub string) ([]json.RawMessage, error) {
	if pdu.ServerName(userID) != e.serverName {
		return nil, fmt.Errorf("%w: %s", ErrNotOurUser, userID)
	}
	lpduID, raw, _, _, err := e.makeMembershipLPDU(ctx, roomID, userID, hub, auth.MembershipKnock, nil)
	if err != nil {
		return nil, err
	}
	resp, err := e.remote.SendKnock(ctx, hub, lpduID, raw)
	if err != nil {
		return nil, fmt.Errorf("failed to send_knock: %w", err)
	}
	if resp.StrippedState == nil {
		resp.StrippedState = resp.KnockRoomState
	}
	return resp.StrippedState, nil
}

// makeMembershipLPDU runs make_<membership> against hub and returns our signed LPDU made from the template, with extra
// added to the template's content (its membership stays): its ID, wire form, the event, and the room version.
func (e *Engine) makeMembershipLPDU(ctx context.Context, roomID, userID, hub, membership string, extra map[string]any) (string, json.RawMessage, *pdu.PDU, string, error) {
	var versions []string
	if membership != auth.MembershipLeave {
		versions = supportedVersions()
	}
	made, err := e.remote.MakeMembership(ctx, hub, membership, roomID, userID, versions)
	if err != nil {
		return "", nil, nil, "", fmt.Errorf("failed to make_%s: %w", membership, err)
	}
	tmpl, err := pdu.ParseTemplate(made.Event)
	if err != nil {
		return "", nil, nil, "", fmt.Errorf("%w: make_%s template: %w", ErrBadRemoteAnswer, membership, err)
	}
	if tmpl.RoomID != roomID || tmpl.Type != auth.TypeMember || tmpl.StateKeyValue() != userID || tmpl.Sender != userID ||
		membershipOf(tmpl) != membership {
		return "", nil, nil, "", fmt.Errorf("%w: make_%s template is not %s's %s", ErrBadRemoteAnswer, membership, userID, membership)
	}
	version := made.RoomVersion
	if version == "" {
		version = DefaultRoomVersion
	}
	if _, err = pdu.LookupRoomVersion(version); err != nil {
		return "", nil, nil, "", fmt.Errorf("%w: %w", ErrBadRemoteAnswer, err)
	}
	// Only the fields the draft lets the hub choose are kept; the rest is ours (§12.7.1).
	p := &pdu.PDU{
		RoomID: roomID, Type: auth.TypeMember, StateKey: pdu.StringPtr(userID), Sender: userID,
		OriginServerTS: e.now().UnixMilli(), Content: tmpl.Content,
	}
	if len(extra) > 0 {
		var content map[string]any
		if err = json.Unmarshal(tmpl.Content, &content); err != nil {
			return "", nil, nil, "", fmt.Errorf("%w: make_%s template content: %w", ErrBadRemoteAnswer, membership, err)
		} else if content == nil {
			return "", nil, nil, "", fmt.Errorf("%w: make_%s template content is null", ErrBadRemoteAnswer, membership)
		}
		for k, v := range extra {
			if k != "membership" {
				content[k] = v
			}
		}
		if err = p.SetContent(content); err != nil {
			return "", nil, nil, "", err
		}
	}
	lpduID, raw, err := e.makeLPDU(p, hub)
	if err != nil {
		return "", nil, nil, "", err
	}
	return lpduID, raw, p, version, nil
}

func (e *Engine) join(ctx context.Context, roomID, userID, hub, membership string, extra map[string]any) (string, error) {
	if pdu.ServerName(userID) != e.serverName {
		return "", fmt.Errorf("%w: %s", ErrNotOurUser, userID)
	}
	// Joins are rare: one at a time keeps the joining marker, its channel and the room row simple.
	e.joinLock.Lock()
	defer e.joinLock.Unlock()
	existing, err := e.store.getRoom(ctx, roomID)
	if err != nil {
		return "", err
	}
	if existing != nil && existing.Role == RoleHub {
		content := maps.Clone(extra)
		if content == nil {
			content = map[string]any{}
		}
		content["membership"] = membership
		return e.SendEvent(ctx, roomID, userID, auth.TypeMember, pdu.StringPtr(userID), content, time.Time{})
	}
	// Mark the room as joining first: fan-out of our own join can reach us before send_join answers; it waits for
	// the join to be stored (or is retried by the hub) rather than being dropped.
	done := make(chan struct{})
	e.txnLock.Lock()
	e.joining[roomID] = done
	e.txnLock.Unlock()
	defer func() {
		e.txnLock.Lock()
		delete(e.joining, roomID)
		e.txnLock.Unlock()
		close(done)
	}()
	joining := &RoomInfo{RoomID: roomID, RoomVersion: DefaultRoomVersion, HubServer: hub, Role: RoleParticipant, status: statusJoining}
	if existing != nil {
		joining.RoomVersion = existing.RoomVersion
	}
	if existing == nil || existing.status != statusActive {
		if err = e.store.putRoom(ctx, joining, e.now().UnixMilli()); err != nil {
			return "", err
		}
	} else if err = e.store.setRoomStatus(ctx, roomID, statusJoining); err != nil {
		return "", err
	}
	restore := func() {
		if err := e.store.abandonJoin(context.WithoutCancel(ctx), roomID); err != nil {
			zerolog.Ctx(ctx).Err(err).Str("room_id", roomID).Msg("Failed to undo the joining marker")
		}
	}
	lpduID, raw, lpdu, version, err := e.makeMembershipLPDU(ctx, roomID, userID, hub, membership, extra)
	if err != nil {
		restore()
		return "", err
	}
	resp, err := e.remote.SendJoin(ctx, hub, lpduID, raw)
	if err != nil {
		restore()
		return "", fmt.Errorf("failed to send_join: %w", err)
	}
	joining.RoomVersion = version
	id, err := e.storeJoin(ctx, joining, lpdu, resp)
	if err != nil {
		restore()
		return "", err
	}
	return id, nil
}

// storeJoin verifies a send_join answer and makes the room ours to follow: the state and auth chain become outliers
// and the current state, and the join is the first event of our log after whatever we held before.
func (e *Engine) storeJoin(ctx context.Context, room *RoomInfo, lpdu *pdu.PDU, resp *federation.SendJoinResponse) (string, error) {
	join, err := parseEvent(resp.Event)
	if err != nil {
		return "", fmt.Errorf("%w: send_join event: %w", ErrBadRemoteAnswer, err)
	}
	wantLPDU, err := eventID(lpdu)
	if err != nil {
		return "", err
	}
	if got, err := lpduIDOf(join); err != nil || got != wantLPDU {
		return "", fmt.Errorf("%w: send_join returned an event that is not our LPDU", ErrBadRemoteAnswer)
	}
	if join.HubServer != room.HubServer {
		return "", fmt.Errorf("%w: the join names hub %s, not %s", ErrBadRemoteAnswer, join.HubServer, room.HubServer)
	}
	if _, err = verifyPDU(ctx, &join, e.keys, false); err != nil {
		return "", fmt.Errorf("%w: send_join event: %w", ErrBadRemoteAnswer, err)
	}
	joinID, err := eventID(join)
	if err != nil {
		return "", err
	}
	type known struct {
		id  string
		p   *pdu.PDU
		raw json.RawMessage
	}
	verify := func(list []json.RawMessage, what string) ([]known, error) {
		out := make([]known, 0, len(list))
		for _, r := range list {
			p, err := parseEvent(r)
			if err != nil {
				return nil, fmt.Errorf("%w: send_join %s: %w", ErrBadRemoteAnswer, what, err)
			}
			if p.RoomID != room.RoomID {
				return nil, fmt.Errorf("%w: send_join %s holds an event of %s", ErrBadRemoteAnswer, what, p.RoomID)
			}
			if _, err = verifyPDU(ctx, &p, e.keys, false); err != nil {
				return nil, fmt.Errorf("%w: send_join %s: %w", ErrBadRemoteAnswer, what, err)
			}
			id, err := eventID(p)
			if err != nil {
				return nil, err
			}
			canon, err := p.Canonical()
			if err != nil {
				return nil, err
			}
			out = append(out, known{id: id, p: p, raw: canon})
		}
		return out, nil
	}
	state, err := verify(resp.State, "state")
	if err != nil {
		return "", err
	}
	chain, err := verify(resp.AuthChain, "auth_chain")
	if err != nil {
		return "", err
	}
	// The state before the join: the last event per (type, state_key) in the order given (eigen sends its whole
	// timeline here, oldest first).
	current := make(map[auth.Key]known)
	var order []auth.Key
	for _, k := range state {
		if k.p.StateKey == nil {
			continue
		}
		key := auth.Key{Type: k.p.Type, StateKey: *k.p.StateKey}
		if _, ok := current[key]; !ok {
			order = append(order, key)
		}
		current[key] = k
	}
	if _, ok := current[auth.Key{Type: auth.TypeCreate}]; !ok {
		return "", fmt.Errorf("%w: send_join state has no m.room.create", ErrBadRemoteAnswer)
	}
	slices.SortStableFunc(order, func(a, b auth.Key) int { return stateOrder(a.Type) - stateOrder(b.Type) })
	rs := newRoomState(room)
	for _, key := range order {
		k := current[key]
		if err = rs.apply(k.p, k.id, 0); err != nil {
			return "", fmt.Errorf("%w: send_join state: %w", ErrBadRemoteAnswer, err)
		}
	}
	if err = checkAuth(join, rs); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("event_id", joinID).Msg("Hub accepted a join that fails our auth check")
	}
	joinRaw, err := join.Canonical()
	if err != nil {
		return "", err
	}

	e.writeLock.Lock()
	defer e.writeLock.Unlock()
	// Another of our users keeps the room's fan-out coming: the hub's echo of this join may be logged already.
	if logged, err := e.haveLogged(ctx, joinID); err != nil {
		return "", err
	} else if logged {
		return joinID, e.store.setRoomStatus(ctx, room.RoomID, statusActive)
	}
	delete(e.rooms, room.RoomID)
	prior, err := e.loadRoom(ctx, room.RoomID)
	if err != nil {
		return "", err
	}
	delete(e.rooms, room.RoomID)
	room.status = statusActive
	base := newRoomState(room)
	base.headIdx = prior.headIdx
	base.st = rs.st
	base.joined = rs.joined
	e.rooms[room.RoomID] = base
	err = e.commitBatch(ctx, batch{
		items: []appendItem{{roomID: room.RoomID, p: join, raw: joinRaw, eventID: joinID, lpduID: wantLPDU}},
		pre: func(ctx context.Context) error {
			for _, list := range [][]known{state, chain} {
				for _, k := range list {
					if err := e.store.insertOutlier(ctx, room.RoomID, k.id, k.raw); err != nil {
						return err
					}
				}
			}
			for _, key := range order {
				k := current[key]
				if err := e.store.setState(ctx, room.RoomID, key.Type, key.StateKey, k.id, membershipOf(k.p)); err != nil {
					return err
				}
			}
			return e.store.putRoom(ctx, room, e.now().UnixMilli())
		},
	})
	if err != nil {
		delete(e.rooms, room.RoomID)
		return "", fmt.Errorf("failed to store join: %w", err)
	}
	return joinID, nil
}

// Leave makes userID (ours) leave a room: through the log when we follow the room or host it, or through
// make_leave/send_leave at the hub when the user was only invited (rejecting the invite).
func (e *Engine) Leave(ctx context.Context, roomID, userID string) (string, error) {
	if pdu.ServerName(userID) != e.serverName {
		return "", fmt.Errorf("%w: %s", ErrNotOurUser, userID)
	}
	room, err := e.store.getRoom(ctx, roomID)
	if err != nil {
		return "", err
	}
	if room != nil && room.status == statusActive {
		e.writeLock.Lock()
		rs, err := e.loadRoom(ctx, roomID)
		var member string
		if rs != nil {
			member = rs.membership(userID)
		}
		e.writeLock.Unlock()
		if err != nil {
			return "", err
		}
		if room.Role == RoleHub || rs.isJoined(e.serverName) && member != "" {
			return e.SendEvent(ctx, roomID, userID, auth.TypeMember, pdu.StringPtr(userID),
				map[string]any{"membership": auth.MembershipLeave}, time.Time{})
		}
	}
	hub, err := e.inviteHub(ctx, roomID, userID)
	if err != nil {
		return "", err
	}
	lpduID, raw, _, _, err := e.makeMembershipLPDU(ctx, roomID, userID, hub, auth.MembershipLeave, nil)
	if err != nil {
		return "", err
	}
	if err = e.remote.SendLeave(ctx, hub, lpduID, raw); err != nil {
		return "", fmt.Errorf("failed to send_leave: %w", err)
	}
	return lpduID, nil
}

const inviteHubQuery = `SELECT pdu FROM lm_invite WHERE room_id=$1 AND target=$2 ORDER BY received_at DESC LIMIT 1`

// inviteHub finds the hub of a room we were only invited to: the invite's hub_server, else its sender's server.
func (e *Engine) inviteHub(ctx context.Context, roomID, userID string) (string, error) {
	room, err := e.store.getRoom(ctx, roomID)
	if err != nil {
		return "", err
	} else if room != nil {
		return room.HubServer, nil
	}
	var raw string
	if err = e.db.QueryRow(ctx, inviteHubQuery, roomID, userID).Scan(&raw); err != nil {
		return "", fmt.Errorf("%w %s: no invite for %s either", ErrUnknownRoom, roomID, userID)
	}
	var f eventFields
	if err = json.Unmarshal([]byte(raw), &f); err != nil {
		return "", err
	}
	if f.HubServer != "" {
		return f.HubServer, nil
	}
	return pdu.ServerName(f.Sender), nil
}
