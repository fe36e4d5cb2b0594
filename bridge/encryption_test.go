package bridge

import (
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/config"
)

// TestLinkEncryptedRoomWhenAllowed: with encryption.allow the refusal of TestLinkRefusesEncryptedRoom goes, since the
// crypto layer hands the bridge the room's events decrypted.
func TestLinkEncryptedRoomWhenAllowed(t *testing.T) {
	ctx := testContext(t)
	tb := newTestBridge(t, nil, config.Bridge{})
	tb.SetEncryption(config.Encryption{Allow: true})
	tb.seedDAGRoom()
	tb.mx.setState(mkEvent(dagRoom, "$enc", alice, event.StateEncryption, sk(""), map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}))
	link, err := tb.LinkAsHub(ctx, dagRoom, string(alice))
	if err != nil {
		t.Fatalf("LinkAsHub(encrypted, allowed) = %v", err)
	}
	if l, _ := tb.DB().GetLinkByDAGRoom(ctx, dagRoom); l == nil || l.LMRoomID != link.LMRoomID {
		t.Fatalf("the encrypted room's link = %+v", l)
	}
}

// TestLinkRequiresEncryptedRoom: with encryption.require an unencrypted room is refused, since none of its messages
// would be bridged; once encryption is on in it, it links.
func TestLinkRequiresEncryptedRoom(t *testing.T) {
	ctx := testContext(t)
	tb := newTestBridge(t, nil, config.Bridge{})
	tb.SetEncryption(config.Encryption{Allow: true, Require: true})
	tb.seedDAGRoom()
	if _, err := tb.LinkAsHub(ctx, dagRoom, string(alice)); !errors.Is(err, ErrUnencryptedRoom) {
		t.Fatalf("LinkAsHub(unencrypted, required) = %v, want ErrUnencryptedRoom", err)
	}
	if l, _ := tb.DB().GetLinkByDAGRoom(ctx, dagRoom); l != nil {
		t.Fatal("an unencrypted room was linked where encryption is required")
	}
	tb.mx.setState(mkEvent(dagRoom, "$enc", alice, event.StateEncryption, sk(""), map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}))
	if _, err := tb.LinkAsHub(ctx, dagRoom, string(alice)); err != nil {
		t.Fatalf("LinkAsHub(encrypted, required) = %v", err)
	}
}

func TestPortalEncryption(t *testing.T) {
	br := &Bridge{}
	req := &mautrix.ReqCreateRoom{}
	br.addEncryption(req)
	if len(req.InitialState) != 0 {
		t.Fatalf("encryption added without encryption.default: %+v", req.InitialState)
	}
	br.SetEncryption(config.Encryption{Allow: true, Default: true,
		Rotation: config.Rotation{EnableCustom: true, Milliseconds: 3600000, Messages: 10}})
	br.addEncryption(req)
	if len(req.InitialState) != 1 || req.InitialState[0].Type != event.StateEncryption {
		t.Fatalf("initial state = %+v", req.InitialState)
	}
	c := req.InitialState[0].Content.Parsed.(*event.EncryptionEventContent)
	if c.Algorithm != id.AlgorithmMegolmV1 || c.RotationPeriodMillis != 3600000 || c.RotationPeriodMessages != 10 {
		t.Fatalf("encryption content = %+v", c)
	}
}

// TestNotifyNotBridged: an event the crypto layer could not hand on is answered with a notice in a linked room, and
// passed over in silence in a room without a link (the bot is in many).
func TestNotifyNotBridged(t *testing.T) {
	ctx := testContext(t)
	tb := newTestBridge(t, nil, config.Bridge{})
	tb.SetEncryption(config.Encryption{Allow: true})
	tb.seedDAGRoom()
	evt := mkEvent(dagRoom, "$utd", alice, event.EventEncrypted, nil, map[string]any{"algorithm": "m.megolm.v1.aes-sha2"})
	reason := errors.New("it could not be decrypted")
	if err := tb.NotifyNotBridged(ctx, evt, reason); err != nil {
		t.Fatal(err)
	}
	if n := len(tb.mx.callsOf("message")); n != 0 {
		t.Fatalf("%d notices in a room without a link", n)
	}
	if _, err := tb.LinkAsHub(ctx, dagRoom, string(alice)); err != nil {
		t.Fatal(err)
	}
	tb.mx.reset()
	if err := tb.NotifyNotBridged(ctx, evt, reason); err != nil {
		t.Fatal(err)
	}
	calls := tb.mx.callsOf("message")
	if len(calls) != 1 || calls[0].Sender != testBot {
		t.Fatalf("notices = %+v, want one from the bot", calls)
	}
	body, _ := calls[0].Content["body"].(string)
	if !strings.Contains(body, "could not be bridged") || !strings.Contains(body, reason.Error()) {
		t.Fatalf("notice = %q", body)
	}
}
