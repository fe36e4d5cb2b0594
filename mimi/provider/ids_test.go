package provider

import (
	"errors"
	"testing"

	"github.com/lmbridge/lmbridge/mls/wire"
)

// The hub signs as the room's external sender with its provider URI; members' leaves name clients. Anything else is
// refused, so that a group with a stranger's credential cannot be made or joined.
func TestCredentialAuth(t *testing.T) {
	for identity, ok := range map[string]bool{
		ProviderURI("a.example"):                 true,
		ClientURI("a.example", "alice", "phone"): true,
		UserURI("a.example", "alice"):            false,
		RoomURI("a.example", "team"):             false,
		"mimi://":                                false,
		"mimi://a.example/":                      false,
		"https://a.example":                      false,
	} {
		cred := wire.BasicCredential([]byte(identity))
		err := credentialAuth{}.ValidateCredential(&cred, nil)
		if ok && err != nil {
			t.Errorf("%q refused: %v", identity, err)
		} else if !ok && !errors.Is(err, ErrBadURI) {
			t.Errorf("%q: got %v, want ErrBadURI", identity, err)
		}
	}
}
