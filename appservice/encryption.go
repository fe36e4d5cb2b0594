package appservice

import (
	"sync"

	"maunium.net/go/mautrix"
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
