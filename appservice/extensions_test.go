package appservice

import (
	"context"
	"errors"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
)

func TestHandleExtensions(t *testing.T) {
	as := &AppService{}
	var got []*Extensions
	as.SetExtensionHandler(func(_ context.Context, ext *Extensions) { got = append(got, ext) })
	ctx := context.Background()

	// The unstable names, as Synapse sends them.
	body := `{"events":[],
		"de.sorunome.msc2409.to_device":[{"type":"m.room_key_request","sender":"@a:hs","to_user_id":"@bot:hs",
			"to_device_id":"DEV","content":{"action":"request_cancellation","request_id":"r","requesting_device_id":"X"}}],
		"org.matrix.msc3202.device_lists":{"changed":["@a:hs"]},
		"org.matrix.msc3202.device_one_time_keys_count":{"@bot:hs":{"DEV":{"signed_curve25519":3}}}}`
	if err := as.handleExtensions(ctx, []byte(body)); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("handler called %d times", len(got))
	}
	ext := got[0]
	if len(ext.ToDevice) != 1 || ext.ToDevice[0].ToDeviceID != "DEV" || ext.ToDevice[0].Type.Class != event.ToDeviceEventType {
		t.Fatalf("to-device = %+v", ext.ToDevice)
	}
	if _, ok := ext.ToDevice[0].Content.Parsed.(*event.RoomKeyRequestEventContent); !ok {
		t.Fatalf("to-device content not parsed: %T", ext.ToDevice[0].Content.Parsed)
	}
	if ext.DeviceLists == nil || len(ext.DeviceLists.Changed) != 1 || ext.OTKCounts["@bot:hs"]["DEV"].SignedCurve25519 != 3 {
		t.Fatalf("device lists %+v, otk counts %+v", ext.DeviceLists, ext.OTKCounts)
	}

	// A transaction without extensions does not call the handler.
	if err := as.handleExtensions(ctx, []byte(`{"events":[]}`)); err != nil || len(got) != 1 {
		t.Fatalf("plain transaction: err %v, calls %d", err, len(got))
	}
	// Extensions of the wrong shape refuse the transaction.
	err := as.handleExtensions(ctx, []byte(`{"events":[],"to_device":{"not":"a list"}}`))
	var respErr mautrix.RespError
	if !errors.As(err, &respErr) || respErr.ErrCode != mautrix.MBadJSON.ErrCode {
		t.Fatalf("malformed extensions: %v", err)
	}
	if err = as.handleExtensions(ctx, []byte(`{"events":[],"to_device":[null]}`)); !errors.As(err, &respErr) {
		t.Fatalf("a null to-device event: %v", err)
	}
}
