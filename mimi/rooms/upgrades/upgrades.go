// Package upgrades holds the schema migrations of the MIMI side of the bridge (package mimi/rooms).
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var rawUpgrades embed.FS

// Table is the upgrade table of mimi/rooms, tracked in mimi_rooms_version.
var Table = dbutil.BuildUpgradeTable().WithFS(rawUpgrades).Finish()
