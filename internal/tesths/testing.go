package tesths

import (
	"context"
	"errors"
	"os"
	"testing"

	"maunium.net/go/mautrix"
)

// Required reports whether missing homeservers fail tests (EnvRequire=1) rather than skip them.
func Required() bool {
	return os.Getenv(EnvRequire) == "1"
}

// ForEachKind runs fn as a subtest named after each homeserver kind. A kind that is not installed is skipped, or
// fails the subtest when EnvRequire=1.
func ForEachKind(t *testing.T, fn func(t *testing.T, hs Kind)) {
	t.Helper()
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			RequireKind(t, kind)
			fn(t, kind)
		})
	}
}

// RequireKind skips the test (or fails it, when EnvRequire=1) if kind is not installed.
func RequireKind(t testing.TB, kind Kind) {
	t.Helper()
	if installDir(kind) != "" {
		return
	}
	if Required() {
		t.Fatalf("%s is required (%s=1) but %s is not set; run scripts/install-homeservers.sh", kind, EnvRequire, envVar(kind))
	}
	t.Skipf("%s not installed: %s is not set (run scripts/install-homeservers.sh)", kind, envVar(kind))
}

// StartT starts a homeserver for the test in a fresh temporary directory and stops it when the test ends. On a
// failed test it logs the tail of the server's log. A kind that is not installed skips the test (see RequireKind).
func StartT(t testing.TB, kind Kind, opts Options) *Homeserver {
	t.Helper()
	RequireKind(t, kind)
	hs, err := Start(context.Background(), kind, t.TempDir(), opts)
	if errors.Is(err, ErrUnavailable) && !Required() {
		t.Skipf("%s unavailable: %v", kind, err)
	}
	if err != nil {
		t.Fatalf("failed to start %s: %v", kind, err)
	}
	t.Logf("started %s %s at %s (log %s)", kind, hs.ServerName, hs.URL, hs.LogPath)
	t.Cleanup(func() {
		if err := hs.Stop(); err != nil {
			t.Errorf("failed to stop %s: %v", kind, err)
		}
		if t.Failed() {
			t.Logf("last lines of the %s log:\n%s", kind, logTail(hs.LogPath, logTailBytes))
		}
	})
	return hs
}

// RegisterUserT registers a user with RegisterUser and fails the test if that does not work.
func (hs *Homeserver) RegisterUserT(t testing.TB, localpart, password string, admin bool) *mautrix.Client {
	t.Helper()
	client, err := hs.RegisterUser(context.Background(), localpart, password, admin)
	if err != nil {
		t.Fatalf("failed to register %s on %s: %v", localpart, hs.Kind, err)
	}
	return client
}
