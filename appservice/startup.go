package appservice

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
)

// versionsRetryInterval is how long CheckHomeserver waits between /versions attempts while the homeserver is down.
var versionsRetryInterval = 5 * time.Second

// ErrPingFailed means the homeserver could not reach our listener.
var ErrPingFailed = errors.New("homeserver -> appservice connection is not working")

// CheckHomeserver runs the start-up checks bridgev2 runs: /versions (retried while the homeserver is unreachable),
// the bot's registration and whoami (which proves as_token), the bot's profile, and the appservice ping where the
// homeserver has it (Dendrite does not). On success the ready endpoint turns healthy. Start must have been called, so
// that the homeserver's ping can reach us.
func (as *AppService) CheckHomeserver(ctx context.Context) error {
	log := zerolog.Ctx(ctx)
	bot := as.Bot()
	for {
		versions, err := bot.Versions(ctx)
		if err == nil {
			as.AS.SpecVersions = versions
			log.Info().Strs("versions", versionStrings(versions)).Msg("Homeserver is reachable")
			break
		}
		log.Warn().Err(err).Dur("retry_in", versionsRetryInterval).Msg("Failed to reach homeserver, retrying")
		if !sleepCtx(ctx, versionsRetryInterval) {
			return ctx.Err()
		}
	}
	if err := bot.EnsureRegistered(ctx); err != nil {
		if bot.UserID.Localpart() != as.reg.SenderLocalpart {
			return fmt.Errorf("failed to register bot %s: %w", bot.UserID, err)
		}
		// The registration's sender user exists by virtue of the registration on some homeservers, which refuse to
		// register it again; whoami below proves it works.
		zerolog.Ctx(ctx).Debug().Err(err).Msg("Homeserver refused to register the sender user, continuing")
		if err = as.stateStore.MarkRegistered(ctx, bot.UserID); err != nil {
			return fmt.Errorf("failed to mark bot registered: %w", err)
		}
	}
	whoami, err := bot.Whoami(ctx)
	if err != nil {
		return fmt.Errorf("failed to check as_token with whoami: %w", err)
	} else if whoami.UserID != bot.UserID {
		return fmt.Errorf("whoami says %s, expected the bot %s", whoami.UserID, bot.UserID)
	}
	if as.cfg.Bot.Displayname != "" {
		err = bot.SetDisplayName(ctx, as.cfg.Bot.Displayname)
		if errors.Is(err, mautrix.MNotFound) {
			// Synapse keeps no profile for the registration's sender user until one is set, and mautrix's
			// SetDisplayName reads the current one first; set it directly.
			err = bot.Client.SetDisplayName(ctx, as.cfg.Bot.Displayname)
		}
		if err != nil {
			log.Warn().Err(err).Msg("Failed to set bot display name")
		}
	}
	if err = as.ping(ctx); err != nil {
		return err
	}
	as.ready.Store(true)
	log.Info().Stringer("bot", bot.UserID).Msg("Homeserver checks passed")
	return nil
}

func (as *AppService) ping(ctx context.Context) error {
	log := zerolog.Ctx(ctx)
	bot := as.Bot()
	const attempts = 5
	for i := 1; ; i++ {
		resp, err := bot.AppservicePing(ctx, as.reg.ID, bot.TxnID())
		if err == nil {
			log.Info().Int64("duration_ms", resp.DurationMS).Msg("Homeserver -> appservice ping works")
			return nil
		}
		if errors.Is(err, mautrix.MUnrecognized) {
			log.Info().Msg("Homeserver has no appservice ping, skipping the homeserver -> appservice check")
			return nil
		}
		if i >= attempts {
			return fmt.Errorf("%w: %w", ErrPingFailed, err)
		}
		log.Warn().Err(err).Int("attempt", i).Msg("Appservice ping failed, retrying")
		if !sleepCtx(ctx, 2*time.Second) {
			return ctx.Err()
		}
	}
}

func versionStrings(v *mautrix.RespVersions) []string {
	out := make([]string, 0, len(v.Versions))
	for _, ver := range v.Versions {
		out = append(out, ver.String())
	}
	return out
}
