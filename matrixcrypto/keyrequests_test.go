//go:build goolm

package matrixcrypto

import (
	"testing"

	"maunium.net/go/mautrix/crypto/goolm/session"
)

// TestSessionKeyFromFirstIndex: the room key made for a key request from the kept outbound session and the inbound
// copy decrypts the session's first message, after the outbound session moved on; an outbound session that is not
// the inbound one's is refused.
func TestSessionKeyFromFirstIndex(t *testing.T) {
	out, err := session.NewMegolmOutboundSession()
	if err != nil {
		t.Fatal(err)
	}
	own, err := session.NewMegolmInboundSession([]byte(out.Key()))
	if err != nil {
		t.Fatal(err)
	}
	first, err := out.Encrypt([]byte("first"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err = out.Encrypt([]byte("second")); err != nil {
		t.Fatal(err)
	}
	key, err := sessionKeyFromFirstIndex(own, out)
	if err != nil {
		t.Fatal(err)
	}
	requester, err := session.NewMegolmInboundSession(key)
	if err != nil {
		t.Fatalf("the made room key does not import: %v", err)
	}
	plain, index, err := requester.Decrypt(first)
	if err != nil || string(plain) != "first" || index != 0 {
		t.Fatalf("Decrypt(first) = %q, %d, %v", plain, index, err)
	}
	other, err := session.NewMegolmOutboundSession()
	if err != nil {
		t.Fatal(err)
	}
	if _, err = sessionKeyFromFirstIndex(own, other); err == nil {
		t.Fatal("a room key was signed with another session's key")
	}
}
