package linearize

import (
	"context"
	"errors"

	"github.com/lmbridge/lmbridge/linearize/auth"
	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/remote"
)

// The Engine is the LM implementation of the bridge's seam: these methods are remote.Rooms over the engine's own
// API, with the seam's types and its errors (see seamError).
var _ remote.Rooms = (*Engine)(nil)

// Server implements remote.Rooms.
func (e *Engine) Server() remote.ServerName {
	return remote.ServerName(e.serverName)
}

// NewRoom implements remote.Rooms with CreateRoom.
func (e *Engine) NewRoom(ctx context.Context, creator remote.UserID, initial []remote.InitialState) (remote.RoomID, error) {
	roomID, err := e.CreateRoom(ctx, string(creator), initial)
	return remote.RoomID(roomID), seamError(err)
}

// SendRoomEvent implements remote.Rooms with SendEventKeyedWith.
func (e *Engine) SendRoomEvent(ctx context.Context, req *remote.SendRequest) (remote.EventID, error) {
	var with func(ctx context.Context, eventID string) error
	if req.With != nil {
		with = func(ctx context.Context, eventID string) error { return req.With(ctx, remote.EventID(eventID)) }
	}
	evtID, err := e.SendEventKeyedWith(ctx, string(req.Room), string(req.Sender), req.Type, req.StateKey, req.Content,
		req.TS, req.Key, with)
	return remote.EventID(evtID), seamError(err)
}

// JoinRoom implements remote.Rooms with JoinWithProfile, through req.Via as the hub.
func (e *Engine) JoinRoom(ctx context.Context, req *remote.MembershipRequest) (remote.EventID, error) {
	evtID, err := e.JoinWithProfile(ctx, string(req.Room), string(req.TargetOrSender()), string(req.Via),
		req.Displayname, req.AvatarURL)
	return remote.EventID(evtID), seamError(err)
}

// KnockRoom implements remote.Rooms with Knock, through req.Via as the hub.
func (e *Engine) KnockRoom(ctx context.Context, req *remote.MembershipRequest) error {
	_, err := e.Knock(ctx, string(req.Room), string(req.Sender), string(req.Via))
	return seamError(err)
}

// LeaveRoom implements remote.Rooms with Leave.
func (e *Engine) LeaveRoom(ctx context.Context, req *remote.MembershipRequest) (remote.EventID, error) {
	evtID, err := e.Leave(ctx, string(req.Room), string(req.Sender))
	return remote.EventID(evtID), seamError(err)
}

// InviteToRoom implements remote.Rooms with InviteUser.
func (e *Engine) InviteToRoom(ctx context.Context, req *remote.MembershipRequest) (remote.EventID, error) {
	evtID, err := e.InviteUser(ctx, string(req.Room), string(req.Sender), string(req.Target))
	return remote.EventID(evtID), seamError(err)
}

// SetMembership implements remote.Rooms: a member event sent like any other (SendEventKeyed), with the membership,
// the reason and, for a join, the profile.
func (e *Engine) SetMembership(ctx context.Context, req *remote.MembershipRequest) (remote.EventID, error) {
	content := memberContent(req.Membership, req.Reason)
	if req.Membership == auth.MembershipJoin {
		if req.Displayname != "" {
			content["displayname"] = req.Displayname
		}
		if req.AvatarURL != "" {
			content["avatar_url"] = req.AvatarURL
		}
	}
	target := string(req.TargetOrSender())
	evtID, err := e.SendEventKeyed(ctx, string(req.Room), string(req.Sender), auth.TypeMember, &target, content,
		req.TS, req.Key)
	return remote.EventID(evtID), seamError(err)
}

// RoomState implements remote.Rooms with CurrentState.
func (e *Engine) RoomState(ctx context.Context, roomID remote.RoomID) ([]remote.StateEntry, error) {
	state, err := e.CurrentState(ctx, string(roomID))
	if err != nil {
		return nil, seamError(err)
	}
	out := make([]remote.StateEntry, len(state))
	for i, s := range state {
		out[i] = remote.StateEntry{Type: s.Type, StateKey: s.StateKey, EventID: remote.EventID(s.EventID), Membership: s.Membership}
	}
	return out, nil
}

// RoomEvent implements remote.Rooms with GetEventByID, in listener form.
func (e *Engine) RoomEvent(ctx context.Context, eventID remote.EventID) (*remote.Event, error) {
	stored, err := e.GetEventByID(ctx, string(eventID))
	if err != nil || stored == nil {
		return nil, seamError(err)
	}
	ev, err := toListenerEvent(stored)
	return ev, seamError(err)
}

// DeliveryStatus implements remote.Rooms with Deliveries.
func (e *Engine) DeliveryStatus(ctx context.Context, roomID remote.RoomID) ([]remote.Delivery, error) {
	ds, err := e.Deliveries(ctx, string(roomID))
	if err != nil {
		return nil, seamError(err)
	}
	out := make([]remote.Delivery, len(ds))
	for i, d := range ds {
		out[i] = remote.Delivery{Server: remote.ServerName(d.Server), Queued: d.Queued, RetryCount: d.RetryCount,
			NextAttempt: d.NextAttempt, LastError: d.LastError}
	}
	return out, nil
}

// seamErrors pairs the engine's errors with the seam's sentinels they stand for.
var seamErrors = []struct{ ours, seam error }{
	{ErrForbidden, remote.ErrForbidden},
	{auth.ErrForbidden, remote.ErrForbidden},
	{ErrUnknownRoom, remote.ErrNotFound},
	{ErrNotJoined, remote.ErrNotJoined},
	{ErrNotOurUser, remote.ErrNotOurUser},
	{federation.ErrBlockedAddress, remote.ErrBlocked},
	{ErrBadRemoteAnswer, remote.ErrBadAnswer},
}

// seamError makes err match the seam's sentinels for the engine's errors it wraps, and a federation error answer a
// *remote.PeerError, keeping err's message and chain.
func seamError(err error) error {
	if err == nil {
		return nil
	}
	var also []error
	for _, m := range seamErrors {
		if errors.Is(err, m.ours) {
			also = append(also, m.seam)
		}
	}
	var fedErr *federation.Error
	if errors.As(err, &fedErr) {
		also = append(also, &remote.PeerError{Status: fedErr.Status, Code: fedErr.ErrCode})
	}
	if len(also) == 0 {
		return err
	}
	return &remote.Mapped{Err: err, Also: also}
}
