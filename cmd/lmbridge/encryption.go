package main

import (
	"context"
	"fmt"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/bridge"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/dagview"
	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/matrixcrypto"
)

// startEncryption starts end-to-bridge encryption when config allows it, and returns the listener dagview hands the
// bridge's events to (the bridge itself, or the decrypting layer in front of it) and what stops it. It runs before
// the appservice starts delivering events, which the decrypting layer must be ready for.
func startEncryption(ctx context.Context, cfg *config.Config, db *database.DB, as *appservice.AppService,
	view *dagview.View, br *bridge.Bridge) (dagview.Listener, func(), error) {
	if !cfg.Encryption.Allow {
		return br, func() {}, nil
	}
	br.SetEncryption(cfg.Encryption)
	enc, err := matrixcrypto.New(ctx, matrixcrypto.Params{
		Config:     cfg.Encryption,
		AS:         as,
		DB:         db.Database,
		RoomState:  view.StateEvents,
		NotBridged: br.NotifyNotBridged,
		Linked:     br.IsLinked,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("failed to set up end-to-bridge encryption: %w", err)
	}
	if err = enc.Start(ctx); err != nil {
		return nil, nil, fmt.Errorf("failed to start end-to-bridge encryption: %w", err)
	}
	return enc.Listener(br), enc.Stop, nil
}
