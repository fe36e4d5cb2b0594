//go:build goolm

package matrixcrypto

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/database"
)

func member(roomID id.RoomID, user id.UserID, membership event.Membership) *event.Event {
	key := string(user)
	return &event.Event{Type: event.StateMember, RoomID: roomID, StateKey: &key,
		Content: event.Content{Parsed: &event.MemberEventContent{Membership: membership}}}
}

// TestFindSharedRooms runs the device-list query on the appservice's state store in bridge mode (as lmbridge makes
// it), where mautrix's own query would need a portal table: only the encrypted rooms the user is in count.
func TestFindSharedRooms(t *testing.T) {
	ctx := context.Background()
	db, err := database.Open(ctx, config.Database{Type: "sqlite3-fk-wal",
		URI: "file:" + filepath.Join(t.TempDir(), "t.db") + "?_txlock=immediate", MaxOpenConns: 1, MaxIdleConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ss := sqlstatestore.NewSQLStateStore(db.Database, dbutil.NoopLogger, true)
	if err = ss.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	alice := id.UserID("@alice:hs")
	encrypted, plain, left := id.RoomID("!enc:hs"), id.RoomID("!plain:hs"), id.RoomID("!left:hs")
	for _, evt := range []*event.Event{
		member(encrypted, alice, event.MembershipJoin), member(plain, alice, event.MembershipJoin),
		member(left, alice, event.MembershipLeave),
		{Type: event.StateEncryption, RoomID: encrypted, StateKey: new(string),
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}},
		{Type: event.StateEncryption, RoomID: left, StateKey: new(string),
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}},
	} {
		mautrix.UpdateStateStore(ctx, ss, evt)
	}
	rooms, err := stateStore{ss}.FindSharedRooms(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rooms, []id.RoomID{encrypted}) {
		t.Fatalf("shared rooms = %v, want [%s]", rooms, encrypted)
	}
}
