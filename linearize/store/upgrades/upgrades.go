// Package upgrades holds the linearize package's schema migrations: 00-latest.sql creates the current schema in one
// step, the numbered files bring an older database up one version each.
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var rawUpgrades embed.FS

// Table is the linearize upgrade table, tracked in linearize_version.
var Table = dbutil.BuildUpgradeTable().WithFS(rawUpgrades).Finish()
