package linearize

import (
	"context"
	"crypto/ed25519"
	"errors"
	"testing"

	mautrixfed "maunium.net/go/mautrix/federation"
)

// keyLookupFunc is a KeyLookup from a function.
type keyLookupFunc func(ctx context.Context, serverName, keyID string) (ed25519.PublicKey, error)

func (f keyLookupFunc) VerifyKey(ctx context.Context, serverName, keyID string) (ed25519.PublicKey, error) {
	return f(ctx, serverName, keyID)
}

func TestOwnKeyIsAnsweredWithoutAskingOurselves(t *testing.T) {
	key := mautrixfed.GenerateSigningKey()
	errAsked := errors.New("asked the ring")
	var asked []string
	lookup := newOwnKeyFirst("us.example", key, keyLookupFunc(func(_ context.Context, serverName, keyID string) (ed25519.PublicKey, error) {
		asked = append(asked, serverName+" "+keyID)
		return nil, errAsked
	}))
	ctx := context.Background()
	got, err := lookup.VerifyKey(ctx, "us.example", string(key.ID))
	if err != nil || !got.Equal(key.Priv.Public()) {
		t.Fatalf("our own key: %v, %v", got, err)
	}
	if _, err = lookup.VerifyKey(ctx, "us.example", "ed25519:old"); !errors.Is(err, errAsked) {
		t.Fatalf("another key ID of ours: %v, want the ring asked", err)
	}
	if _, err = lookup.VerifyKey(ctx, "them.example", string(key.ID)); !errors.Is(err, errAsked) {
		t.Fatalf("another server: %v, want the ring asked", err)
	}
	if len(asked) != 2 {
		t.Fatalf("the ring was asked %v, want the two lookups that are not our current key", asked)
	}
}
