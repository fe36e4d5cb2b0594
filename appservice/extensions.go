package appservice

import (
	"context"
	"encoding/json"

	"maunium.net/go/mautrix"
	mautrixappservice "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
)

// Extensions are the parts of a transaction for the devices of the appservice's users rather than for rooms:
// to-device messages (MSC2409) and device list changes and one-time key counts (MSC3202). The homeserver sends them
// only to a registration that asks (config.Encryption.Appservice), and the stable and unstable names are both read.
type Extensions struct {
	ToDevice    []*event.Event
	DeviceLists *mautrix.DeviceLists
	OTKCounts   mautrixappservice.OTKCountMap
}

// ExtensionHandler takes a transaction's extensions before the transaction is answered, so that an answered
// transaction's room keys are in the database.
type ExtensionHandler func(ctx context.Context, ext *Extensions)

// SetExtensionHandler installs the handler of transaction extensions (the bot's device, see matrixcrypto). Call it
// before Start.
func (as *AppService) SetExtensionHandler(h ExtensionHandler) {
	as.extensions.Store(&h)
}

// handleExtensions hands a validated transaction body's extensions to the handler, if there is one and they are
// there. An extension of the wrong shape is an error: the transaction is refused, and the homeserver hears why.
func (as *AppService) handleExtensions(ctx context.Context, body []byte) error {
	h := as.extensions.Load()
	if h == nil {
		return nil
	}
	var txn mautrixappservice.Transaction
	if err := json.Unmarshal(body, &txn); err != nil {
		return badJSON("Transaction extensions are malformed: %s", err.Error())
	}
	ext := &Extensions{ToDevice: txn.ToDeviceEvents, DeviceLists: txn.DeviceLists, OTKCounts: txn.DeviceOTKCount}
	if ext.ToDevice == nil {
		ext.ToDevice = txn.MSC2409ToDeviceEvents
	}
	if ext.DeviceLists == nil {
		ext.DeviceLists = txn.MSC3202DeviceLists
	}
	if ext.OTKCounts == nil {
		ext.OTKCounts = txn.MSC3202DeviceOTKCount
	}
	if len(ext.ToDevice) == 0 && ext.DeviceLists == nil && len(ext.OTKCounts) == 0 {
		return nil
	}
	for i, evt := range ext.ToDevice {
		if evt == nil {
			return badJSON("to_device[%d] is not an event", i)
		}
		evt.Type.Class = event.ToDeviceEventType
		evt.Mautrix.EventSource = event.SourceToDevice
		// Content of a type mautrix does not know stays raw; the handler skips what it does not use.
		_ = evt.Content.ParseRaw(evt.Type)
	}
	(*h)(ctx, ext)
	return nil
}
