package wire_test

import (
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/framing"
	"github.com/lmbridge/lmbridge/mls/internal/vectors"
	"github.com/lmbridge/lmbridge/mls/keyschedule"
	"github.com/lmbridge/lmbridge/mls/wire"
)

func TestWelcomeVectors(t *testing.T) {
	var cases []struct {
		CipherSuite uint16      `json:"cipher_suite"`
		InitPriv    vectors.Hex `json:"init_priv"`
		SignerPub   vectors.Hex `json:"signer_pub"`
		KeyPackage  vectors.Hex `json:"key_package"`
		Welcome     vectors.Hex `json:"welcome"`
	}
	if err := vectors.Load("welcome.json", &cases); err != nil {
		t.Fatal(err)
	}
	passed := 0
	for i, c := range cases {
		before := t.Failed()
		testWelcomeCase(t, i, c.CipherSuite, c.InitPriv, c.SignerPub, c.KeyPackage, c.Welcome)
		if !t.Failed() && !before {
			passed++
		}
	}
	t.Logf("welcome.json: %d/%d cases passed (suites 1-7, one case each)", passed, len(cases))
}

func testWelcomeCase(t *testing.T, i int, id uint16, initPriv, signerPub, kpMsg, welcomeMsg []byte) {
	s, err := ciphersuite.Lookup(ciphersuite.ID(id))
	if err != nil {
		t.Fatal(err)
	}
	var kpm, wm wire.MLSMessage
	if err := codec.Unmarshal(kpMsg, &kpm); err != nil || kpm.KeyPackage == nil {
		t.Errorf("case %d: key package: %v", i, err)
		return
	}
	if err := codec.Unmarshal(welcomeMsg, &wm); err != nil || wm.Welcome == nil {
		t.Errorf("case %d: welcome: %v", i, err)
		return
	}
	kp, w := kpm.KeyPackage, wm.Welcome
	if err := kp.Verify(s); err != nil {
		t.Errorf("case %d: %v", i, err)
	}
	if w.CipherSuite != s.ID() || kp.CipherSuite != s.ID() {
		t.Errorf("case %d: suites %d and %d, want %d", i, w.CipherSuite, kp.CipherSuite, s.ID())
	}
	gs, err := w.DecryptGroupSecrets(s, kp.Ref(s), initPriv)
	if err != nil {
		t.Errorf("case %d: %v", i, err)
		return
	}
	if len(gs.PSKs) != 0 {
		t.Errorf("case %d: %d PSKs, but the vector gives no PSK values", i, len(gs.PSKs))
		return
	}
	// No PSKs: the PSK secret is zero.
	welcomeSecret := keyschedule.FromJoiner(s, gs.JoinerSecret, nil, nil).WelcomeSecret
	gi, err := w.DecryptGroupInfo(s, welcomeSecret)
	if err != nil {
		t.Errorf("case %d: %v", i, err)
		return
	}
	if err := gi.Verify(s, signerPub); err != nil {
		t.Errorf("case %d: %v", i, err)
	}
	ks := keyschedule.FromJoiner(s, gs.JoinerSecret, nil, codec.Marshal(&gi.GroupContext))
	if err := framing.VerifyConfirmationTag(s, ks.ConfirmationKey, gi.GroupContext.ConfirmedTranscriptHash, gi.ConfirmationTag); err != nil {
		t.Errorf("case %d: %v", i, err)
	}
	if framing.VerifyConfirmationTag(s, ks.MembershipKey, gi.GroupContext.ConfirmedTranscriptHash, gi.ConfirmationTag) == nil {
		t.Errorf("case %d: the confirmation tag verifies with the wrong key", i)
	}

	// A wrong welcome secret, a changed GroupInfo and an unknown key
	// package must all fail.
	if _, err := w.DecryptGroupInfo(s, gs.JoinerSecret); err == nil {
		t.Errorf("case %d: group info decrypts with the wrong secret", i)
	}
	gi.Signer++
	if gi.Verify(s, signerPub) == nil {
		t.Errorf("case %d: a changed GroupInfo still verifies", i)
	}
	if _, err := w.DecryptGroupSecrets(s, []byte("no such key package"), initPriv); err == nil {
		t.Errorf("case %d: secrets found for an unknown key package", i)
	}
}
