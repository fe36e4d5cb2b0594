//go:build goolm

package matrixcrypto

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// syncRetry is how long the loop waits after a failed /sync before the next.
const syncRetry = 5 * time.Second

// checkSync makes one /sync that returns at once, so that a homeserver refusing /sync to the bot (Synapse does, to an
// appservice's sender user) stops the start with a clear error instead of a sync loop that fails forever. Its
// to-device messages are not acknowledged: the loop starts from the stored token and gets them again.
func (h *Helper) checkSync(ctx context.Context, syncer *toDeviceSyncer) error {
	filter, err := json.Marshal(syncer.GetFilterJSON(h.client.UserID))
	if err != nil {
		return fmt.Errorf("failed to encode the sync filter: %w", err)
	}
	_, err = h.client.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0, FilterID: string(filter)})
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil && httpErr.Response.StatusCode >= 500 {
		return fmt.Errorf("%w: %w", ErrSyncRefused, err)
	} else if err != nil {
		return fmt.Errorf("failed to sync the bot's device: %w", err)
	}
	return nil
}

// syncLoop runs the device's /sync until ctx ends, starting again after anything but a revoked token. The homeserver
// holds to-device messages until a sync acknowledges them (its next batch token, kept in the crypto store), so what
// arrived while lmbridge was down is delivered on the first sync after the restart.
func (h *Helper) syncLoop(ctx context.Context) {
	log := zerolog.Ctx(ctx)
	for {
		err := h.client.SyncWithContext(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, mautrix.MUnknownToken) {
			log.Error().Err(err).Msg("The bot's device was logged out; encrypted rooms stop working until a restart")
			return
		}
		log.Warn().Err(err).Msg("The bot device's sync stopped, starting it again")
		select {
		case <-ctx.Done():
			return
		case <-time.After(syncRetry):
		}
	}
}

// toDeviceSyncer hands the device's to-device messages, device list changes and one-time key counts to the Olm
// machine. Room timelines come through the appservice, so the filter leaves them out.
type toDeviceSyncer struct {
	mach *crypto.OlmMachine
	log  zerolog.Logger
	// onToDevice is called after a response with to-device messages was handled.
	onToDevice func()
}

var _ mautrix.Syncer = (*toDeviceSyncer)(nil)

func (s *toDeviceSyncer) ProcessResponse(ctx context.Context, resp *mautrix.RespSync, since string) error {
	s.mach.ProcessSyncResponse(ctx, resp, since)
	if len(resp.ToDevice.Events) > 0 && s.onToDevice != nil {
		s.onToDevice()
	}
	return nil
}

func (s *toDeviceSyncer) OnFailedSync(_ *mautrix.RespSync, err error) (time.Duration, error) {
	if errors.Is(err, mautrix.MUnknownToken) {
		return 0, err
	}
	s.log.Warn().Err(err).Msg("The bot device's sync failed, retrying")
	return syncRetry, nil
}

func (s *toDeviceSyncer) GetFilterJSON(id.UserID) *mautrix.Filter {
	none := &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}}
	return &mautrix.Filter{
		Presence:    none,
		AccountData: none,
		Room: &mautrix.RoomFilter{
			Ephemeral:   none,
			AccountData: none,
			State:       none,
			Timeline:    none,
		},
	}
}
