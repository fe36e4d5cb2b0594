package provider

import "errors"

// Sentinel errors, wrapped with what was being done. The first four are the hub's answers of the draft
// (UpdateResponseCode, SubmitResponseCode), as a caller on a follower sees them.
var (
	// ErrNotAllowed means the room's policy refused the operation (notAllowed).
	ErrNotAllowed = errors.New("mimi provider: not allowed by the room's policy")
	// ErrWrongEpoch means a message for an epoch other than the hub's (wrongEpoch, epochTooOld).
	ErrWrongEpoch = errors.New("mimi provider: wrong epoch")
	// ErrInvalidProposal means a proposal or commit the hub's MLS view refused (invalidProposal).
	ErrInvalidProposal = errors.New("mimi provider: invalid proposal or commit")
	// ErrBadRequest means a body that does not decode, or a request that names the wrong room or provider.
	ErrBadRequest = errors.New("mimi provider: malformed request")
	// ErrUnknownRoom means a room this provider does not hub or follow.
	ErrUnknownRoom = errors.New("mimi provider: unknown room")
	// ErrUnknownUser means a user (or client) that is not known where it should be.
	ErrUnknownUser = errors.New("mimi provider: unknown user")
	// ErrNotInRoom means a local user with no client in the room.
	ErrNotInRoom = errors.New("mimi provider: user not in the room")
	// ErrNoKeyMaterial means the target user's provider had no KeyPackage to give.
	ErrNoKeyMaterial = errors.New("mimi provider: no key material")
	// ErrUnreachable means a peer provider that did not answer (or not as the protocol says).
	ErrUnreachable = errors.New("mimi provider: peer unreachable")
	// ErrPeerAuth means a request whose TLS client certificate does not match its From header.
	ErrPeerAuth = errors.New("mimi provider: peer not authenticated")
	// ErrBadRoomState means GroupContext extensions without a well-formed room state.
	ErrBadRoomState = errors.New("mimi provider: malformed room state")
	// ErrBadURI means an identifier that is not a MIMI URI of the expected shape.
	ErrBadURI = errors.New("mimi provider: malformed MIMI URI")
	// ErrClosed means a provider that was closed.
	ErrClosed = errors.New("mimi provider: closed")
)
