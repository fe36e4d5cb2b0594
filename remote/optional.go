package remote

import "context"

// The interfaces below are what a Rooms may also do; the bridge asks for them with a type assertion and tells the
// user when the protocol at hand cannot.

// HistoryReader reads what a room held before this server joined it.
type HistoryReader interface {
	// RoomHistory returns up to limit events of the room from before the first event this server holds, oldest first,
	// as far as the room's host shows them. Their Index is 0: they are not in this server's order.
	RoomHistory(ctx context.Context, roomID RoomID, limit int) ([]*Event, error)
}

// ServerProber tells whether another server of the protocol answers.
type ServerProber interface {
	// ProbeServer asks server who it is; an error says why it did not answer (matching ErrBlocked and PeerError as
	// Rooms' errors do).
	ProbeServer(ctx context.Context, server ServerName) (*ServerInfo, error)
}

// ServerInfo is what a server said about itself.
type ServerInfo struct {
	Server ServerName
	// KeyIDs are its current signing keys' IDs.
	KeyIDs []string
	// ValidUntil is when its key answer expires, in milliseconds since the epoch.
	ValidUntil int64
}
