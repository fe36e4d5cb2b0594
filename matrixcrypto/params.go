package matrixcrypto

import (
	"context"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/config"
)

// Params is what New needs.
type Params struct {
	Config config.Encryption
	// AS gives the bot's device client, the state store and the ghost namespace.
	AS *appservice.AppService
	// DB is the shared database; mautrix's crypto store keeps its tables there under crypto_version.
	DB *dbutil.Database
	// RoomState is the DAG room's current state (dagview's), read once per room to tell the state store the room's
	// encryption and members, which the appservice's transactions alone may not have carried.
	RoomState func(ctx context.Context, roomID id.RoomID) ([]*event.Event, error)
	// NotBridged tells the room that an event could not be bridged (the bridge's NotifyNotBridged).
	NotBridged func(ctx context.Context, evt *event.Event, reason error) error
	// Linked says whether a DAG room is linked (the bridge's IsLinked): encryption.require refuses plaintext messages
	// in linked rooms only, so that a command in a room not linked yet (its link, which is then refused if the room
	// is not encrypted) reaches the bridge. Nil counts every room as linked.
	Linked func(ctx context.Context, roomID id.RoomID) (bool, error)
}
