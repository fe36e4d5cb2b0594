// Package upgrades holds the bridge package's schema migrations.
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var upgrades embed.FS

// Table is the upgrade table of the bridge_version version table.
var Table = dbutil.BuildUpgradeTable().WithFS(upgrades).Finish()
