//go:build goolm

package matrixcrypto

import (
	"context"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"
)

// findSharedRoomsQuery lists the encrypted rooms a user is in, from the state store's own tables. mautrix's bridge
// mode of the query joins a portal table of the mautrix bridges' schema, which lmbridge does not have.
const findSharedRoomsQuery = `
	SELECT mx_user_profile.room_id FROM mx_user_profile
	JOIN mx_room_state ON mx_room_state.room_id=mx_user_profile.room_id
	WHERE mx_user_profile.user_id=$1 AND mx_user_profile.membership IN ('join', 'invite')
		AND mx_room_state.encryption IS NOT NULL
`

// stateStore is the appservice's state store as the Olm machine reads it.
type stateStore struct {
	*sqlstatestore.SQLStateStore
}

var _ crypto.StateStore = stateStore{}

// FindSharedRooms is the encrypted rooms userID is in, whose outbound sessions a change of the user's devices
// rotates.
func (s stateStore) FindSharedRooms(ctx context.Context, userID id.UserID) ([]id.RoomID, error) {
	rows, err := s.Query(ctx, findSharedRoomsQuery, userID)
	return dbutil.NewRowIterWithError(rows, dbutil.ScanSingleColumn[id.RoomID], err).AsList()
}
