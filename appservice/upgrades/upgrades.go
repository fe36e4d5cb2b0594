// Package upgrades holds the appservice package's schema migrations.
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var rawUpgrades embed.FS

// Table is the appservice upgrade table, tracked in appservice_version.
var Table = dbutil.BuildUpgradeTable().WithFS(rawUpgrades).Finish()
