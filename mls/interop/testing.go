package interop

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// startTimeout bounds StartT's wait for the harness's first answer (Node loads ts-mls in well under a second).
const startTimeout = 30 * time.Second

// Required reports whether a missing Node or ts-mls install fails tests (EnvRequire=1) rather than skips them.
func Required() bool { return os.Getenv(EnvRequire) == "1" }

// RequireT skips the test when Node or the harness's packages are missing, or fails it when EnvRequire=1.
func RequireT(t testing.TB) {
	t.Helper()
	_, err := Locate()
	if err == nil {
		return
	}
	if Required() {
		t.Fatalf("ts-mls is required (%s=1) but unavailable: %v", EnvRequire, err)
	}
	t.Skipf("ts-mls interop skipped: %v", err)
}

// StartT starts a harness for the test and closes it when the test ends (logging the harness's stderr if the test
// failed). A missing Node or ts-mls install skips the test; see RequireT.
func StartT(t testing.TB) *Harness {
	t.Helper()
	RequireT(t)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	h, err := Start(ctx)
	if errors.Is(err, ErrUnavailable) && !Required() {
		t.Skipf("ts-mls interop skipped: %v", err)
	}
	if err != nil {
		t.Fatalf("failed to start the ts-mls harness: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if s := h.Stderr(); s != "" {
				t.Logf("ts-mls harness stderr:\n%s", s)
			}
		}
		if err := h.Close(); err != nil {
			t.Errorf("failed to stop the ts-mls harness: %v", err)
		}
	})
	return h
}
