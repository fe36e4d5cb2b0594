// Package upgrades holds the media package's schema migrations.
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var rawUpgrades embed.FS

// Table is the media upgrade table, tracked in media_version.
var Table = dbutil.BuildUpgradeTable().WithFS(rawUpgrades).Finish()
