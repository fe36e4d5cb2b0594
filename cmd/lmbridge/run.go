package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	mautrixappservice "maunium.net/go/mautrix/appservice"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/bridge"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/dagview"
	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/linearize"
	"github.com/lmbridge/lmbridge/media"
)

// run starts lmbridge's services and blocks until ctx is cancelled or a service fails for good.
//
// Start-up order matters: the tables are upgraded before anything reads them; the appservice listener comes up
// before the homeserver checks, because the homeserver's ping has to reach it; catch-up runs after the checks, once
// the homeserver is known to answer.
func run(ctx context.Context, cfg *config.Config, reg *mautrixappservice.Registration) error {
	log := zerolog.Ctx(ctx)
	db, err := database.Open(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer func() {
		if err := db.Close(); err != nil {
			log.Warn().Err(err).Msg("Failed to close database")
		}
	}()

	as, err := appservice.New(appservice.Params{
		Homeserver:   cfg.Homeserver,
		AppService:   cfg.AppService,
		Registration: reg,
		DB:           db.Database,
	})
	if err != nil {
		return fmt.Errorf("failed to set up appservice: %w", err)
	}
	view := dagview.New(as, db.Database)
	if err = as.Upgrade(ctx); err != nil {
		return err
	}
	if err = view.Upgrade(ctx); err != nil {
		return err
	}

	// The engine delivers LM events to the bridge, and the bridge sends through the engine: the engine is made
	// first, the bridge registered as its listener before Start, so no event is delivered without it. The bridge
	// knows the engine only as remote.Rooms and remote.Listener: this is where LM is wired in.
	engine, err := linearize.New(ctx, cfg.LM, db.Database, linearize.Options{})
	if err != nil {
		return fmt.Errorf("failed to set up the LM engine: %w", err)
	}
	users, err := bridge.NewUserMapper(cfg.Homeserver.Domain, engine.ServerName(), as.BotUserID(), cfg.AppService.UsernameTemplate)
	if err != nil {
		return fmt.Errorf("failed to set up user mapping: %w", err)
	}
	files, err := media.New(media.Params{Config: cfg.Media, HomeserverDomain: cfg.Homeserver.Domain,
		LMServerName: string(engine.ServerName()), DB: db.Database, AS: as, Fetcher: engine.NewMediaClient()})
	if err != nil {
		return fmt.Errorf("failed to set up media: %w", err)
	}
	if err = files.Upgrade(ctx); err != nil {
		return err
	}
	if err = engine.ServeMedia(files.Source()); err != nil {
		return fmt.Errorf("failed to serve media: %w", err)
	}
	// MIMI, when configured, is wired the same way: made before the bridge, started after it is the listener.
	mimiRooms, err := newMIMI(ctx, cfg, db.Database, files, users)
	if err != nil {
		return err
	}
	params := bridge.Params{
		Config: cfg.Bridge,
		DB:     db.Database,
		Users:  users,
		Matrix: &bridge.MatrixAppService{AS: as, View: view},
		LM:     engine,
		Media:  files,
		Log:    *log,
	}
	if mimiRooms != nil {
		params.MIMI = mimiRooms
	}
	br, err := bridge.New(params)
	if err != nil {
		return fmt.Errorf("failed to set up the bridge: %w", err)
	}
	if err = br.Upgrade(ctx); err != nil {
		return err
	}
	engine.AddListener("bridge", br)
	as.SetQueryHandler(br)
	as.Router().Handle(bridge.ProvisioningPrefix+"/", br.ProvisioningHandler())

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The engine starts first so that a DAG event handled as soon as the appservice starts finds it running.
	if err = engine.Start(runCtx); err != nil {
		return fmt.Errorf("failed to start the LM engine: %w", err)
	}
	defer func() {
		if err := engine.Stop(context.WithoutCancel(ctx)); err != nil {
			log.Warn().Err(err).Msg("Failed to stop the LM engine cleanly")
		}
	}()
	if mimiRooms != nil {
		mimiRooms.SetListener(br.MIMIListener())
		if err = mimiRooms.Start(runCtx); err != nil {
			return fmt.Errorf("failed to start the MIMI provider: %w", err)
		}
		defer func() {
			if err := mimiRooms.Close(); err != nil {
				log.Warn().Err(err).Msg("Failed to stop the MIMI provider cleanly")
			}
		}()
		log.Info().Str("mimi_domain", cfg.MIMI.Domain).Str("listen", cfg.MIMI.Listen).Msg("MIMI provider started")
	}
	listener, stopEncryption, err := startEncryption(runCtx, cfg, db, as, view, br)
	if err != nil {
		return err
	}
	defer stopEncryption()
	view.SetListener(listener)
	if err = as.Start(runCtx, view); err != nil {
		return err
	}
	defer as.Stop()

	go func() {
		if err := as.CheckHomeserver(runCtx); err != nil {
			if runCtx.Err() == nil {
				cancel(fmt.Errorf("homeserver checks failed: %w", err))
			}
			return
		}
		go view.RunRedactionPoll(runCtx, time.Duration(cfg.Homeserver.RedactionPollSeconds)*time.Second)
		view.RunCatchUp(runCtx, dagview.CatchUpInterval)
	}()

	<-runCtx.Done()
	if cause := context.Cause(runCtx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	log.Info().Msg("Shutting down")
	return nil
}
