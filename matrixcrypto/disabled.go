//go:build !goolm

package matrixcrypto

import (
	"context"

	"github.com/lmbridge/lmbridge/dagview"
)

// Helper is the bot's device; without the goolm tag it cannot be made.
type Helper struct{}

// New fails: this build has no Olm implementation.
func New(context.Context, Params) (*Helper, error) { return nil, ErrNotBuilt }

// Start is never reached without a Helper.
func (h *Helper) Start(context.Context) error { return ErrNotBuilt }

// Stop does nothing.
func (h *Helper) Stop() {}

// Listener hands events on unchanged.
func (h *Helper) Listener(next dagview.Listener) dagview.Listener { return next }
