package main

import (
	// The PostgreSQL driver, for database.type: postgres; dbutil opens it by that name.
	_ "github.com/lib/pq"
	// The SQLite driver with foreign keys, WAL and a busy timeout, for database.type: sqlite3-fk-wal.
	_ "go.mau.fi/util/dbutil/litestream"
)
