// Package sqlitecap opens lmbridge's SQLite database with a cap on its size that a test moves, to fill the disk as
// SQLite reports it (SQLITE_FULL, "database or disk is full") while lmbridge runs, and to give the space back. The
// cap is SQLite's PRAGMA max_page_count, set on every connection as it is opened, which needs no privileges (a small
// tmpfs would need a mount).
package sqlitecap

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/database"
)

// noCap is SQLite's own largest max_page_count.
const noCap = 4294967294

// DB is lmbridge's database (as database.Open opens it) whose size can be capped.
type DB struct {
	*database.DB
	maxPages atomic.Int64
}

var drivers atomic.Int64

// Open opens the SQLite database at path as lmbridge opens it with the example config, with no cap yet.
func Open(ctx context.Context, path string, maxOpenConns int) (*DB, error) {
	d := &DB{}
	d.maxPages.Store(noCap)
	// A driver of its own, so that its connections read this DB's cap. The name starts with sqlite3 for dbutil and
	// config to take it for SQLite.
	name := fmt.Sprintf("sqlite3-lmbridge-capped-%d", drivers.Add(1))
	sql.Register(name, &sqlite3.SQLiteDriver{ConnectHook: d.connect})
	db, err := database.Open(ctx, config.Database{Type: name, URI: "file:" + path + "?_txlock=immediate",
		MaxOpenConns: maxOpenConns, MaxIdleConns: 2})
	if err != nil {
		return nil, err
	}
	// The cap is a connection's own setting: each connection serves one use and is closed, so that every use after
	// Fill or Free runs under the cap as it is then.
	db.RawDB.SetConnMaxLifetime(time.Nanosecond)
	d.DB = db
	return d, nil
}

// connect sets a connection up as lmbridge's sqlite3-fk-wal driver does, then caps it.
func (d *DB) connect(conn *sqlite3.SQLiteConn) error {
	for _, pragma := range []string{
		"PRAGMA foreign_keys = ON",
		"PRAGMA journal_mode = WAL",
		"PRAGMA synchronous = NORMAL",
		"PRAGMA busy_timeout = 5000",
		"PRAGMA wal_autocheckpoint = 0",
		fmt.Sprintf("PRAGMA max_page_count = %d", d.maxPages.Load()),
	} {
		if _, err := conn.Exec(pragma, []driver.Value{}); err != nil {
			return fmt.Errorf("failed to run %q: %w", pragma, err)
		}
	}
	return nil
}

// Fill caps the database at its current size plus slack pages (of 4 KiB): the writes that need more fail with
// SQLITE_FULL.
func (d *DB) Fill(ctx context.Context, slack int) error {
	var pages int64
	if err := d.RawDB.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		return fmt.Errorf("failed to read the page count: %w", err)
	}
	d.maxPages.Store(pages + int64(slack))
	return nil
}

// Free lifts the cap.
func (d *DB) Free() {
	d.maxPages.Store(noCap)
}
