package pdu

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"
)

// completedPDU is an LPDU of p signed and completed by hub, with the keys to verify both signatures.
func completedPDU(t *testing.T) (*PDU, StaticKeys) {
	t.Helper()
	partKey, hubKey := testKey("p"), testKey("hub")
	p := &PDU{RoomID: "!r:hub", Type: "m.room.message", Sender: "@a:p", HubServer: "hub", Content: json.RawMessage(`{"body":"a"}`)}
	if err := p.FillLPDUHash(); err != nil {
		t.Fatal(err)
	}
	if err := p.SignLPDU("p", "ed25519:1", partKey); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Complete([]string{"$c"}, "$prev", "hub", "ed25519:1", hubKey); err != nil {
		t.Fatal(err)
	}
	return p, StaticKeys{
		"p":   {"ed25519:1": partKey.Public().(ed25519.PublicKey)},
		"hub": {"ed25519:1": hubKey.Public().(ed25519.PublicKey)},
	}
}

func TestVerifyWithKnownSenderSignatureStillChecksTheHub(t *testing.T) {
	ctx := context.Background()
	known := VerifyOptions{SenderSignatureKnown: true}
	p, keys := completedPDU(t)
	if _, err := VerifyReceivedWith(ctx, keys, p, known); err != nil {
		t.Fatalf("a good PDU failed: %v", err)
	}

	// A broken sender signature is what the option skips: the plain check must still catch it.
	p, keys = completedPDU(t)
	p.Signatures["p"]["ed25519:1"] = p.Signatures["hub"]["ed25519:1"]
	if _, err := VerifyReceived(ctx, keys, p); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("bad sender signature without the option: got %v, want ErrBadSignature", err)
	}
	if _, err := VerifyReceivedWith(ctx, keys, p, known); err != nil {
		t.Fatalf("the option should skip only the sender's signature, got %v", err)
	}

	// The hub's signature is checked either way.
	p, keys = completedPDU(t)
	p.Signatures["hub"]["ed25519:1"] = p.Signatures["p"]["ed25519:1"]
	if _, err := VerifyReceivedWith(ctx, keys, p, known); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("bad hub signature with the option: got %v, want ErrBadSignature", err)
	}
	delete(p.Signatures, "hub")
	if _, err := VerifyReceivedWith(ctx, keys, p, known); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("missing hub signature with the option: got %v, want ErrBadSignature", err)
	}

	// Content hashes are checked either way.
	p, keys = completedPDU(t)
	p.Content = json.RawMessage(`{"body":"b"}`)
	res, err := VerifyReceivedWith(ctx, keys, p, known)
	if err != nil || !res.Redacted {
		t.Fatalf("changed content with the option: got %v %+v, want the redacted copy", err, res)
	}

	// An LPDU has only the sender's signature: the option does not apply to it.
	lpdu := &PDU{RoomID: "!r:hub", Type: "m.room.message", Sender: "@a:p", HubServer: "hub", Content: json.RawMessage(`{}`)}
	if err := lpdu.FillLPDUHash(); err != nil {
		t.Fatal(err)
	}
	lpdu.Signatures = map[string]map[string]string{"p": {"ed25519:1": p.Signatures["hub"]["ed25519:1"]}}
	if _, err := VerifyReceivedWith(ctx, keys, lpdu, known); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("bad LPDU signature with the option: got %v, want ErrBadSignature", err)
	}
}
