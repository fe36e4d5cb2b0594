package upgrades_test

import (
	"testing"

	"github.com/lmbridge/lmbridge/internal/upgradetest"
	"github.com/lmbridge/lmbridge/mimi/rooms/upgrades"
)

// TestLatestEqualsStepByStep checks that 00-latest.sql makes the database that the numbered upgrades make from
// version 1 (testdata/01-v1.sql, the schema as it was then), and that it is at the last version.
func TestLatestEqualsStepByStep(t *testing.T) {
	upgradetest.LatestEqualsStepByStep(t, upgrades.Table, "mimi_rooms_version")
}
