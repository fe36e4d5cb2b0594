//go:build goolm

package matrixcrypto

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
)

// loginDevice logs the bot in with m.login.application_service, which needs no password: the appservice token
// vouches for it. The device ID of an earlier run, kept in the crypto store, is asked for again, so the bot keeps
// one device (and its Olm identity) across restarts; existing says whether there was one.
func (h *Helper) loginDevice(ctx context.Context) (client *mautrix.Client, existing bool, err error) {
	deviceID, err := h.store.FindDeviceID(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("failed to read the bot's device ID: %w", err)
	}
	existing = deviceID != ""
	// On a fresh homeserver the bot may not be registered yet, and only a registered user can log in.
	if err = h.as.Bot().EnsureRegistered(ctx); err != nil {
		return nil, existing, fmt.Errorf("failed to register the bot: %w", err)
	}
	client = h.as.NewBotDeviceClient()
	client.Log = *zerolog.Ctx(ctx)
	flows, err := client.GetLoginFlows(ctx)
	if err != nil {
		return nil, existing, fmt.Errorf("failed to read the homeserver's login flows: %w", err)
	}
	if !flows.HasFlow(mautrix.AuthTypeAppservice) {
		return nil, existing, ErrNoAppserviceLogin
	}
	resp, err := client.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypeAppservice,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: string(client.UserID)},
		DeviceID:                 deviceID,
		InitialDeviceDisplayName: h.cfg.DeviceName,
		StoreCredentials:         true,
	})
	if err != nil {
		return nil, existing, fmt.Errorf("failed to log in the bot's device: %w", err)
	}
	if existing && resp.DeviceID != deviceID {
		return nil, existing, fmt.Errorf("the homeserver gave the bot device %s instead of its device %s", resp.DeviceID, deviceID)
	}
	// The device's token, not the appservice's, so that /sync is the device's and to-device messages reach it.
	client.SetAppServiceUserID = false
	h.store.DeviceID = resp.DeviceID
	return client, existing, nil
}

// ensureKeysOnServer uploads the device's identity and one-time keys when the homeserver lacks them: on the first
// run, and when an earlier run stopped between creating the account and uploading.
func (h *Helper) ensureKeysOnServer(ctx context.Context, existing bool) error {
	if existing {
		resp, err := h.client.QueryKeys(ctx, &mautrix.ReqQueryKeys{
			DeviceKeys: mautrix.DeviceKeysRequest{h.client.UserID: {h.client.DeviceID}},
		})
		if err != nil {
			return fmt.Errorf("failed to query the bot's own device keys: %w", err)
		}
		if dev, ok := resp.DeviceKeys[h.client.UserID][h.client.DeviceID]; ok && len(dev.Keys) > 0 {
			return nil
		}
		zerolog.Ctx(ctx).Warn().Stringer("device_id", h.client.DeviceID).Msg("The bot's device has no keys on the homeserver, uploading them")
	}
	if err := h.mach.ShareKeys(ctx, -1); err != nil {
		return fmt.Errorf("failed to upload the bot's device keys: %w", err)
	}
	return nil
}
