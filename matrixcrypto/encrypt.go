//go:build goolm

package matrixcrypto

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Encrypt encrypts content for the room with the device's outbound Megolm session (mautrix.CryptoHelper). When there
// is none, or it has expired under the room's rotation settings (rotation_period_ms/msgs of m.room.encryption), or a
// member's device list changed, a new session is made and shared with the devices of the room's members first.
func (h *Helper) Encrypt(ctx context.Context, roomID id.RoomID, evtType event.Type, content any) (*event.EncryptedEventContent, error) {
	encrypted, err := h.mach.EncryptMegolmEvent(ctx, roomID, evtType, content)
	if err == nil {
		h.archiveOutbound(ctx, roomID, encrypted.SessionID)
		return encrypted, nil
	}
	if !errors.Is(err, crypto.ErrSessionExpired) && !errors.Is(err, crypto.ErrSessionNotShared) &&
		!errors.Is(err, crypto.ErrNoGroupSession) {
		return nil, fmt.Errorf("failed to encrypt for %s: %w", roomID, err)
	}
	if err = h.shareSession(ctx, roomID); err != nil {
		return nil, err
	}
	encrypted, err = h.mach.EncryptMegolmEvent(ctx, roomID, evtType, content)
	if err != nil {
		return nil, fmt.Errorf("failed to encrypt for %s after sharing the session: %w", roomID, err)
	}
	h.archiveOutbound(ctx, roomID, encrypted.SessionID)
	return encrypted, nil
}

// shareSession shares the room's outbound session (making one if needed) with the devices of its joined and invited
// members other than our own users, which have no devices but the bot's.
func (h *Helper) shareSession(ctx context.Context, roomID id.RoomID) error {
	h.sharing.Lock(roomID)
	defer h.sharing.Unlock(roomID)
	if err := h.prime(ctx, roomID); err != nil {
		return err
	}
	members, err := h.stateStore.GetRoomJoinedOrInvitedMembers(ctx, roomID)
	if err != nil {
		return fmt.Errorf("failed to read the members of %s: %w", roomID, err)
	}
	users := members[:0]
	for _, user := range members {
		if user != h.as.BotUserID() && !h.as.IsGhost(user) {
			users = append(users, user)
		}
	}
	zerolog.Ctx(ctx).Debug().Stringer("room_id", roomID).Int("users", len(users)).Msg("Sharing the room's Megolm session")
	if err = h.mach.ShareGroupSession(ctx, roomID, users); err != nil {
		return fmt.Errorf("failed to share the Megolm session of %s: %w", roomID, err)
	}
	return nil
}

// Decrypt decrypts an m.room.encrypted event (mautrix.CryptoHelper).
func (h *Helper) Decrypt(ctx context.Context, evt *event.Event) (*event.Event, error) {
	return h.mach.DecryptMegolmEvent(ctx, evt)
}

// WaitForSession waits up to timeout for a room key (mautrix.CryptoHelper).
func (h *Helper) WaitForSession(ctx context.Context, roomID id.RoomID, senderKey id.SenderKey, sessionID id.SessionID, timeout time.Duration) bool {
	return h.mach.WaitForSession(ctx, roomID, senderKey, sessionID, timeout)
}

// RequestSession asks the sender's devices for a room key (mautrix.CryptoHelper); deviceID "" asks all of them.
func (h *Helper) RequestSession(ctx context.Context, roomID id.RoomID, senderKey id.SenderKey, sessionID id.SessionID, userID id.UserID, deviceID id.DeviceID) {
	devices := []id.DeviceID{"*"}
	if deviceID != "" {
		devices = []id.DeviceID{deviceID}
	}
	err := h.mach.SendRoomKeyRequest(ctx, roomID, senderKey, sessionID, "", map[id.UserID][]id.DeviceID{userID: devices})
	log := zerolog.Ctx(ctx).With().Stringer("room_id", roomID).Stringer("session_id", sessionID).Stringer("user_id", userID).Logger()
	if err != nil {
		log.Warn().Err(err).Msg("Failed to send a room key request")
	} else {
		log.Debug().Msg("Sent a room key request")
	}
}
