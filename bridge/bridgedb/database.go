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
	events     *dbutil.QueryHelper[*EventMapping]
	links      *dbutil.QueryHelper[*Link]
	ghosts     *dbutil.QueryHelper[*GhostProfile]
	pendingDMs *dbutil.QueryHelper[*PendingDM]
}

// New wraps the shared database with the bridge's version table.
func New(parent *dbutil.Database, log dbutil.DatabaseLogger) *Database {
	child := parent.Child(VersionTable, upgrades.Table, log)
	return &Database{
		Database:   child,
		events:     dbutil.MakeQueryHelperSimple(child, func() *EventMapping { return &EventMapping{} }),
		links:      dbutil.MakeQueryHelperSimple(child, func() *Link { return &Link{} }),
		ghosts:     dbutil.MakeQueryHelperSimple(child, func() *GhostProfile { return &GhostProfile{} }),
		pendingDMs: dbutil.MakeQueryHelperSimple(child, func() *PendingDM { return &PendingDM{} }),
	}
}

// Upgrade brings the bridge's tables to the latest version.
func (db *Database) Upgrade(ctx context.Context) error {
	if err := db.Database.Upgrade(ctx); err != nil {
		return fmt.Errorf("failed to upgrade bridge tables: %w", err)
	}
	return nil
}
