package linearize

import (
	"fmt"
	"os"
	"testing"

	"github.com/lmbridge/lmbridge/internal/testpg"
)

// TestMain stops the PostgreSQL server that TestPruneOnPostgres may have started.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := testpg.StopShared(); err != nil {
		fmt.Fprintln(os.Stderr, "failed to stop PostgreSQL:", err)
		code = 1
	}
	os.Exit(code)
}
