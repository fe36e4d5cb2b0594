package database

import (
	"errors"

	"github.com/lib/pq"
	"github.com/mattn/go-sqlite3"
)

// pqDiskFull is PostgreSQL's SQLSTATE for a write refused for want of space (class 53, insufficient resources).
const pqDiskFull = "53100"

// IsFull says whether err is the database refusing a write for want of space: SQLite's SQLITE_FULL (the disk is
// full, or the file reached its max_page_count), PostgreSQL's disk_full. Callers answer such a failure as one to
// retry later (503), and say in their log that the disk is full: the operator has to act, nothing else will.
func IsFull(err error) bool {
	var sqliteErr sqlite3.Error
	if errors.As(err, &sqliteErr) && sqliteErr.Code == sqlite3.ErrFull {
		return true
	}
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == pqDiskFull
}
