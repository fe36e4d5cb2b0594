package remote

import (
	"errors"
	"strconv"
)

// The sentinels a Rooms implementation's errors match. Each says what the bridge does with the failure: the first
// four and ErrUnsupported are for good (the event can never cross as it is), ErrBlocked and ErrBadAnswer are the remote side's.
var (
	// ErrForbidden means this server's check of the room's rules refused the request.
	ErrForbidden = errors.New("refused by the room's rules")
	// ErrNotFound means nothing is known here about the room.
	ErrNotFound = errors.New("unknown room")
	// ErrNotJoined means none of our users is joined to the room, so nothing can be sent into it.
	ErrNotJoined = errors.New("no user of ours is joined to the room")
	// ErrNotOurUser means a request was to act for a user of another server.
	ErrNotOurUser = errors.New("user does not belong to this server")
	// ErrUnsupported means the protocol has no way to carry the request (a kind of event or membership it lacks).
	ErrUnsupported = errors.New("not supported by the protocol")
	// ErrBlocked means this server may not connect to the other server's address (its blocklist).
	ErrBlocked = errors.New("address is blocked")
	// ErrBadAnswer means another server answered with something we cannot accept (it failed, not the request).
	ErrBadAnswer = errors.New("bad answer from remote server")
)

// PeerError is another server's refusal of a request, in HTTP terms: all the protocols at hand answer over HTTP
// with Matrix-style error codes.
type PeerError struct {
	Status int
	// Code is the error code of the answer (M_FORBIDDEN), when it had one.
	Code string
}

func (e *PeerError) Error() string {
	return "remote server answered " + strconv.Itoa(e.Status) + " " + e.Code
}

// Mapped is an implementation's error err that also matches the seam's errors in also; its message is err's.
type Mapped struct {
	Err  error
	Also []error
}

func (m *Mapped) Error() string { return m.Err.Error() }

func (m *Mapped) Unwrap() []error { return append([]error{m.Err}, m.Also...) }
