// Package matrixcrypto is lmbridge's end-to-bridge encryption of Matrix rooms: the bridge bot's own Matrix device,
// made with mautrix-go's crypto and its pure-Go Olm (goolm), keys and sessions in lmbridge's database. It decrypts
// what users send before the bridge sees it, and encrypts what the bot and the ghosts send (the bot's device holds
// the Megolm session, each ghost sends the m.room.encrypted event as itself, as the mautrix bridges do on homeservers
// without device masquerading). To-device messages (room keys, key requests) reach the device through a /sync loop
// of its own, which works on every homeserver; the appservice push of them (MSC2409) is not used.
//
// It needs the goolm build tag: without it mautrix's crypto package links libolm, a C library lmbridge does not
// depend on, so the package builds a stub that refuses to start instead.
package matrixcrypto

import "errors"

var (
	// ErrNotBuilt means lmbridge was built without the goolm tag, so it has no Olm implementation.
	ErrNotBuilt = errors.New("lmbridge was built without end-to-bridge encryption (build with -tags goolm)")
	// ErrNoAppserviceLogin means the homeserver offers no m.login.application_service login for the bot's device.
	ErrNoAppserviceLogin = errors.New("the homeserver does not offer appservice login (m.login.application_service)")
	// ErrSyncRefused means the homeserver would not let the bot's device /sync, as Synapse refuses an appservice's
	// sender user: encryption.appservice (MSC2409 and MSC3202 pushes) is the way there.
	ErrSyncRefused = errors.New("the homeserver refuses /sync to the bot's device; on Synapse, set encryption.appservice: true " +
		"and enable msc2409_to_device_messages_enabled and msc3202_transaction_extensions in experimental_features")
	// ErrUndecryptable means an event's room key did not arrive in time, or the event did not decrypt with it.
	ErrUndecryptable = errors.New("it could not be decrypted: the bridge's device did not receive its key")
	// ErrUntrustedDevice means an event came from a device below encryption.verification_levels.receive.
	ErrUntrustedDevice = errors.New("it was sent from a device the bridge does not trust enough")
	// ErrPlaintext means a plaintext message came into a room where encryption.require asks for encrypted ones.
	ErrPlaintext = errors.New("it was not encrypted, and the bridge only bridges encrypted messages")
)
