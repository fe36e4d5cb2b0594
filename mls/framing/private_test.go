package framing

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/secrettree"
	"github.com/lmbridge/lmbridge/mls/wire"
)

func TestPadding(t *testing.T) {
	m := &wire.PrivateMessage{GroupID: []byte("g"), ContentType: wire.ContentApplication}
	// application_data<V> = "hi", signature<V> = 2 bytes, then padding.
	pt := []byte{2, 'h', 'i', 2, 9, 9, 0, 0, 0}
	a, err := parseContent(m, 3, pt)
	if err != nil || string(a.Content.ApplicationData) != "hi" || a.Content.Sender.LeafIndex != 3 {
		t.Fatalf("zero padding: %v", err)
	}
	pt[7] = 1
	if _, err := parseContent(m, 3, pt); !errors.Is(err, ErrInvalidPadding) {
		t.Fatalf("non-zero padding: %v", err)
	}
	if _, err := parseContent(m, 3, []byte{5, 'h'}); !errors.Is(err, codec.ErrShort) {
		t.Fatalf("truncated content: %v", err)
	}
}

// testGroup is a two-member epoch's keys for protect/unprotect tests.
type testGroup struct {
	s                *ciphersuite.Suite
	encryptionSecret []byte
	senderDataSecret []byte
	sigPriv, sigPub  []byte
	gc               []byte
}

func newTestGroup(t testing.TB, id ciphersuite.ID) *testGroup {
	s, err := ciphersuite.Lookup(id)
	if err != nil {
		t.Fatal(err)
	}
	priv, pub, err := s.GenerateSignatureKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	gc := codec.Marshal(&wire.GroupContext{Version: wire.MLS10, CipherSuite: id, GroupID: []byte("group"), Epoch: 7,
		TreeHash: make([]byte, s.HashSize()), ConfirmedTranscriptHash: make([]byte, s.HashSize())})
	return &testGroup{s: s, encryptionSecret: bytes.Repeat([]byte{1}, s.HashSize()),
		senderDataSecret: bytes.Repeat([]byte{2}, s.HashSize()), sigPriv: priv, sigPub: pub, gc: gc}
}

func (g *testGroup) appContent(msg []byte) *AuthenticatedContent {
	return &AuthenticatedContent{WireFormat: wire.WireFormatPrivateMessage, Content: wire.FramedContent{
		GroupID: []byte("group"), Epoch: 7, Sender: wire.Sender{Type: wire.SenderMember, LeafIndex: 1},
		ContentType: wire.ContentApplication, ApplicationData: msg}}
}

func TestPrivateTamper(t *testing.T) {
	g := newTestGroup(t, 1)
	send := secrettree.New(g.s, g.encryptionSecret, 2, secrettree.Config{})
	a := g.appContent([]byte("hello"))
	if err := a.Sign(g.s, g.sigPriv, g.gc); err != nil {
		t.Fatal(err)
	}
	pm, err := a.Encrypt(g.s, send, g.senderDataSecret, 0)
	if err != nil {
		t.Fatal(err)
	}
	bad := *pm
	bad.Ciphertext = append([]byte(nil), pm.Ciphertext...)
	bad.Ciphertext[len(bad.Ciphertext)-1] ^= 1
	recv := secrettree.New(g.s, g.encryptionSecret, 2, secrettree.Config{})
	if _, err := Decrypt(g.s, &bad, recv, g.senderDataSecret); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("tampered: %v", err)
	}
	bad = *pm
	bad.Epoch++
	if _, err := Decrypt(g.s, &bad, recv, g.senderDataSecret); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("other epoch in AAD: %v", err)
	}
	// A PrivateMessage comes only from a member.
	a.Content.Sender = wire.Sender{Type: wire.SenderExternal}
	if _, err := a.Encrypt(g.s, send, g.senderDataSecret, 0); !errors.Is(err, ErrInvalidSender) {
		t.Fatalf("external sender: %v", err)
	}
}

func BenchmarkProtectApplication(b *testing.B) {
	for _, id := range []ciphersuite.ID{1, 3} {
		g := newTestGroup(b, id)
		msg := bytes.Repeat([]byte("m"), 256)
		b.Run(suiteName(id), func(b *testing.B) {
			send := secrettree.New(g.s, g.encryptionSecret, 2, secrettree.Config{})
			b.ReportAllocs()
			for b.Loop() {
				a := g.appContent(msg)
				if err := a.Sign(g.s, g.sigPriv, g.gc); err != nil {
					b.Fatal(err)
				}
				pm, err := a.Encrypt(g.s, send, g.senderDataSecret, 0)
				if err != nil {
					b.Fatal(err)
				}
				_ = codec.Marshal(&wire.MLSMessage{PrivateMessage: pm})
			}
		})
	}
}

func BenchmarkUnprotectApplication(b *testing.B) {
	for _, id := range []ciphersuite.ID{1, 3} {
		g := newTestGroup(b, id)
		msg := bytes.Repeat([]byte("m"), 256)
		b.Run(suiteName(id), func(b *testing.B) {
			// Encrypt b.N messages up front; decrypting each takes its key.
			send := secrettree.New(g.s, g.encryptionSecret, 2, secrettree.Config{})
			var msgs [][]byte
			for range b.N {
				a := g.appContent(msg)
				if err := a.Sign(g.s, g.sigPriv, g.gc); err != nil {
					b.Fatal(err)
				}
				pm, err := a.Encrypt(g.s, send, g.senderDataSecret, 0)
				if err != nil {
					b.Fatal(err)
				}
				msgs = append(msgs, codec.Marshal(&wire.MLSMessage{PrivateMessage: pm}))
			}
			recv := secrettree.New(g.s, g.encryptionSecret, 2, secrettree.Config{})
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				var m wire.MLSMessage
				if err := codec.Unmarshal(msgs[i], &m); err != nil {
					b.Fatal(err)
				}
				a, err := Decrypt(g.s, m.PrivateMessage, recv, g.senderDataSecret)
				if err != nil {
					b.Fatal(err)
				}
				if err := a.Verify(g.s, g.sigPub, g.gc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func suiteName(id ciphersuite.ID) string { return fmt.Sprintf("suite%d", id) }

func FuzzAuthenticatedContent(f *testing.F) {
	g := newTestGroup(f, 1)
	a := g.appContent([]byte("seed"))
	_ = a.Sign(g.s, g.sigPriv, g.gc)
	f.Add(codec.Marshal(a))
	f.Fuzz(func(t *testing.T, in []byte) {
		var a AuthenticatedContent
		if err := codec.Unmarshal(in, &a); err != nil {
			return
		}
		if out := codec.Marshal(&a); !bytes.Equal(out, in) {
			t.Fatalf("re-encoding %x gave %x", in, out)
		}
	})
}

// FuzzDecrypt feeds arbitrary PrivateMessage bytes to a member: decoding
// and decryption must fail cleanly, never panic.
func FuzzDecrypt(f *testing.F) {
	g := newTestGroup(f, 1)
	send := secrettree.New(g.s, g.encryptionSecret, 2, secrettree.Config{})
	a := g.appContent([]byte("seed"))
	_ = a.Sign(g.s, g.sigPriv, g.gc)
	pm, _ := a.Encrypt(g.s, send, g.senderDataSecret, 4)
	f.Add(codec.Marshal(pm))
	f.Fuzz(func(t *testing.T, in []byte) {
		var m wire.PrivateMessage
		if err := codec.Unmarshal(in, &m); err != nil {
			return
		}
		recv := secrettree.New(g.s, g.encryptionSecret, 2, secrettree.Config{MaxForward: 16})
		if a, err := Decrypt(g.s, &m, recv, g.senderDataSecret); err == nil {
			_ = a.Verify(g.s, g.sigPub, g.gc)
		}
	})
}

// A message that fails to decrypt does not use up its generation's key.
func TestFailedDecryptKeepsKey(t *testing.T) {
	g := newTestGroup(t, 1)
	send := secrettree.New(g.s, g.encryptionSecret, 2, secrettree.Config{})
	a := g.appContent([]byte("hello"))
	_ = a.Sign(g.s, g.sigPriv, g.gc)
	pm, err := a.Encrypt(g.s, send, g.senderDataSecret, 0)
	if err != nil {
		t.Fatal(err)
	}
	recv := secrettree.New(g.s, g.encryptionSecret, 2, secrettree.Config{})
	bad := *pm
	bad.AuthenticatedData = []byte("forged")
	if _, err := Decrypt(g.s, &bad, recv, g.senderDataSecret); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("forged: %v", err)
	}
	if _, err := Decrypt(g.s, pm, recv, g.senderDataSecret); err != nil {
		t.Fatalf("genuine message after a forged one: %v", err)
	}
}
