// Package provider is a MIMI provider (draft-ietf-mimi-protocol-06): the provider endpoints over mutually
// authenticated HTTPS, the hub role (it owns a room's MLS group view, checks each commit, proposal and message against
// the room's policy, orders them and fans them out to followers) and the follower role (it holds an MLS client per
// local user, submits their messages and commits to the hub and applies what the hub notifies).
//
// Everything is persisted in the application's database (mimi_* tables, upgrades package) before it is acknowledged:
// the hub writes an accepted message, its new group view and the fan-out rows in one transaction before answering;
// a follower writes its clients' new MLS states, the digest it deduplicates on and the events for the application in
// one transaction before answering 201.
//
// Room state lives in the GroupContext's app_data_dictionary extension (roles_list, participant_list, room_metadata
// components, encoded as the drafts define them). mls/wire does not implement AppDataUpdate (draft-ietf-mls-extensions)
// yet, so a change of room state travels as an RFC 9420 GroupContextExtensions proposal carrying the whole new
// dictionary; the hub compares the old and new components and applies the room-policy draft's checks to the
// difference, as it would to AppDataUpdate proposals.
//
// Identifiers: a user is mimi://<domain>/u/<name>, a client of that user mimi://<domain>/d/<name>/<device> (its MLS
// basic credential), a room mimi://<hub domain>/r/<name>, whose MLS group ID is the room URI.
package provider
