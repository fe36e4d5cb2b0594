package appservice

import (
	"errors"
	"fmt"
	"testing"

	"github.com/mattn/go-sqlite3"
)

// An event is given up after maxHandleAttempts failures or at once when permanent, but never while the database is
// full: space may come back at any time, and the event was acknowledged to the homeserver already.
func TestGivesUpNotWhileTheDatabaseIsFull(t *testing.T) {
	full := fmt.Errorf("failed to append: %w", sqlite3.Error{Code: sqlite3.ErrFull})
	other := errors.New("homeserver answered 502")
	for _, c := range []struct {
		attempts int
		err      error
		want     bool
	}{
		{1, other, false},
		{maxHandleAttempts - 1, other, false},
		{maxHandleAttempts, other, true},
		{1, fmt.Errorf("bad event: %w", ErrPermanent), true},
		{maxHandleAttempts, full, false},
		{10 * maxHandleAttempts, full, false},
	} {
		if got := givesUp(c.attempts, c.err); got != c.want {
			t.Errorf("givesUp(%d, %v) = %v, want %v", c.attempts, c.err, got, c.want)
		}
	}
}
