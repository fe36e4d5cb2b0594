package secrettree

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/internal/vectors"
	"github.com/lmbridge/lmbridge/mls/treemath"
)

type hx = vectors.Hex

type secretTreeCase struct {
	CipherSuite      ciphersuite.ID `json:"cipher_suite"`
	EncryptionSecret hx             `json:"encryption_secret"`
	SenderData       struct {
		SenderDataSecret hx `json:"sender_data_secret"`
		Ciphertext       hx
		Key              hx
		Nonce            hx
	} `json:"sender_data"`
	Leaves [][]struct {
		Generation       uint32
		ApplicationKey   hx `json:"application_key"`
		ApplicationNonce hx `json:"application_nonce"`
		HandshakeKey     hx `json:"handshake_key"`
		HandshakeNonce   hx `json:"handshake_nonce"`
	}
}

func TestSecretTreeVectors(t *testing.T) {
	var cases []secretTreeCase
	if err := vectors.Load("secret-tree.json", &cases); err != nil {
		t.Fatal(err)
	}
	passed := 0
	suites := map[ciphersuite.ID]bool{}
	for i, c := range cases {
		suites[c.CipherSuite] = true
		name := fmt.Sprintf("case%d/suite%d/leaves%d", i, c.CipherSuite, len(c.Leaves))
		if t.Run(name, func(t *testing.T) { checkSecretTree(t, c) }) {
			passed++
		}
	}
	t.Logf("secret-tree.json: %d/%d cases passed (%d suites)", passed, len(cases), len(suites))
	if len(suites) != 7 {
		t.Errorf("vectors cover %d suites, want 7", len(suites))
	}
}

func checkSecretTree(t *testing.T, c secretTreeCase) {
	s, err := ciphersuite.Lookup(c.CipherSuite)
	if err != nil {
		t.Fatal(err)
	}
	sd := SenderDataKeyNonce(s, c.SenderData.SenderDataSecret, c.SenderData.Ciphertext)
	if !bytes.Equal(sd.Key, c.SenderData.Key) || !bytes.Equal(sd.Nonce, c.SenderData.Nonce) {
		t.Errorf("sender data key/nonce = %x/%x, want %x/%x", sd.Key, sd.Nonce, c.SenderData.Key, c.SenderData.Nonce)
	}
	tree := New(s, c.EncryptionSecret, uint32(len(c.Leaves)), Config{})
	for leaf, gens := range c.Leaves {
		for _, g := range gens {
			l := treemath.LeafIndex(leaf)
			hs, err := tree.Get(l, Handshake, g.Generation)
			if err != nil {
				t.Fatalf("leaf %d gen %d handshake: %v", leaf, g.Generation, err)
			}
			app, err := tree.Get(l, Application, g.Generation)
			if err != nil {
				t.Fatalf("leaf %d gen %d application: %v", leaf, g.Generation, err)
			}
			if !bytes.Equal(hs.Key, g.HandshakeKey) || !bytes.Equal(hs.Nonce, g.HandshakeNonce) {
				t.Errorf("leaf %d gen %d: handshake key/nonce mismatch", leaf, g.Generation)
			}
			if !bytes.Equal(app.Key, g.ApplicationKey) || !bytes.Equal(app.Nonce, g.ApplicationNonce) {
				t.Errorf("leaf %d gen %d: application key/nonce mismatch", leaf, g.Generation)
			}
			// A generation decrypts once.
			if _, err := tree.Get(l, Application, g.Generation); !errors.Is(err, ErrGenerationConsumed) {
				t.Errorf("leaf %d gen %d: second Get: %v", leaf, g.Generation, err)
			}
		}
	}
}

func TestOutOfOrderWindow(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	secret := bytes.Repeat([]byte{7}, 32)
	sender := New(s, secret, 4, Config{})
	var sent []KeyNonce
	for i := range 10 {
		g, kn, err := sender.Next(2, Application)
		if err != nil || g != uint32(i) {
			t.Fatalf("Next: %d, %v", g, err)
		}
		sent = append(sent, kn)
	}
	recv := New(s, secret, 4, Config{MaxForward: 5, MaxSkipped: 3})
	// Generation 9 is 9 past the next expected (0): beyond MaxForward.
	if _, err := recv.Get(2, Application, 9); !errors.Is(err, ErrTooFarAhead) {
		t.Fatalf("far ahead: %v", err)
	}
	// Receive 5 first; 0..4 are skipped and only the newest 3 (2, 3, 4) kept.
	kn, err := recv.Get(2, Application, 5)
	if err != nil || !bytes.Equal(kn.Key, sent[5].Key) {
		t.Fatalf("gen 5: %v", err)
	}
	for _, g := range []uint32{4, 2, 3} {
		kn, err := recv.Get(2, Application, g)
		if err != nil || !bytes.Equal(kn.Key, sent[g].Key) || !bytes.Equal(kn.Nonce, sent[g].Nonce) {
			t.Fatalf("gen %d: %v", g, err)
		}
	}
	for _, g := range []uint32{0, 1, 2, 5} {
		if _, err := recv.Get(2, Application, g); !errors.Is(err, ErrGenerationConsumed) {
			t.Fatalf("gen %d again: %v", g, err)
		}
	}
	if _, err := recv.Get(4, Application, 0); !errors.Is(err, ErrLeafOutOfRange) {
		t.Fatalf("leaf out of range: %v", err)
	}
	// The handshake ratchet of the same leaf is independent.
	if _, err := recv.Get(2, Handshake, 0); err != nil {
		t.Fatal(err)
	}
}

func TestDeletion(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	tree := New(s, bytes.Repeat([]byte{1}, 32), 8, Config{})
	if _, err := tree.Get(5, Application, 0); err != nil {
		t.Fatal(err)
	}
	// The root and the parents on leaf 5's path are gone; their other
	// children remain.
	for _, p := range treemath.DirectPath(treemath.LeafIndex(5).Node(), 8) {
		if tree.nodes[p] != nil {
			t.Errorf("node %d still holds its secret", p)
		}
	}
	for _, c := range treemath.Copath(treemath.LeafIndex(5).Node(), 8) {
		if tree.nodes[c] == nil {
			t.Errorf("copath node %d lost its secret", c)
		}
	}
	if tree.nodes[treemath.LeafIndex(5).Node()] != nil {
		t.Error("leaf secret kept after its ratchets were derived")
	}
}

func TestSaveLoad(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	secret := bytes.Repeat([]byte{9}, 32)
	a := New(s, secret, 8, Config{})
	ref := New(s, secret, 8, Config{})
	if _, err := a.Get(3, Application, 4); err != nil { // keeps 0..3 as skipped
		t.Fatal(err)
	}
	if _, err := a.Get(6, Handshake, 0); err != nil {
		t.Fatal(err)
	}
	b, err := Decode(s, codec.Marshal(a), Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		leaf treemath.LeafIndex
		typ  RatchetType
		gen  uint32
	}{{3, Application, 2}, {3, Application, 5}, {6, Handshake, 1}, {0, Application, 0}, {7, Handshake, 3}} {
		want, _ := ref.Get(q.leaf, q.typ, q.gen)
		got, err := b.Get(q.leaf, q.typ, q.gen)
		if err != nil || !bytes.Equal(got.Key, want.Key) || !bytes.Equal(got.Nonce, want.Nonce) {
			t.Fatalf("%+v after reload: %v", q, err)
		}
	}
	if _, err := b.Get(3, Application, 4); !errors.Is(err, ErrGenerationConsumed) {
		t.Fatalf("consumed generation came back after reload: %v", err)
	}
	if _, err := Decode(s, []byte{0, 0, 0, 2, 0}, Config{}); err == nil {
		t.Fatal("truncated state decoded")
	}
}

func FuzzDecode(f *testing.F) {
	s, _ := ciphersuite.Lookup(1)
	tr := New(s, bytes.Repeat([]byte{9}, 32), 4, Config{})
	_, _ = tr.Get(1, Application, 2)
	f.Add(codec.Marshal(tr))
	f.Fuzz(func(t *testing.T, in []byte) {
		tr, err := Decode(s, in, Config{MaxForward: 8})
		if err != nil {
			return
		}
		if !bytes.Equal(codec.Marshal(tr), in) {
			t.Fatalf("state %x re-encodes differently", in)
		}
		_, _ = tr.Get(0, Handshake, 1)
	})
}

func TestPeek(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	secret := bytes.Repeat([]byte{4}, 32)
	a := New(s, secret, 2, Config{})
	ref := New(s, secret, 2, Config{})
	for _, g := range []uint32{3, 3, 0, 5} {
		kn, err := a.Peek(1, Application, g)
		want, _ := New(s, secret, 2, Config{}).Get(1, Application, g)
		if err != nil || !bytes.Equal(kn.Key, want.Key) || !bytes.Equal(kn.Nonce, want.Nonce) {
			t.Fatalf("peek %d: %v", g, err)
		}
	}
	// Peeking consumed nothing: every generation is still there.
	for g := uint32(0); g < 6; g++ {
		got, err := a.Get(1, Application, g)
		want, _ := ref.Get(1, Application, g)
		if err != nil || !bytes.Equal(got.Key, want.Key) {
			t.Fatalf("get %d after peeks: %v", g, err)
		}
	}
	if err := a.Delete(1, Application, 2); !errors.Is(err, ErrGenerationConsumed) {
		t.Fatalf("delete of a consumed generation: %v", err)
	}
	if _, err := a.Peek(1, Application, 2); !errors.Is(err, ErrGenerationConsumed) {
		t.Fatalf("peek of a consumed generation: %v", err)
	}
}

func TestWipe(t *testing.T) {
	s, _ := ciphersuite.Lookup(1)
	tr := New(s, bytes.Repeat([]byte{4}, 32), 4, Config{})
	kn, _ := tr.Get(1, Application, 3)
	_ = kn
	tr.Wipe()
	if len(tr.nodes) != 0 || len(tr.leaves) != 0 {
		t.Fatal("secrets left after Wipe")
	}
	// A wiped tree derives nothing.
	for _, l := range []treemath.LeafIndex{1, 2} {
		if _, err := tr.Get(l, Application, 4); !errors.Is(err, ErrGenerationConsumed) {
			t.Fatalf("leaf %d after Wipe: %v", l, err)
		}
	}
}
