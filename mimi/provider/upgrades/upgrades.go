// Package upgrades holds the MIMI provider's schema migrations.
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var rawUpgrades embed.FS

// Table is the MIMI provider's upgrade table, tracked in mimi_version.
var Table = dbutil.BuildUpgradeTable().WithFS(rawUpgrades).Finish()
