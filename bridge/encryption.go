package bridge

import (
	"context"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/config"
)

// SetEncryption tells the bridge what end-to-bridge encryption allows (see config.Encryption): with allow, encrypted
// DAG rooms can be linked, since the crypto layer between dagview and the bridge hands it their events decrypted, and
// the appservice's intents encrypt what the bot and the ghosts send. Call it before the bridge handles events.
func (br *Bridge) SetEncryption(cfg config.Encryption) {
	br.enc = cfg
}

// encryptionRefused is the refusal of linking a room for its encryption: an encrypted room when encryption is not
// allowed, an unencrypted one when it is required (its messages would all be refused).
func (br *Bridge) encryptionRefused(state []*event.Event) error {
	encrypted := findState(state, event.StateEncryption, "") != nil
	switch {
	case encrypted && !br.enc.Allow:
		return ErrEncryptedRoom
	case !encrypted && br.enc.Require:
		return ErrUnencryptedRoom
	}
	return nil
}

// addEncryption turns encryption on in a portal room about to be created, when config asks for it.
func (br *Bridge) addEncryption(req *mautrix.ReqCreateRoom) {
	if !br.enc.Default {
		return
	}
	content := &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}
	if br.enc.Rotation.EnableCustom {
		content.RotationPeriodMillis = br.enc.Rotation.Milliseconds
		content.RotationPeriodMessages = br.enc.Rotation.Messages
	}
	req.InitialState = append(req.InitialState, &event.Event{
		Type:    event.StateEncryption,
		Content: event.Content{Parsed: content},
	})
}

// IsLinked says whether the DAG room is linked to an LM room.
func (br *Bridge) IsLinked(ctx context.Context, roomID id.RoomID) (bool, error) {
	link, err := br.linkByDAG(ctx, roomID)
	return link != nil, err
}

// NotifyNotBridged tells a linked DAG room that one of its events was not bridged, for a reason found before the
// bridge saw the event (it could not be decrypted, or it was plaintext where encryption is required). In a room
// without a link it does nothing: the bot is in many rooms it does not bridge.
func (br *Bridge) NotifyNotBridged(ctx context.Context, evt *event.Event, reason error) error {
	link, err := br.linkByDAG(ctx, evt.RoomID)
	if err != nil || link == nil {
		return err
	}
	br.tellDAG(ctx, evt.RoomID, evt.ID, evt.Sender, link, "One message could not be bridged to LM: "+reason.Error(), reason)
	return nil
}
