// Package upgrades holds the dagview package's schema migrations.
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var rawUpgrades embed.FS

// Table is the dagview upgrade table, tracked in dagview_version.
var Table = dbutil.BuildUpgradeTable().WithFS(rawUpgrades).Finish()
