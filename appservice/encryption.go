package appservice

import (
	"context"
	"fmt"
	"sync"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"
)

// cryptoHook is the crypto helper SetCrypto installed, handed to each intent's client on its first use.
type cryptoHook struct {
	lock   sync.Mutex
	helper mautrix.CryptoHelper
}

// SetCrypto makes the bot's and the ghosts' clients encrypt what they send into encrypted rooms with helper (the
// bot's device, see matrixcrypto): mautrix's client encrypts a message event when its state store says the room is
// encrypted, and sends the m.room.encrypted event as the intent's own user. Call it before Start.
func (as *AppService) SetCrypto(helper mautrix.CryptoHelper) {
	as.crypto.lock.Lock()
	defer as.crypto.lock.Unlock()
	as.crypto.helper = helper
}

// withCrypto gives the intent's client the installed crypto helper, if any. mautrix caches one client per user, so
// this writes each client's field once, under the lock, before that client's first send.
func (as *AppService) withCrypto(in *Intent) *Intent {
	as.crypto.lock.Lock()
	defer as.crypto.lock.Unlock()
	if as.crypto.helper != nil && in.Client.Crypto == nil {
		in.Client.Crypto = as.crypto.helper
	}
	return in
}

// StateStore is mautrix's state store that the dispatcher keeps up to date; the crypto layer reads room encryption
// and members from it.
func (as *AppService) StateStore() *sqlstatestore.SQLStateStore {
	return as.stateStore
}

// NewBotDeviceClient is a new client for the bot with the appservice token, for logging in the bot's own device. It
// is not the bot intent's client, so logging in may replace its token by the device's.
func (as *AppService) NewBotDeviceClient() *mautrix.Client {
	return as.AS.NewMautrixClient(as.botUserID)
}

// encrypts says whether a message of evtType this intent sends into roomID goes out encrypted, as mautrix's client
// decides it: a crypto helper is installed and the state store has the room encrypted (reactions stay in clear).
func (in *Intent) encrypts(ctx context.Context, roomID id.RoomID, evtType event.Type) (bool, error) {
	if in.Client.Crypto == nil || evtType == event.EventEncrypted || evtType == event.EventReaction {
		return false, nil
	}
	encrypted, err := in.Client.StateStore.IsEncrypted(ctx, roomID)
	if err != nil {
		return false, fmt.Errorf("failed to check whether %s is encrypted: %w", roomID, err)
	}
	return encrypted, nil
}

// encryptWithMarker encrypts content (which carries the marker already) and puts TxnMarkerKey in the clear part of
// the m.room.encrypted content too, beside m.relates_to: the resend look-up (sendLog.findEarlier) reads events as
// the homeserver has them, and cannot decrypt. The marker tells nothing the homeserver does not know: the
// transaction ID is in the send's URL.
func (in *Intent) encryptWithMarker(ctx context.Context, roomID id.RoomID, evtType event.Type, content any, txnID string) (map[string]any, error) {
	encrypted, err := in.Client.Crypto.Encrypt(ctx, roomID, evtType, content)
	if err != nil {
		return nil, fmt.Errorf("failed to encrypt: %w", err)
	}
	return withTxnMarker(encrypted, txnID)
}
