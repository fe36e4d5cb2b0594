// Package store is the LM engine's tables: every query the engine runs, and the migrations (store/upgrades) that
// bring the tables to the current version. It knows rows, not rooms: what a row means is linearize's business.
package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"

	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/linearize/store/upgrades"
)

// VersionTable is where the version of the engine's tables is kept.
const VersionTable = "linearize_version"

// Store is the engine's tables. Every write goes through Write or one of the methods that write, which serialise them
// on a Go mutex: SQLite allows one writer, and its busy handler sleeps for milliseconds when writers collide, which
// would dominate latency.
type Store struct {
	db       *dbutil.Database
	roomRows *dbutil.QueryHelper[*RoomInfo]
	joinRows *dbutil.QueryHelper[*Join]
	lock     sync.Mutex
	// rooms caches lm_room rows, read on every received PDU; any write to lm_room clears it, again after the
	// transaction ends, so a reader cannot cache a row from before a commit.
	rooms       sync.Map
	roomWritten bool
	// roomGen changes on every clear; a reader caches what it read only if no clear happened meanwhile, checked and
	// stored under cacheLock so that a clear cannot fall between the two.
	roomGen   atomic.Int64
	cacheLock sync.Mutex
	// commits counts write transactions and autocommitted statements, for the benchmarks.
	commits atomic.Int64
}

// Open upgrades the engine's tables in db (tracked in VersionTable) and returns the store over them.
func Open(ctx context.Context, db *dbutil.Database) (*Store, error) {
	child := db.Child(VersionTable, upgrades.Table, nil)
	if err := child.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade linearize tables: %w", err)
	}
	return &Store{
		db:       child,
		roomRows: dbutil.MakeQueryHelperSimple(child, func() *RoomInfo { return &RoomInfo{} }),
		joinRows: dbutil.MakeQueryHelperSimple(child, func() *Join { return &Join{} }),
	}, nil
}

// Commits counts the write transactions and autocommitted statements so far, for the tests and benchmarks.
func (s *Store) Commits() int64 {
	return s.commits.Load()
}

type inWriteKey struct{}

// Write runs fn in one database transaction holding the write lock (or inside the caller's, if there is one). The
// Store's methods called with the ctx fn is given run in that transaction.
func (s *Store) Write(ctx context.Context, fn func(ctx context.Context) error) error {
	if ctx.Value(inWriteKey{}) != nil {
		return fn(ctx)
	}
	s.lock.Lock()
	defer s.lock.Unlock()
	// Not cancellable: a write that has begun should commit, and database/sql with go-sqlite3 starts a goroutine per
	// statement to watch a cancellable context.
	s.commits.Add(1)
	err := s.db.DoTxn(context.WithValue(context.WithoutCancel(ctx), inWriteKey{}, true), nil, fn)
	if s.roomWritten {
		s.roomWritten = false
		s.clearRooms()
	}
	return err
}

// exec runs one write statement under the write lock (or inside the caller's transaction).
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if ctx.Value(inWriteKey{}) != nil {
		return s.db.Exec(ctx, query, args...)
	}
	s.lock.Lock()
	defer s.lock.Unlock()
	s.commits.Add(1)
	return s.db.Exec(context.WithoutCancel(ctx), query, args...)
}

func nullString(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}
