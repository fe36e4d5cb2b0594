package appservice

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"time"

	"maunium.net/go/mautrix"
	mautrixappservice "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Intent acts as the bot or as one ghost. Register (EnsureRegistered), SetDisplayName, SetAvatarURL, EnsureJoined,
// JoinRoomByID, LeaveRoom, InviteUser, KickUser, BanUser and the rest come from mautrix's IntentAPI; the methods
// added here send with a timestamp and a deterministic transaction ID.
type Intent struct {
	*mautrixappservice.IntentAPI
	sends *sendLog
}

// Bot is the bridge bot's intent.
func (as *AppService) Bot() *Intent {
	if as.botUserID.Localpart() == as.reg.SenderLocalpart {
		return as.withCrypto(&Intent{IntentAPI: as.AS.BotIntent(), sends: as.sends})
	}
	return as.withCrypto(&Intent{IntentAPI: as.AS.Intent(as.botUserID), sends: as.sends})
}

// Ghost is the intent of a ghost user; userID must be in the ghost namespace.
func (as *AppService) Ghost(userID id.UserID) (*Intent, error) {
	if !as.IsGhost(userID) {
		return nil, fmt.Errorf("%w: %s", ErrNotGhost, userID)
	}
	intent := as.AS.Intent(userID)
	if intent == nil {
		return nil, fmt.Errorf("%w: %s is not on %s", ErrNotGhost, userID, as.AS.HomeserverDomain)
	}
	return as.withCrypto(&Intent{IntentAPI: intent, sends: as.sends}), nil
}

// TxnID derives the client transaction ID of a logical event: the same sender, room and key always give the same ID,
// so a send retried after a crash is deduplicated by the homeserver instead of posted twice. key names the logical
// event, e.g. the LM event ID it bridges.
func TxnID(sender id.UserID, roomID id.RoomID, key string) string {
	sum := sha256.Sum256([]byte(string(sender) + "\x00" + string(roomID) + "\x00" + key))
	return "lmb." + base64.RawURLEncoding.EncodeToString(sum[:18])
}

// SendMessage sends a message event as this user, joining first if needed, with origin_server_ts set to ts (when not
// zero) and the transaction ID TxnID(user, room, key), which the content carries under TxnMarkerKey. A message this
// intent sent before under that ID is not sent again, even where the homeserver would (see sendLog): its event ID is
// returned.
func (in *Intent) SendMessage(ctx context.Context, roomID id.RoomID, evtType event.Type, content any, ts time.Time, key string) (id.EventID, error) {
	txnID := TxnID(in.UserID, roomID, key)
	req := mautrix.ReqSendEvent{TransactionID: txnID}
	if in.sends != nil {
		encrypted, err := in.encrypts(ctx, roomID, evtType)
		if err != nil {
			return "", fmt.Errorf("failed to send %s as %s: %w", evtType.Type, in.UserID, err)
		}
		earlier, err := in.sends.before(ctx, in, roomID, evtType, txnID)
		if err != nil || earlier != "" {
			return earlier, err
		}
		if content, err = withTxnMarker(content, txnID); err != nil {
			return "", fmt.Errorf("failed to send %s as %s: %w", evtType.Type, in.UserID, err)
		}
		if encrypted {
			if content, err = in.encryptWithMarker(ctx, roomID, evtType, content, txnID); err != nil {
				return "", fmt.Errorf("failed to send %s as %s: %w", evtType.Type, in.UserID, err)
			}
			evtType = event.EventEncrypted
		}
	}
	if !ts.IsZero() {
		req.Timestamp = ts.UnixMilli()
	}
	resp, err := in.SendMessageEvent(ctx, roomID, evtType, content, req)
	if err != nil {
		return "", fmt.Errorf("failed to send %s as %s: %w", evtType.Type, in.UserID, err)
	}
	return resp.EventID, nil
}

// SendState sets a state event as this user, joining first if needed, with origin_server_ts set to ts (when not zero).
// Membership changes that must carry a timestamp go through here too, as the spec suggests, since /kick and friends
// take no ts.
func (in *Intent) SendState(ctx context.Context, roomID id.RoomID, evtType event.Type, stateKey string, content any, ts time.Time) (id.EventID, error) {
	var req mautrix.ReqSendEvent
	if !ts.IsZero() {
		req.Timestamp = ts.UnixMilli()
	}
	var (
		resp *mautrix.RespSendEvent
		err  error
	)
	if evtType == event.StateMember && stateKey == string(in.UserID) {
		// One's own membership event cannot wait for EnsureJoined, which would join first.
		resp, err = in.Client.SendStateEvent(ctx, roomID, evtType, stateKey, content, req)
	} else {
		resp, err = in.SendStateEvent(ctx, roomID, evtType, stateKey, content, req)
	}
	if err != nil {
		return "", fmt.Errorf("failed to set %s/%s as %s: %w", evtType.Type, stateKey, in.UserID, err)
	}
	return resp.EventID, nil
}

// Join makes sure this user is in the room; a ghost that cannot join is invited by the bot first.
func (in *Intent) Join(ctx context.Context, roomID id.RoomID) error {
	return in.EnsureJoined(ctx, roomID)
}

// Leave leaves the room.
func (in *Intent) Leave(ctx context.Context, roomID id.RoomID) error {
	_, err := in.LeaveRoom(ctx, roomID)
	return err
}

// Invite invites target.
func (in *Intent) Invite(ctx context.Context, roomID id.RoomID, target id.UserID, reason string) error {
	_, err := in.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: target, Reason: reason})
	return err
}

// Kick kicks target.
func (in *Intent) Kick(ctx context.Context, roomID id.RoomID, target id.UserID, reason string) error {
	_, err := in.KickUser(ctx, roomID, &mautrix.ReqKickUser{UserID: target, Reason: reason})
	return err
}

// Ban bans target.
func (in *Intent) Ban(ctx context.Context, roomID id.RoomID, target id.UserID, reason string) error {
	_, err := in.BanUser(ctx, roomID, &mautrix.ReqBanUser{UserID: target, Reason: reason})
	return err
}

// SetProfile registers the user if needed and sets its display name and avatar; empty values are left alone.
func (in *Intent) SetProfile(ctx context.Context, displayName string, avatar id.ContentURI) error {
	if err := in.EnsureRegistered(ctx); err != nil {
		return fmt.Errorf("failed to register %s: %w", in.UserID, err)
	}
	if displayName != "" {
		if err := in.SetDisplayName(ctx, displayName); err != nil {
			return fmt.Errorf("failed to set display name of %s: %w", in.UserID, err)
		}
	}
	if !avatar.IsEmpty() {
		if err := in.SetAvatarURL(ctx, avatar); err != nil {
			return fmt.Errorf("failed to set avatar of %s: %w", in.UserID, err)
		}
	}
	return nil
}
