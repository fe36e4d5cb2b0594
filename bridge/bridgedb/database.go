// Package bridgedb is the bridge package's storage: links between DAG and LM rooms, the event ID map, the
// processed-event dedup and the ghost profiles. The same SQL runs on SQLite and PostgreSQL.
package bridgedb

import (
	"context"
	"fmt"

	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/bridge/bridgedb/upgrades"
)

// VersionTable is the bridge package's own dbutil version table.
const VersionTable = "bridge_version"

// Database is the bridge's view of the shared database.
type Database struct {
	*dbutil.Database
}

// New wraps the shared database with the bridge's version table.
func New(parent *dbutil.Database, log dbutil.DatabaseLogger) *Database {
	return &Database{Database: parent.Child(VersionTable, upgrades.Table, log)}
}

// Upgrade brings the bridge's tables to the latest version.
func (db *Database) Upgrade(ctx context.Context) error {
	if err := db.Database.Upgrade(ctx); err != nil {
		return fmt.Errorf("failed to upgrade bridge tables: %w", err)
	}
	return nil
}
