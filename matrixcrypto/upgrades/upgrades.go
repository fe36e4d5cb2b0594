// Package upgrades holds the schema migrations of matrixcrypto's own tables (mautrix's crypto store keeps its
// tables under crypto_version; these are lmbridge's, under matrixcrypto_version).
package upgrades

import (
	"embed"

	"go.mau.fi/util/dbutil"
)

//go:embed *.sql
var rawUpgrades embed.FS

// Table is the matrixcrypto upgrade table, tracked in matrixcrypto_version.
var Table = dbutil.BuildUpgradeTable().WithFS(rawUpgrades).Finish()
