package bridge

import (
	"context"
	"fmt"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/dagview"
)

// MatrixAppService is the real MatrixSide: intents from the appservice package, room state from dagview.
type MatrixAppService struct {
	AS   *appservice.AppService
	View *dagview.View
}

var _ MatrixSide = (*MatrixAppService)(nil)

func (m *MatrixAppService) intent(user id.UserID) (*appservice.Intent, error) {
	if user == m.AS.BotUserID() {
		return m.AS.Bot(), nil
	}
	return m.AS.Ghost(user)
}

// SendMessage sends as the bot or a ghost with a deterministic transaction ID.
func (m *MatrixAppService) SendMessage(ctx context.Context, roomID id.RoomID, sender id.UserID, evtType event.Type, content any, ts time.Time, key string) (id.EventID, error) {
	in, err := m.intent(sender)
	if err != nil {
		return "", err
	}
	return in.SendMessage(ctx, roomID, evtType, content, ts, key)
}

// SendState sets state as the bot or a ghost.
func (m *MatrixAppService) SendState(ctx context.Context, roomID id.RoomID, sender id.UserID, evtType event.Type, stateKey string, content any, ts time.Time) (id.EventID, error) {
	in, err := m.intent(sender)
	if err != nil {
		return "", err
	}
	return in.SendState(ctx, roomID, evtType, stateKey, content, ts)
}

// Redact redacts as the bot or a ghost with a deterministic transaction ID.
func (m *MatrixAppService) Redact(ctx context.Context, roomID id.RoomID, sender id.UserID, target id.EventID, reason, key string) (id.EventID, error) {
	in, err := m.intent(sender)
	if err != nil {
		return "", err
	}
	resp, err := in.RedactEvent(ctx, roomID, target, mautrix.ReqRedact{Reason: reason, TxnID: appservice.TxnID(sender, roomID, key)})
	if err != nil {
		return "", fmt.Errorf("failed to redact %s as %s: %w", target, sender, err)
	}
	return resp.EventID, nil
}

// SetMembership picks the client-server call for a membership change.
func (m *MatrixAppService) SetMembership(ctx context.Context, roomID id.RoomID, sender, target id.UserID, membership event.Membership, reason string) error {
	in, err := m.intent(sender)
	if err != nil {
		return err
	}
	self := sender == target
	switch {
	case membership == event.MembershipJoin && self:
		return in.Join(ctx, roomID)
	case membership == event.MembershipLeave && self && reason != "":
		// /leave, not a member event of one's own: a user who is only invited may not send state (Dendrite). A ghost
		// declining its first invite is not registered yet, which Dendrite wants it to be.
		if err = in.EnsureRegistered(ctx); err != nil {
			return fmt.Errorf("failed to register %s: %w", sender, err)
		}
		_, err = in.LeaveRoom(ctx, roomID, &mautrix.ReqLeave{Reason: reason})
		return err
	case membership == event.MembershipLeave && self:
		return in.Leave(ctx, roomID)
	case membership == event.MembershipKnock && self:
		_, err = in.KnockRoom(ctx, string(roomID), &mautrix.ReqKnockRoom{Reason: reason})
		return err
	case membership == event.MembershipInvite:
		return in.Invite(ctx, roomID, target, reason)
	case membership == event.MembershipLeave:
		return in.Kick(ctx, roomID, target, reason)
	case membership == event.MembershipBan:
		return in.Ban(ctx, roomID, target, reason)
	case membership == MembershipUnban:
		_, err = in.UnbanUser(ctx, roomID, &mautrix.ReqUnbanUser{UserID: target, Reason: reason})
		return err
	}
	return fmt.Errorf("%w (membership %q by %s for %s)", ErrUnsupportedType, membership, sender, target)
}

// SetProfile sets a ghost's display name and avatar.
func (m *MatrixAppService) SetProfile(ctx context.Context, user id.UserID, displayname string, avatar id.ContentURI) error {
	in, err := m.intent(user)
	if err != nil {
		return err
	}
	return in.SetProfile(ctx, displayname, avatar)
}

// CreateRoom creates a room as the bot or a ghost.
func (m *MatrixAppService) CreateRoom(ctx context.Context, creator id.UserID, req *mautrix.ReqCreateRoom) (id.RoomID, error) {
	in, err := m.intent(creator)
	if err != nil {
		return "", err
	}
	if err = in.EnsureRegistered(ctx); err != nil {
		return "", fmt.Errorf("failed to register %s: %w", creator, err)
	}
	resp, err := in.CreateRoom(ctx, req)
	if err != nil {
		return "", fmt.Errorf("failed to create room as %s: %w", creator, err)
	}
	return resp.RoomID, nil
}

// StateEvents is dagview's current state of the room.
func (m *MatrixAppService) StateEvents(ctx context.Context, roomID id.RoomID) ([]*event.Event, error) {
	return m.View.StateEvents(ctx, roomID)
}
