// Package database opens lmbridge's database: PostgreSQL, or SQLite in WAL mode with its checkpoints run in the
// background rather than inside a commit.
package database

import (
	"database/sql"
	"database/sql/driver"
	"fmt"

	// The PostgreSQL driver, for database.type: postgres; dbutil opens it by that name.
	_ "github.com/lib/pq"
	"github.com/mattn/go-sqlite3"
)

// SQLite's own automatic checkpoint runs inside the commit that fills the WAL past 1,000 pages: that commit copies
// the pages into the database file and waits for two fsyncs, a stall of several milliseconds on whatever event was
// being committed (the p99 of the bridge's benchmarks). lmbridge's drivers turn it off and a checkpointer of the
// database's own runs it from another connection, which writers do not wait for.

// The driver names start with "sqlite" so that dbutil takes them for the SQLite dialect.
const (
	driverWAL         = "sqlite3-lmbridge-wal"
	driverWALFullSync = "sqlite3-lmbridge-wal-fullsync"
)

// driverFor maps the config's database types to the driver that opens them.
var driverFor = map[string]string{
	"sqlite3-fk-wal":          driverWAL,
	"sqlite3-fk-wal-fullsync": driverWALFullSync,
}

func init() {
	sql.Register(driverWAL, &sqlite3.SQLiteDriver{ConnectHook: connectHook("NORMAL")})
	sql.Register(driverWALFullSync, &sqlite3.SQLiteDriver{ConnectHook: connectHook("FULL")})
}

// connectHook sets up each connection: foreign keys, WAL, the given synchronous level, a busy timeout, and no
// automatic checkpoint.
func connectHook(synchronous string) func(*sqlite3.SQLiteConn) error {
	pragmas := []string{
		"PRAGMA foreign_keys = ON",
		"PRAGMA journal_mode = WAL",
		"PRAGMA synchronous = " + synchronous,
		"PRAGMA busy_timeout = 5000",
		"PRAGMA wal_autocheckpoint = 0",
	}
	return func(conn *sqlite3.SQLiteConn) error {
		for _, pragma := range pragmas {
			if _, err := conn.Exec(pragma, []driver.Value{}); err != nil {
				return fmt.Errorf("failed to run %q: %w", pragma, err)
			}
		}
		return nil
	}
}
