//go:build goolm

package matrixcrypto

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/goolm/session"
	"maunium.net/go/mautrix/crypto/olm"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const (
	archiveOutboundQuery = `
		INSERT INTO matrixcrypto_outbound_session (session_id, room_id, pickled, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (session_id) DO NOTHING
	`
	getOutboundQuery   = `SELECT pickled FROM matrixcrypto_outbound_session WHERE session_id=$1 AND room_id=$2`
	pruneOutboundQuery = `DELETE FROM matrixcrypto_outbound_session WHERE created_at<$1`
	// mautrix's crypto store records there each device a session was shared with; the bridge reads it by user, which
	// the store's own method (by device identity key) does not offer.
	sharedWithUserQuery = `SELECT COUNT(*) FROM crypto_megolm_outbound_session_shared WHERE user_id=$1 AND session_id=$2`
)

// outboundRetention is how long an outbound session stays answerable with an m.room_key after it was made; a later
// request gets a forwarded room key, which clients other than matrix-sdk-crypto's accept.
const outboundRetention = 30 * 24 * time.Hour

// errNotArchived means the outbound session of a key request is not in matrixcrypto_outbound_session.
var errNotArchived = errors.New("the outbound session is not kept")

// archiveOutbound keeps the room's outbound session sessionID (the one an event was just encrypted with), once per
// session: mautrix's store holds only a room's current one, and a rotation drops it with its signing key. A failure
// does not stop the send: without the kept session, a key request for it gets a forwarded room key instead.
func (h *Helper) archiveOutbound(ctx context.Context, roomID id.RoomID, sessionID id.SessionID) {
	if err := h.keepOutbound(ctx, roomID, sessionID); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Stringer("room_id", roomID).Stringer("session_id", sessionID).
			Msg("Failed to keep an outbound session for key requests")
	}
}

func (h *Helper) keepOutbound(ctx context.Context, roomID id.RoomID, sessionID id.SessionID) error {
	if _, ok := h.archived.Load(sessionID); ok {
		return nil
	}
	ogs, err := h.store.GetOutboundGroupSession(ctx, roomID)
	if err != nil {
		return fmt.Errorf("failed to read the outbound session of %s: %w", roomID, err)
	} else if ogs == nil || ogs.ID() != sessionID {
		// Replaced meanwhile by another send into the room, which archives its own.
		return nil
	}
	pickled, err := ogs.Internal.Pickle([]byte(h.cfg.PickleKey))
	if err != nil {
		return fmt.Errorf("failed to pickle the outbound session of %s: %w", roomID, err)
	}
	if _, err = h.db.Exec(ctx, archiveOutboundQuery, sessionID, roomID, string(pickled), time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("failed to keep the outbound session of %s: %w", roomID, err)
	}
	h.archived.Store(sessionID, struct{}{})
	return nil
}

// allowKeyShare decides on other devices' requests for room keys (crypto.OlmMachine.AllowKeyShare). The bridge
// answers for the sessions it made itself, the keys of what the bot and the ghosts sent, to a device of a user who
// is in the room now and who had the session shared with one of their devices when it was in use (so a user's new
// device reads what the bridge sent before it existed, and nobody reads what was sent before they joined), when the
// device has the share trust level. The answer is an m.room_key made from the kept outbound session (see
// answerWithRoomKey); a forwarded room key when the session is no longer kept.
func (h *Helper) allowKeyShare(ctx context.Context, device *id.Device, info event.RequestedKeyInfo) *crypto.KeyShareRejection {
	log := zerolog.Ctx(ctx).With().Stringer("user_id", device.UserID).Stringer("device_id", device.DeviceID).
		Stringer("room_id", info.RoomID).Stringer("session_id", info.SessionID).Logger()
	switch {
	case !h.cfg.AllowKeySharing:
		log.Info().Msg("Ignored a room key request: encryption.allow_key_sharing is off")
		return &crypto.KeyShareRejectNoResponse
	case device.UserID == h.client.UserID && device.DeviceID == h.client.DeviceID:
		return &crypto.KeyShareRejectNoResponse
	case device.Trust == id.TrustStateBlacklisted:
		log.Info().Msg("Refused a room key request from a blacklisted device")
		return &crypto.KeyShareRejectBlacklisted
	}
	if trust, _ := h.mach.ResolveTrustContext(ctx, device); trust < h.mach.ShareKeysMinTrust {
		log.Info().Stringer("trust", trust).Stringer("share_level", h.mach.ShareKeysMinTrust).
			Msg("Refused a room key request from a device below the share trust level")
		return &crypto.KeyShareRejectUnverified
	}
	igs, err := h.store.GetGroupSession(ctx, info.RoomID, info.SessionID)
	if err != nil || igs == nil {
		log.Info().AnErr("lookup_error", err).Msg("Refused a room key request for a session the bridge does not have")
		return &crypto.KeyShareRejectUnavailable
	}
	if igs.SenderKey != h.mach.OwnIdentity().IdentityKey {
		log.Info().Msg("Refused a room key request for a session the bridge did not make")
		return &crypto.KeyShareRejectNotRecipient
	}
	member, err := h.stateStore.GetMember(ctx, info.RoomID, device.UserID)
	if err != nil {
		log.Err(err).Msg("Failed to read membership for a room key request")
		return &crypto.KeyShareRejectNoResponse
	}
	if member.Membership != event.MembershipJoin {
		log.Info().Msg("Refused a room key request from a user who is not in the room")
		return &crypto.KeyShareRejectOtherUser
	}
	var shares int
	if err = h.db.QueryRow(ctx, sharedWithUserQuery, device.UserID, info.SessionID).Scan(&shares); err != nil {
		log.Err(err).Msg("Failed to read whom a session was shared with")
		return &crypto.KeyShareRejectNoResponse
	} else if shares == 0 {
		log.Info().Msg("Refused a room key request from a user the session was never shared with")
		return &crypto.KeyShareRejectNotRecipient
	}
	err = h.answerWithRoomKey(ctx, device, igs)
	if err == nil {
		log.Info().Uint32("first_index", igs.Internal.FirstKnownIndex()).Msg("Answered a room key request with the room key")
		return &crypto.KeyShareRejectNoResponse
	}
	if !errors.Is(err, errNotArchived) {
		log.Warn().Err(err).Msg("Failed to answer a room key request with the room key")
	}
	log.Info().Msg("Answering a room key request with a forwarded room key")
	return nil
}

// answerWithRoomKey sends device the session as an m.room_key from its first index, as the bot device shared it when
// the session was new: the session key is the inbound copy's first ratchet signed with the kept outbound session's
// signing key. matrix-sdk-crypto (Element's, the Rust SDK's) accepts an m.forwarded_room_key only from the user's
// own verified devices and only when it asked them, so a forward from the bridge would be dropped; an m.room_key
// from the session's creator is what it takes.
func (h *Helper) answerWithRoomKey(ctx context.Context, device *id.Device, igs *crypto.InboundGroupSession) error {
	var pickled string
	err := h.db.QueryRow(ctx, getOutboundQuery, igs.ID(), igs.RoomID).Scan(&pickled)
	if errors.Is(err, sql.ErrNoRows) {
		return errNotArchived
	} else if err != nil {
		return fmt.Errorf("failed to read the kept outbound session: %w", err)
	}
	out, err := session.MegolmOutboundSessionFromPickled([]byte(pickled), []byte(h.cfg.PickleKey))
	if err != nil {
		return fmt.Errorf("failed to unpickle the kept outbound session: %w", err)
	}
	key, err := sessionKeyFromFirstIndex(igs.Internal, out)
	if err != nil {
		return err
	}
	content := &event.RoomKeyEventContent{
		Algorithm:   id.AlgorithmMegolmV1,
		RoomID:      igs.RoomID,
		SessionID:   igs.ID(),
		SessionKey:  string(key),
		MaxAge:      igs.MaxAge,
		MaxMessages: igs.MaxMessages,
	}
	if err = h.mach.SendEncryptedToDevice(ctx, device, event.ToDeviceRoomKey, event.Content{Parsed: content}); err != nil {
		return fmt.Errorf("failed to send the room key: %w", err)
	}
	return nil
}

// sessionKeyFromFirstIndex is the session key (the m.room_key format, signed) of the inbound session's first known
// index, signed with the outbound session it came from.
func sessionKeyFromFirstIndex(inbound olm.InboundGroupSession, out *session.MegolmOutboundSession) ([]byte, error) {
	in, ok := inbound.(*session.MegolmInboundSession)
	if !ok {
		return nil, fmt.Errorf("the inbound session is a %T, not goolm's", inbound)
	}
	if !in.SigningKey.Equal(out.SigningKey.PublicKey) {
		return nil, errors.New("the kept outbound session's signing key is not the inbound session's")
	}
	key, err := in.InitialRatchet.SessionSharingMessage(out.SigningKey)
	if err != nil {
		return nil, fmt.Errorf("failed to make the session key: %w", err)
	}
	return key, nil
}

// pruneOutbound forgets kept outbound sessions older than outboundRetention.
func (h *Helper) pruneOutbound(ctx context.Context) error {
	if _, err := h.db.Exec(ctx, pruneOutboundQuery, time.Now().Add(-outboundRetention).UnixMilli()); err != nil {
		return fmt.Errorf("failed to prune kept outbound sessions: %w", err)
	}
	return nil
}
