// Package provider is a MIMI provider (draft-ietf-mimi-protocol-06): the provider endpoints over mutually
// authenticated HTTPS, the hub role (it owns a room's MLS group view, checks each commit, proposal and message against
// the room's policy, orders them and fans them out to followers) and the follower role (it holds an MLS client per
// local user, submits their messages and commits to the hub and applies what the hub notifies).
//
// Everything is persisted in the application's database (mimi_* tables, upgrades package) before it is acknowledged:
// the hub writes an accepted message, its new group view and the fan-out rows in one transaction before answering
// (application messages that arrive together share one transaction, each answered once it committed); a follower
// writes its clients' new MLS states, the digest it deduplicates on and the events for the application in one
// transaction before answering 201. What is kept in memory only saves reading it back: the hub's group views, a
// follower's decoded client groups per room (dropped whenever something that changed them was not stored) and the
// fan-out rows just committed.
//
// Room state lives in the GroupContext's app_data_dictionary extension (roles_list, participant_list, room_metadata
// components, encoded as the drafts define them). mls/wire does not implement AppDataUpdate (draft-ietf-mls-extensions)
// yet, so a change of room state travels as an RFC 9420 GroupContextExtensions proposal carrying the whole new
// dictionary; the hub compares the old and new components and applies the room-policy draft's checks to the
// difference, as it would to AppDataUpdate proposals.
//
// The API the bridge uses: New and Start (with Config: domain, listen address, TLSConfig or LoadTLS, the database,
// Callbacks), RegisterUser (a local user's client, with its KeyPackages published), CreateRoom (this provider hubs
// it), AddUser (a user of any provider, KeyPackages through keyMaterial), RemoveUser, Leave, AddDevice (a new client
// of a user already in the room, by external commit), Send (mimi/content bytes from a local user; returns once the
// hub has stored it, with its acceptance time), RoomState, DeliveryStatus (per follower: queued fan-out, failures),
// and the Callbacks OnMessage and OnMembership, called from a persisted inbox until they return nil. Consent and
// identifier query: LookupUser (a handle to a user URI, identifierQuery), RequestConsent and CancelConsentRequest
// (requestConsent), GrantConsent and RevokeConsent (updateConsent), ConsentRequests, HasConsent, and the optional
// ConsentCallbacks; with Config.RequireConsent, keyMaterial for a local user asked for by another provider's user
// answers noConsent (noConsentForThisRoom) until that user granted it, so AddUser fails with ErrNotAllowed. Errors
// wrap the package's sentinels: ErrNotAllowed, ErrWrongEpoch, ErrInvalidProposal (the hub's answers), ErrUnknownRoom,
// ErrUnknownUser, ErrNotInRoom, ErrNoKeyMaterial, ErrUnreachable, ErrBadRequest.
//
// Limits: the hub rebuilds a room's view after a restart by replaying its whole handshake log (no snapshots yet); the
// Welcome is routed by the added clients' credential domain rather than by the KeyPackageRefs the hub forwarded; a
// follower whose accepted commit was lost before it stored it re-joins by external commit, and cannot decrypt the
// messages of the epochs it missed; reportAbuse, franking and SemiPrivateMessage are not implemented; identifierQuery
// answers exact handle and nick searches only; a consent grant's KeyPackages are not sent (the list may be empty).
//
// Identifiers: a user is mimi://<domain>/u/<name>, a client of that user mimi://<domain>/d/<name>/<device> (its MLS
// basic credential), a room mimi://<hub domain>/r/<name>, whose MLS group ID is the room URI.
package provider
