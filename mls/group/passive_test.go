package group

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/internal/vectors"
	"github.com/lmbridge/lmbridge/mls/wire"
)

type hx = vectors.Hex

type passiveCase struct {
	CipherSuite  ciphersuite.ID `json:"cipher_suite"`
	ExternalPSKs []struct {
		PSKID hx `json:"psk_id"`
		PSK   hx `json:"psk"`
	} `json:"external_psks"`
	KeyPackage                hx `json:"key_package"`
	SignaturePriv             hx `json:"signature_priv"`
	EncryptionPriv            hx `json:"encryption_priv"`
	InitPriv                  hx `json:"init_priv"`
	Welcome                   hx `json:"welcome"`
	RatchetTree               hx `json:"ratchet_tree"`
	InitialEpochAuthenticator hx `json:"initial_epoch_authenticator"`
	Epochs                    []struct {
		Proposals          []hx `json:"proposals"`
		Commit             hx   `json:"commit"`
		EpochAuthenticator hx   `json:"epoch_authenticator"`
	} `json:"epochs"`
}

type pskMap map[string][]byte

func (m pskMap) ExternalPSK(id []byte) ([]byte, bool) {
	s, ok := m[string(id)]
	return s, ok
}

func runPassive(t *testing.T, c *passiveCase) {
	s, err := ciphersuite.Lookup(c.CipherSuite)
	if err != nil {
		t.Fatal(err)
	}
	var km wire.MLSMessage
	if err := codec.Unmarshal(c.KeyPackage, &km); err != nil || km.KeyPackage == nil {
		t.Fatalf("key package: %v", err)
	}
	kp := *km.KeyPackage
	var wm wire.MLSMessage
	if err := codec.Unmarshal(c.Welcome, &wm); err != nil || wm.Welcome == nil {
		t.Fatalf("welcome: %v", err)
	}
	psks := pskMap{}
	for _, p := range c.ExternalPSKs {
		psks[string(p.PSKID)] = p.PSK
	}
	var opts JoinOptions
	if c.RatchetTree != nil {
		if err := codec.Unmarshal(c.RatchetTree, &opts.RatchetTree); err != nil {
			t.Fatalf("ratchet tree: %v", err)
		}
	}
	cfg := Config{PSKs: psks}
	g, err := Join(cfg, wm.Welcome, &kp, &KeyPackagePrivate{InitPriv: c.InitPriv, EncryptionPriv: c.EncryptionPriv, SigPriv: c.SignaturePriv}, opts)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	_ = s
	if !bytes.Equal(g.EpochAuthenticator(), c.InitialEpochAuthenticator) {
		t.Fatalf("initial epoch authenticator %x, want %x", g.EpochAuthenticator(), c.InitialEpochAuthenticator)
	}
	for i, ep := range c.Epochs {
		for j, p := range ep.Proposals {
			var m wire.MLSMessage
			if err := codec.Unmarshal(p, &m); err != nil {
				t.Fatalf("epoch %d proposal %d: %v", i, j, err)
			}
			if _, err := g.Process(&m); err != nil {
				t.Fatalf("epoch %d proposal %d: %v", i, j, err)
			}
		}
		var m wire.MLSMessage
		if err := codec.Unmarshal(ep.Commit, &m); err != nil {
			t.Fatalf("epoch %d commit: %v", i, err)
		}
		if _, err := g.Process(&m); err != nil {
			t.Fatalf("epoch %d commit: %v", i, err)
		}
		if !bytes.Equal(g.EpochAuthenticator(), ep.EpochAuthenticator) {
			t.Fatalf("epoch %d: epoch authenticator %x, want %x", i, g.EpochAuthenticator(), ep.EpochAuthenticator)
		}
	}
}

func testPassive(t *testing.T, file string) {
	var cases []passiveCase
	if err := vectors.Load(file, &cases); err != nil {
		t.Fatal(err)
	}
	passed, epochs := 0, 0
	suites := map[ciphersuite.ID]int{}
	for i, c := range cases {
		if t.Run(fmt.Sprintf("case%d/suite%d", i, c.CipherSuite), func(t *testing.T) { runPassive(t, &c) }) {
			passed++
			suites[c.CipherSuite]++
			epochs += len(c.Epochs)
		}
	}
	t.Logf("%s: %d/%d cases passed (%d epochs); passed per suite: %v", file, passed, len(cases), epochs, suites)
}

func TestPassiveClientWelcome(t *testing.T) { testPassive(t, "passive-client-welcome.json") }
func TestPassiveClientHandlingCommit(t *testing.T) {
	testPassive(t, "passive-client-handling-commit.json")
}
func TestPassiveClientRandom(t *testing.T) { testPassive(t, "passive-client-random.json") }
