package testpg

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/internal/tesths"
)

var (
	sharedOnce sync.Once
	shared     *Server
	sharedErr  error
	databases  atomic.Int64
)

// RequireT skips the test when PostgreSQL is not installed (EnvBin unset), or fails it when the tests require their
// servers (tesths.EnvRequire=1, as scripts/test.sh sets).
func RequireT(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvBin) != "" {
		return
	}
	if tesths.Required() {
		t.Fatalf("PostgreSQL is required (%s=1) but %s is not set; run scripts/install-postgres.sh", tesths.EnvRequire, EnvBin)
	}
	t.Skipf("PostgreSQL not installed: %s is not set (run scripts/install-postgres.sh)", EnvBin)
}

// Shared returns the test binary's one server, starting it on first use. A package whose tests use it calls
// StopShared from TestMain after m.Run; should it not, the server still dies with the test binary.
func Shared(t testing.TB) *Server {
	t.Helper()
	RequireT(t)
	sharedOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		start := time.Now()
		shared, sharedErr = Start(ctx, "")
		if sharedErr == nil {
			t.Logf("started PostgreSQL on 127.0.0.1:%d in %s (log %s)", shared.Port, time.Since(start).Round(time.Millisecond), shared.LogPath)
		}
	})
	if sharedErr != nil {
		t.Fatalf("failed to start PostgreSQL: %v", sharedErr)
	}
	return shared
}

// StopShared stops the shared server, if one was started.
func StopShared() error {
	if shared == nil {
		return nil
	}
	return shared.Stop()
}

var nonIdentifier = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDatabaseT creates a fresh database on the shared server for the test and returns its URI. The name carries
// the test's name, to find it in the server's log.
func NewDatabaseT(t testing.TB) string {
	t.Helper()
	srv := Shared(t)
	name := nonIdentifier.ReplaceAllString(strings.ToLower(t.Name()), "_")
	name = fmt.Sprintf("t%d_%s", databases.Add(1), name)
	if len(name) > 63 {
		name = name[:63]
	}
	uri, err := srv.CreateDatabase(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return uri
}
