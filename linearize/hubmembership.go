package linearize

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/linearize/auth"
	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
)

func forbidden(err error) error {
	return federation.Errorf(http.StatusForbidden, federation.ErrCodeForbidden, "%s", err.Error())
}

func badJSON(format string, args ...any) error {
	return federation.Errorf(http.StatusBadRequest, federation.ErrCodeBadJSON, format, args...)
}

// eventError maps a parse or verification error of a received event to the draft's status and errcode.
func eventError(err error) error {
	switch {
	case errors.Is(err, pdu.ErrEventTooLarge):
		return federation.Errorf(http.StatusRequestEntityTooLarge, federation.ErrCodeTooLarge, "%s", err.Error())
	case errors.Is(err, pdu.ErrBadSignature), errors.Is(err, ErrForbidden):
		return forbidden(err)
	default:
		return badJSON("%s", err.Error())
	}
}

// MakeMembership implements federation.Handler: make_join, make_leave and make_knock. The template carries
// hub_server (eigen's lacks it; callers add it either way) and the auth and prev events it would get now.
func (e inbound) MakeMembership(ctx context.Context, origin, membership, roomID, userID string, versions []string) (*federation.MakeMembershipResponse, error) {
	room, err := e.hubRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if pdu.ServerName(userID) != origin {
		return nil, forbidden(fmt.Errorf("%s may not act for %s", origin, userID))
	}
	if membership != auth.MembershipLeave && !slices.Contains(versions, room.RoomVersion) {
		return nil, federation.Errorf(http.StatusBadRequest, federation.ErrCodeIncompatibleRoomVersion,
			"the room's version is %s, which the request does not list", room.RoomVersion)
	}
	p := &pdu.PDU{
		RoomID: roomID, Type: auth.TypeMember, StateKey: pdu.StringPtr(userID), Sender: userID,
		OriginServerTS: e.now().UnixMilli(), HubServer: e.serverName,
	}
	if err = p.SetContent(map[string]string{"membership": membership}); err != nil {
		return nil, err
	}
	e.writeLock.Lock()
	rs, err := e.loadRoom(ctx, roomID)
	if err == nil {
		p.AuthEvents = selectAuthEvents(p, rs)
		p.PrevEvents = []string{rs.headID()}
		err = checkAuth(p, rs)
	}
	e.writeLock.Unlock()
	if errors.Is(err, ErrForbidden) {
		return nil, forbidden(err)
	} else if err != nil {
		return nil, err
	}
	template, err := json.Marshal(map[string]any{
		"room_id": p.RoomID, "type": p.Type, "state_key": userID, "sender": userID,
		"origin_server_ts": p.OriginServerTS, "content": p.Content, "hub_server": e.serverName,
		"auth_events": p.AuthEvents, "prev_events": p.PrevEvents,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to encode template: %w", err)
	}
	return &federation.MakeMembershipResponse{Event: template, RoomVersion: room.RoomVersion}, nil
}

// SendMembership implements federation.Handler: send_join, send_leave and send_knock with a participant's signed
// LPDU. A repeat of an LPDU already appended gets the same answer without a second append.
func (e inbound) SendMembership(ctx context.Context, origin, membership, txnID string, raw json.RawMessage) (any, error) {
	p, err := parseEvent(raw)
	if err != nil {
		return nil, eventError(err)
	}
	if !p.IsLPDU() {
		return nil, badJSON("send_%s takes an LPDU", membership)
	}
	room, err := e.hubRoom(ctx, p.RoomID)
	if err != nil {
		return nil, err
	}
	switch {
	case p.Type != auth.TypeMember || p.StateKey == nil || *p.StateKey != p.Sender:
		return nil, badJSON("send_%s takes an m.room.member event whose state_key is its sender", membership)
	case membershipOf(p) != membership:
		return nil, badJSON("the event's membership is %q, not %q", membershipOf(p), membership)
	case p.SenderServer() != origin:
		return nil, forbidden(fmt.Errorf("%s may not send events for %s", origin, p.Sender))
	case p.HubServer != e.serverName:
		return nil, badJSON("hub_server is %s, but the hub of %s is %s", p.HubServer, p.RoomID, e.serverName)
	}
	if err = verifyLPDU(ctx, p, e.keys); err != nil {
		return nil, eventError(err)
	}
	lpduID, err := eventID(p)
	if err != nil {
		return nil, badJSON("%s", err.Error())
	}
	ev, err := e.appendLPDU(ctx, room.RoomID, p, lpduID)
	if err != nil {
		return nil, err
	}
	switch membership {
	case auth.MembershipJoin:
		if e.beforeJoinAnswer != nil {
			e.beforeJoinAnswer(ctx, ev)
		}
		return e.sendJoinResponse(ctx, ev)
	case auth.MembershipKnock:
		stripped, err := e.strippedState(ctx, room.RoomID, "")
		if err != nil {
			return nil, err
		}
		return &federation.SendKnockResponse{StrippedState: stripped, KnockRoomState: stripped}, nil
	default:
		return struct{}{}, nil
	}
}

// appendLPDU completes, checks and appends one LPDU outside /send, or returns the event already made of it.
func (e *Engine) appendLPDU(ctx context.Context, roomID string, p *pdu.PDU, lpduID string) (*StoredEvent, error) {
	e.writeLock.Lock()
	defer e.writeLock.Unlock()
	if ev, err := e.eventByLPDU(ctx, roomID, lpduID); err != nil || ev != nil {
		return ev, err
	}
	rs, err := e.loadRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	work := rs.clone()
	it, err := e.completeLPDU(p, work)
	if errors.Is(err, ErrForbidden) {
		return nil, forbidden(err)
	} else if err != nil {
		return nil, err
	}
	it.lpduID = lpduID
	if err = e.commitBatch(ctx, batch{items: []appendItem{*it}}); err != nil {
		return nil, fmt.Errorf("failed to append %s: %w", it.eventID, err)
	}
	return e.store.GetEvent(ctx, it.eventID)
}

func (e *Engine) eventByLPDU(ctx context.Context, roomID, lpduID string) (*StoredEvent, error) {
	return e.store.EventByLPDU(ctx, roomID, lpduID)
}

// sendJoinResponse answers send_join: the join, the state before it, and that state's auth chain.
//
// `state` holds the state before the join together with its auth chain, in log order, not the state alone. eigen-server
// (the draft author's implementation) ignores auth_chain and replays `state` from an empty room through the auth
// rules, in the order given; the state alone fails there as soon as someone joined by invite (the join replaced the
// invite, and without it the join is refused) or an event was authorised by a power levels event that a later one
// replaced. The state plus its auth chain holds every event's auth events, and in log order each event comes after
// its auth events with none of them replaced in between (each was the current one when the event was appended): a
// replay in this order sees, for everything the rules look at, what the hub saw, and ends in the state before the
// join, since the newest event per type and state key is the state's own. A server that reads `state` as the draft
// says, as the state with the newest entry per type and state key winning (as storeJoin does), gets the same state,
// and auth_chain is unchanged. eigen's own answer, the whole timeline, would grow with every message ever sent; this
// grows with the state.
func (e *Engine) sendJoinResponse(ctx context.Context, ev *StoredEvent) (*federation.SendJoinResponse, error) {
	state, err := e.store.StateBefore(ctx, ev.RoomID, ev.Index)
	if err != nil {
		return nil, err
	}
	chain, err := e.authChain(ctx, append(slices.Clone(state), ev))
	if err != nil {
		return nil, err
	}
	resp := &federation.SendJoinResponse{Event: ev.PDU, State: replayOrder(state, chain)}
	resp.AuthChain = make([]json.RawMessage, 0, len(chain))
	for _, c := range chain {
		resp.AuthChain = append(resp.AuthChain, c.PDU)
	}
	return resp, nil
}

// replayOrder merges the state and its auth chain (both logged events) into one list in log order, each event once.
func replayOrder(state, chain []*StoredEvent) []json.RawMessage {
	all := make([]*StoredEvent, 0, len(state)+len(chain))
	all = append(all, state...)
	all = append(all, chain...)
	slices.SortFunc(all, func(a, b *StoredEvent) int { return cmp.Compare(a.Index, b.Index) })
	all = slices.CompactFunc(all, func(a, b *StoredEvent) bool { return a.EventID == b.EventID })
	out := make([]json.RawMessage, len(all))
	for i, s := range all {
		out[i] = s.PDU
	}
	return out
}

// strippedStateTypes are the state events an invite or knock shows of the room (§3.5.2.1).
var strippedStateTypes = []string{
	"m.room.create", "m.room.name", "m.room.avatar", "m.room.topic", "m.room.join_rules", "m.room.canonical_alias",
}

// strippedState is the room's stripped state for an invite or knock. An invite also shows the inviter's own member
// event, as Synapse's does: the invited user's server learns who invites them by name, before it is in the room.
func (e *Engine) strippedState(ctx context.Context, roomID, inviter string) ([]json.RawMessage, error) {
	entries, err := e.store.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	var out []json.RawMessage
	for _, st := range entries {
		isInviter := inviter != "" && st.Type == auth.TypeMember && st.StateKey == inviter
		if !isInviter && (st.StateKey != "" || !slices.Contains(strippedStateTypes, st.Type)) {
			continue
		}
		ev, err := e.store.GetEvent(ctx, st.EventID)
		if err != nil {
			return nil, err
		} else if ev == nil {
			continue
		}
		var f eventFields
		if err = json.Unmarshal(ev.PDU, &f); err != nil {
			continue
		}
		stripped, err := json.Marshal(map[string]any{"sender": f.Sender, "type": f.Type, "state_key": st.StateKey, "content": f.Content})
		if err != nil {
			return nil, err
		}
		out = append(out, stripped)
	}
	return out, nil
}

// Invite implements federation.Handler. As the hub it completes a participant's invite LPDU, has the target's server
// countersign it and appends the countersigned event; as the target's server it countersigns an invite for one of our
// users and keeps it for the listeners.
func (e inbound) Invite(ctx context.Context, origin, txnID string, req *federation.InviteRequest) (*federation.InviteResponse, error) {
	p, err := parseEvent(req.Event)
	if err != nil {
		return nil, eventError(err)
	}
	if p.Type != auth.TypeMember || p.StateKey == nil || membershipOf(p) != auth.MembershipInvite {
		return nil, badJSON("an invite must be an m.room.member event with membership invite")
	}
	room, err := e.store.GetRoom(ctx, p.RoomID)
	if err != nil {
		return nil, err
	}
	if room != nil && room.Role == RoleHub {
		return e.inviteAsHub(ctx, origin, room, p)
	}
	return e.inviteAsTarget(ctx, origin, p, req)
}

func (e *Engine) inviteAsHub(ctx context.Context, origin string, room *RoomInfo, p *pdu.PDU) (*federation.InviteResponse, error) {
	switch {
	case !p.IsLPDU():
		return nil, badJSON("the hub takes an invite as an LPDU")
	case p.SenderServer() != origin:
		return nil, forbidden(fmt.Errorf("%s may not send events for %s", origin, p.Sender))
	case p.HubServer != e.serverName:
		return nil, badJSON("hub_server is %s, but the hub of %s is %s", p.HubServer, p.RoomID, e.serverName)
	}
	if err := verifyLPDU(ctx, p, e.keys); err != nil {
		return nil, eventError(err)
	}
	lpduID, err := eventID(p)
	if err != nil {
		return nil, badJSON("%s", err.Error())
	}
	ev, err := e.inviteRemote(ctx, room.RoomID, p, lpduID)
	if err != nil {
		return nil, err
	}
	return &federation.InviteResponse{PDU: ev.PDU, Event: ev.PDU}, nil
}

// maxInviteAttempts bounds how often an invite is re-completed because the log moved while the target signed it.
const maxInviteAttempts = 3

// inviteRemote completes an invite (an LPDU, or a hub-local event when lpduID is empty), has the target's server
// countersign it over /invite, and appends the countersigned event. The write lock is not held during the request;
// if the log moved meanwhile, the invite is completed again (its prev_events changed, and so did its ID).
func (e *Engine) inviteRemote(ctx context.Context, roomID string, p *pdu.PDU, lpduID string) (*StoredEvent, error) {
	target := *p.StateKey
	for attempt := 0; attempt < maxInviteAttempts; attempt++ {
		e.writeLock.Lock()
		if lpduID != "" {
			if ev, err := e.eventByLPDU(ctx, roomID, lpduID); err != nil || ev != nil {
				e.writeLock.Unlock()
				return ev, err
			}
		}
		rs, err := e.loadRoom(ctx, roomID)
		if err != nil {
			e.writeLock.Unlock()
			return nil, err
		}
		head := rs.headID()
		var it *appendItem
		if lpduID != "" {
			it, err = e.completeLPDU(p, rs.clone())
		} else {
			it, err = e.buildLocal(p.Clone(), rs.clone())
		}
		e.writeLock.Unlock()
		if errors.Is(err, ErrForbidden) {
			return nil, forbidden(err)
		} else if err != nil {
			return nil, err
		}
		stripped, err := e.strippedState(ctx, roomID, p.Sender)
		if err != nil {
			return nil, err
		}
		resp, err := e.remote.Invite(ctx, pdu.ServerName(target), it.eventID, &federation.InviteRequest{
			Event: it.raw, InviteRoomState: stripped, RoomVersion: rs.info.RoomVersion,
		})
		if err != nil {
			return nil, fmt.Errorf("failed to have %s countersign the invite: %w", pdu.ServerName(target), err)
		}
		signed, err := e.checkCountersigned(resp, it.eventID)
		if err != nil {
			return nil, err
		}
		if e.inviteCountersigned != nil {
			if err = e.inviteCountersigned(ctx, it.eventID); err != nil {
				return nil, err
			}
		}
		e.writeLock.Lock()
		rs, err = e.loadRoom(ctx, roomID)
		if err != nil || rs.headID() != head {
			e.writeLock.Unlock()
			if err != nil {
				return nil, err
			}
			continue
		}
		it.p = signed
		if it.raw, err = signed.Canonical(); err != nil {
			e.writeLock.Unlock()
			return nil, err
		}
		it.lpduID = lpduID
		err = e.commitBatch(ctx, batch{items: []appendItem{*it}})
		e.writeLock.Unlock()
		if err != nil {
			return nil, fmt.Errorf("failed to append invite: %w", err)
		}
		return e.store.GetEvent(ctx, it.eventID)
	}
	return nil, federation.Errorf(http.StatusServiceUnavailable, federation.ErrCodeUnknown,
		"the room kept changing while the invite was being countersigned")
}

// checkCountersigned reads the target's answer: the same event (same ID), now also signed by the target's server.
func (e *Engine) checkCountersigned(resp *federation.InviteResponse, wantID string) (*pdu.PDU, error) {
	raw := resp.PDU
	if len(raw) == 0 {
		raw = resp.Event
	}
	signed, err := parseEvent(raw)
	if err != nil {
		return nil, fmt.Errorf("target answered the invite with an invalid event: %w", err)
	}
	id, err := eventID(signed)
	if err != nil || id != wantID {
		return nil, fmt.Errorf("target answered the invite with another event (%s, not %s)", id, wantID)
	}
	target := pdu.ServerName(signed.StateKeyValue())
	if len(signed.Signatures[target]) == 0 {
		return nil, fmt.Errorf("target %s did not countersign the invite", target)
	}
	return signed, nil
}

func (e *Engine) inviteAsTarget(ctx context.Context, origin string, p *pdu.PDU, req *federation.InviteRequest) (*federation.InviteResponse, error) {
	target := *p.StateKey
	if pdu.ServerName(target) != e.serverName {
		return nil, badJSON("%s is not a user of %s", target, e.serverName)
	}
	if _, err := pdu.LookupRoomVersion(req.RoomVersion); err != nil && req.RoomVersion != "" {
		return nil, federation.Errorf(http.StatusBadRequest, federation.ErrCodeIncompatibleRoomVersion,
			"room version %s is not supported", req.RoomVersion)
	}
	if p.IsLPDU() {
		return nil, badJSON("an invite to the target must be a PDU completed by the hub")
	}
	hub := p.HubServer
	if hub == "" {
		hub = p.SenderServer()
	}
	if hub != origin {
		return nil, forbidden(fmt.Errorf("the invite must come from its hub %s, not %s", hub, origin))
	}
	if err := p.VerifySignatures(ctx, e.keys); err != nil {
		return nil, eventError(err)
	}
	if err := p.CheckContentHashes(); err != nil {
		return nil, badJSON("%s", err.Error())
	}
	id, err := eventID(p)
	if err != nil {
		return nil, badJSON("%s", err.Error())
	}
	signed := p.Clone()
	if err = signed.SignPDU(e.serverName, string(e.key.ID), e.key.Priv); err != nil {
		return nil, err
	}
	raw, err := signed.Canonical()
	if err != nil {
		return nil, err
	}
	version := req.RoomVersion
	if version == "" {
		version = DefaultRoomVersion
	}
	inv := &Invite{RoomID: p.RoomID, EventID: id, Target: target, RoomVersion: version, Event: raw, StrippedState: req.InviteRoomState}
	if err = e.store.PutInvite(ctx, inv, e.now().UnixMilli()); err != nil {
		return nil, err
	}
	zerolog.Ctx(ctx).Info().Str("room_id", p.RoomID).Str("target", target).Str("event_id", id).Msg("Received invite")
	e.markInvitesDirty()
	return &federation.InviteResponse{PDU: raw, Event: raw}, nil
}
