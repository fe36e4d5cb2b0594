package remote

import (
	"errors"
	"fmt"
	"testing"
)

// TestMappedKeepsTheMessageAndMatchesBoth checks that a mapped error reads as the implementation's and matches both
// its own chain and the seam's errors.
func TestMappedKeepsTheMessageAndMatchesBoth(t *testing.T) {
	own := errors.New("engine refused")
	err := fmt.Errorf("failed to send: %w", &Mapped{Err: fmt.Errorf("room x: %w", own),
		Also: []error{ErrForbidden, &PeerError{Status: 403, Code: "M_FORBIDDEN"}}})
	if err.Error() != "failed to send: room x: engine refused" {
		t.Errorf("message %q", err)
	}
	if !errors.Is(err, own) || !errors.Is(err, ErrForbidden) || errors.Is(err, ErrNotFound) {
		t.Errorf("errors.Is: own %v, ErrForbidden %v, ErrNotFound %v", errors.Is(err, own), errors.Is(err, ErrForbidden),
			errors.Is(err, ErrNotFound))
	}
	var peer *PeerError
	if !errors.As(err, &peer) || peer.Status != 403 || peer.Code != "M_FORBIDDEN" {
		t.Errorf("errors.As PeerError: %+v", peer)
	}
}
