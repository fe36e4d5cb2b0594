package linearize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/linearize/auth"
	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
	"github.com/lmbridge/lmbridge/linearize/store"
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

// defaultJoinRetry is how long a refused join is retried when we countersigned an invite for the user: the hub
// appends an invite only once our countersignature is back, so a join sent as soon as the invite reached us (as
// the bridge does) can reach the hub first and be refused as uninvited.
const defaultJoinRetry = 5 * time.Second

// First and longest wait between two attempts of a refused join.
const (
	joinRetryFirstWait = 100 * time.Millisecond
	joinRetryMaxWait   = time.Second
)

func (e *Engine) join(ctx context.Context, roomID, userID, hub, membership string, extra map[string]any) (string, error) {
	if pdu.ServerName(userID) != e.serverName {
		return "", fmt.Errorf("%w: %s", ErrNotOurUser, userID)
	}
	// Joins are rare: one at a time keeps the joining marker and the room row simple.
	e.joinLock.Lock()
	defer e.joinLock.Unlock()
	existing, err := e.store.GetRoom(ctx, roomID)
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
	// A room another of our users is joined to keeps receiving the hub's events, the echo of this join among them,
	// in order: it is not marked joining, and nothing is held back.
	followed := false
	if existing != nil && existing.Status == store.StatusActive {
		e.writeLock.Lock()
		rs, err := e.loadRoom(ctx, roomID)
		followed = err == nil && rs != nil && rs.isJoined(e.serverName)
		e.writeLock.Unlock()
		if err != nil {
			return "", err
		}
	}
	joining := &RoomInfo{RoomID: roomID, RoomVersion: DefaultRoomVersion, HubServer: hub, Role: RoleParticipant, Status: store.StatusJoining}
	if existing != nil {
		joining.RoomVersion = existing.RoomVersion
	}
	restore := func() {}
	if !followed {
		// Marked joining before make_join: what the hub sends us from now on (eigen sends the join itself to every
		// server before it answers send_join) is kept and appended once the join is stored (joinpending.go).
		if existing == nil || existing.Status != store.StatusActive {
			err = e.store.PutRoom(ctx, joining, e.now().UnixMilli())
		} else {
			err = e.store.SetRoomStatus(ctx, roomID, store.StatusJoining)
		}
		if err != nil {
			return "", err
		}
		restore = func() {
			if err := e.abandonJoining(ctx, roomID); err != nil {
				zerolog.Ctx(ctx).Err(err).Str("room_id", roomID).Msg("Failed to undo the joining marker")
			}
		}
	}
	lpdu, version, resp, err := e.joinAttempts(ctx, roomID, userID, hub, membership, extra, !followed)
	if err != nil {
		restore()
		return "", err
	}
	joining.RoomVersion = version
	id, err := e.storeJoin(ctx, joining, lpdu, resp, followed)
	if err != nil {
		restore()
		return "", err
	}
	if !followed {
		// The join is stored: a failure here leaves the kept PDUs for the next /send or start to append.
		if err = e.applyPending(ctx, roomID); err != nil {
			zerolog.Ctx(ctx).Err(err).Str("room_id", roomID).Msg("Failed to append the PDUs kept during the join")
		}
	}
	return id, nil
}

// joinAttempts runs make_join and send_join, recording the LPDU first when record is set (a crash before the answer
// then resends it, see resumeJoin). A refusal (403) is retried for up to joinRetryFor, with backoff, when we hold an
// invite for the user that we countersigned and have not seen in the room: the hub may not have appended it yet.
// Otherwise, or once the time is up, the hub's refusal is returned as it came.
func (e *Engine) joinAttempts(ctx context.Context, roomID, userID, hub, membership string, extra map[string]any, record bool) (*pdu.PDU, string, *federation.SendJoinResponse, error) {
	start := time.Now()
	wait := joinRetryFirstWait
	for {
		lpduID, raw, lpdu, version, err := e.makeMembershipLPDU(ctx, roomID, userID, hub, membership, extra)
		if err == nil && record {
			err = e.recordJoin(ctx, roomID, userID, version, raw)
		}
		var resp *federation.SendJoinResponse
		if err == nil {
			if resp, err = e.remote.SendJoin(ctx, hub, lpduID, raw); err == nil {
				return lpdu, version, resp, nil
			}
			err = fmt.Errorf("failed to send_join: %w", err)
		}
		var fe *federation.Error
		if !errors.As(err, &fe) || fe.Status != http.StatusForbidden || time.Since(start)+wait > e.joinRetryFor {
			return nil, "", nil, err
		}
		if invited, ierr := e.unseenInvite(ctx, roomID, userID); ierr != nil || !invited {
			return nil, "", nil, errors.Join(err, ierr)
		}
		zerolog.Ctx(ctx).Debug().Err(err).Str("room_id", roomID).Str("user_id", userID).Dur("retry_in", wait).
			Msg("Join refused although we countersigned an invite, retrying")
		if e.joinRetried != nil {
			e.joinRetried(err)
		}
		select {
		case <-ctx.Done():
			return nil, "", nil, errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, joinRetryMaxWait)
	}
}

// unseenInvite reports whether we countersigned an invite of userID into roomID (inviteAsTarget keeps each) that we
// have not seen the hub append. One we have not seen (in our log, or in a send_join answer's state) may not be in
// the hub's log yet; one we have seen is, and a refusal then has another reason (a kick, a ban).
func (e *Engine) unseenInvite(ctx context.Context, roomID, userID string) (bool, error) {
	return e.store.UnseenInvite(ctx, roomID, userID)
}

// storeJoin verifies a send_join answer and makes the room ours to follow: the state and auth chain become outliers
// and the current state, and the join is the first event of our log after whatever we held before. In a room we
// follow already (followed), our mirror's state stands and the join takes its place in the log as any event of the
// hub: appended now if it follows our head, else when the hub's fan-out brings it after the events before it.
func (e *Engine) storeJoin(ctx context.Context, room *RoomInfo, lpdu *pdu.PDU, resp *federation.SendJoinResponse, followed bool) (string, error) {
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
	item := appendItem{roomID: room.RoomID, p: join, raw: joinRaw, eventID: joinID, lpduID: wantLPDU}
	if logged, err := e.haveLogged(ctx, joinID); err != nil {
		return "", err
	} else if logged && followed {
		return joinID, nil
	} else if logged {
		return joinID, e.store.Write(ctx, func(ctx context.Context) error {
			if err := e.store.DeleteJoin(ctx, room.RoomID); err != nil {
				return err
			}
			return e.store.SetRoomStatus(ctx, room.RoomID, store.StatusActive)
		})
	}
	if followed {
		rs, err := e.loadRoom(ctx, room.RoomID)
		if err != nil {
			return "", err
		}
		if len(join.PrevEvents) != 1 || rs == nil || join.PrevEvents[0] != rs.headID() {
			return joinID, nil
		}
		if err = e.commitBatch(ctx, batch{items: []appendItem{item}}); err != nil {
			delete(e.rooms, room.RoomID)
			return "", fmt.Errorf("failed to store join: %w", err)
		}
		return joinID, nil
	}
	delete(e.rooms, room.RoomID)
	prior, err := e.loadRoom(ctx, room.RoomID)
	if err != nil {
		return "", err
	}
	delete(e.rooms, room.RoomID)
	room.Status = store.StatusActive
	base := newRoomState(room)
	base.headIdx = prior.headIdx
	base.st = rs.st
	base.joined = rs.joined
	e.rooms[room.RoomID] = base
	err = e.commitBatch(ctx, batch{
		items: []appendItem{item},
		pre: func(ctx context.Context) error {
			if err := e.store.DeleteJoin(ctx, room.RoomID); err != nil {
				return err
			}
			for _, list := range [][]known{state, chain} {
				for _, k := range list {
					if err := e.store.InsertOutlier(ctx, room.RoomID, k.id, k.raw); err != nil {
						return err
					}
				}
			}
			for _, key := range order {
				k := current[key]
				if err := e.store.SetState(ctx, room.RoomID, key.Type, key.StateKey, k.id, membershipOf(k.p)); err != nil {
					return err
				}
			}
			return e.store.PutRoom(ctx, room, e.now().UnixMilli())
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
	room, err := e.store.GetRoom(ctx, roomID)
	if err != nil {
		return "", err
	}
	if room != nil && room.Status == store.StatusActive {
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

// inviteHub finds the hub of a room we were only invited to: the invite's hub_server, else its sender's server.
func (e *Engine) inviteHub(ctx context.Context, roomID, userID string) (string, error) {
	room, err := e.store.GetRoom(ctx, roomID)
	if err != nil {
		return "", err
	} else if room != nil {
		return room.HubServer, nil
	}
	raw, err := e.store.InviteEvent(ctx, roomID, userID)
	if err != nil {
		return "", fmt.Errorf("%w %s: no invite for %s either", ErrUnknownRoom, roomID, userID)
	}
	var f eventFields
	if err = json.Unmarshal(raw, &f); err != nil {
		return "", err
	}
	if f.HubServer != "" {
		return f.HubServer, nil
	}
	return pdu.ServerName(f.Sender), nil
}
