package config

import (
	"fmt"
	"strings"
)

// SQLiteStatementCache is how many prepared statements each SQLite connection keeps. Without a cache
// mattn/go-sqlite3 prepares every statement again on every call, which was a sixth of lmbridge's CPU per bridged event.
const SQLiteStatementCache = 64

// IsSQLite says whether the database is the embedded SQLite one.
func (d Database) IsSQLite() bool {
	return strings.HasPrefix(d.Type, "sqlite3")
}

// DriverURI is the URI handed to the database driver: for SQLite, the configured one with a statement cache added
// unless the operator chose one with _stmt_cache_size; anything else unchanged.
func (d Database) DriverURI() string {
	if !d.IsSQLite() || strings.Contains(d.URI, "_stmt_cache_size=") {
		return d.URI
	}
	sep := "?"
	if strings.Contains(d.URI, "?") {
		sep = "&"
	}
	return fmt.Sprintf("%s%s_stmt_cache_size=%d", d.URI, sep, SQLiteStatementCache)
}
