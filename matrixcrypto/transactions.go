//go:build goolm

package matrixcrypto

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/appservice"
)

// handleExtensions takes the bot device's encryption traffic from an appservice transaction, in appservice mode
// (config.Encryption.Appservice): the to-device messages addressed to the device, the device list changes and the
// device's one-time key count. The homeserver sends those of every device of the appservice's users; only the
// bot's device has any.
func (h *Helper) handleExtensions(ctx context.Context, ext *appservice.Extensions) {
	log := zerolog.Ctx(ctx)
	for _, evt := range ext.ToDevice {
		if evt.ToUserID != h.client.UserID || (evt.ToDeviceID != h.client.DeviceID && evt.ToDeviceID != "*") {
			continue
		}
		log.Debug().Str("type", evt.Type.Type).Stringer("sender", evt.Sender).Msg("To-device message from a transaction")
		h.mach.HandleToDeviceEvent(ctx, evt)
	}
	if len(ext.ToDevice) > 0 {
		h.kickLate()
	}
	if ext.DeviceLists != nil {
		h.mach.HandleDeviceLists(ctx, ext.DeviceLists, "")
	}
	if count, ok := ext.OTKCounts[h.client.UserID][h.client.DeviceID]; ok {
		count.UserID, count.DeviceID = h.client.UserID, h.client.DeviceID
		h.mach.HandleOTKCounts(ctx, &count)
	}
}
