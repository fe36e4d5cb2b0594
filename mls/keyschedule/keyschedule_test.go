package keyschedule

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/internal/vectors"
)

type hx = vectors.Hex

type keyScheduleCase struct {
	CipherSuite       ciphersuite.ID `json:"cipher_suite"`
	GroupID           hx             `json:"group_id"`
	InitialInitSecret hx             `json:"initial_init_secret"`
	Epochs            []struct {
		TreeHash                hx `json:"tree_hash"`
		CommitSecret            hx `json:"commit_secret"`
		PSKSecret               hx `json:"psk_secret"`
		ConfirmedTranscriptHash hx `json:"confirmed_transcript_hash"`
		GroupContext            hx `json:"group_context"`
		JoinerSecret            hx `json:"joiner_secret"`
		WelcomeSecret           hx `json:"welcome_secret"`
		InitSecret              hx `json:"init_secret"`
		SenderDataSecret        hx `json:"sender_data_secret"`
		EncryptionSecret        hx `json:"encryption_secret"`
		ExporterSecret          hx `json:"exporter_secret"`
		EpochAuthenticator      hx `json:"epoch_authenticator"`
		ExternalSecret          hx `json:"external_secret"`
		ConfirmationKey         hx `json:"confirmation_key"`
		MembershipKey           hx `json:"membership_key"`
		ResumptionPSK           hx `json:"resumption_psk"`
		ExternalPub             hx `json:"external_pub"`
		Exporter                struct {
			// The label is a string (the generator picks hex digits).
			Label   string
			Context hx
			Length  int
			Secret  hx
		}
	}
}

// groupContext encodes a GroupContext with no extensions (RFC 9420 §8.1).
func groupContext(suite ciphersuite.ID, groupID []byte, epoch uint64, treeHash, cth []byte) []byte {
	var w codec.Writer
	w.Uint16(1)
	w.Uint16(uint16(suite))
	w.Opaque(groupID)
	w.Uint64(epoch)
	w.Opaque(treeHash)
	w.Opaque(cth)
	w.Opaque(nil)
	return w.Bytes()
}

func TestKeyScheduleVectors(t *testing.T) {
	var cases []keyScheduleCase
	if err := vectors.Load("key-schedule.json", &cases); err != nil {
		t.Fatal(err)
	}
	passed, epochs := 0, 0
	for _, c := range cases {
		epochs += len(c.Epochs)
		if t.Run(fmt.Sprintf("suite%d", c.CipherSuite), func(t *testing.T) { checkKeySchedule(t, c) }) {
			passed++
		}
	}
	t.Logf("key-schedule.json: %d/%d cases passed (%d epochs)", passed, len(cases), epochs)
}

func checkKeySchedule(t *testing.T, c keyScheduleCase) {
	s, err := ciphersuite.Lookup(c.CipherSuite)
	if err != nil {
		t.Fatal(err)
	}
	init := []byte(c.InitialInitSecret)
	for i, ep := range c.Epochs {
		gc := groupContext(c.CipherSuite, c.GroupID, uint64(i), ep.TreeHash, ep.ConfirmedTranscriptHash)
		if !bytes.Equal(gc, ep.GroupContext) {
			t.Fatalf("epoch %d: group context %x, want %x", i, gc, ep.GroupContext)
		}
		e := Next(s, init, ep.CommitSecret, ep.PSKSecret, gc)
		for _, f := range []struct {
			name      string
			got, want []byte
		}{
			{"joiner_secret", e.JoinerSecret, ep.JoinerSecret},
			{"welcome_secret", e.WelcomeSecret, ep.WelcomeSecret},
			{"init_secret", e.InitSecret, ep.InitSecret},
			{"sender_data_secret", e.SenderDataSecret, ep.SenderDataSecret},
			{"encryption_secret", e.EncryptionSecret, ep.EncryptionSecret},
			{"exporter_secret", e.ExporterSecret, ep.ExporterSecret},
			{"epoch_authenticator", e.EpochAuthenticator, ep.EpochAuthenticator},
			{"external_secret", e.ExternalSecret, ep.ExternalSecret},
			{"confirmation_key", e.ConfirmationKey, ep.ConfirmationKey},
			{"membership_key", e.MembershipKey, ep.MembershipKey},
			{"resumption_psk", e.ResumptionPSK, ep.ResumptionPSK},
			{"exporter", e.Export(ep.Exporter.Label, ep.Exporter.Context, ep.Exporter.Length), ep.Exporter.Secret},
		} {
			if !bytes.Equal(f.got, f.want) {
				t.Errorf("epoch %d: %s = %x, want %x", i, f.name, f.got, f.want)
			}
		}
		_, pub, err := e.ExternalKeyPair()
		if err != nil || !bytes.Equal(pub, ep.ExternalPub) {
			t.Errorf("epoch %d: external_pub = %x, %v; want %x", i, pub, err, ep.ExternalPub)
		}
		init = e.InitSecret
	}
}

type pskCase struct {
	CipherSuite ciphersuite.ID `json:"cipher_suite"`
	PSKs        []struct {
		PSKID    hx `json:"psk_id"`
		PSK      hx `json:"psk"`
		PSKNonce hx `json:"psk_nonce"`
	} `json:"psks"`
	PSKSecret hx `json:"psk_secret"`
}

func TestPSKSecretVectors(t *testing.T) {
	var cases []pskCase
	if err := vectors.Load("psk_secret.json", &cases); err != nil {
		t.Fatal(err)
	}
	passed := 0
	suites := map[ciphersuite.ID]bool{}
	for i, c := range cases {
		suites[c.CipherSuite] = true
		s, err := ciphersuite.Lookup(c.CipherSuite)
		if err != nil {
			t.Errorf("case %d: %v", i, err)
			continue
		}
		psks := make([]PSK, len(c.PSKs))
		for j, p := range c.PSKs {
			// PreSharedKeyID{psktype = external(1), psk_id<V>, psk_nonce<V>}
			var w codec.Writer
			w.Uint8(1)
			w.Opaque(p.PSKID)
			w.Opaque(p.PSKNonce)
			psks[j] = PSK{ID: w.Bytes(), Secret: p.PSK}
		}
		got, err := PSKSecret(s, psks)
		if err != nil || !bytes.Equal(got, c.PSKSecret) {
			t.Errorf("case %d (suite %d, %d PSKs): psk_secret = %x, %v; want %x", i, c.CipherSuite, len(psks), got, err, c.PSKSecret)
			continue
		}
		passed++
	}
	t.Logf("psk_secret.json: %d/%d cases passed (%d suites)", passed, len(cases), len(suites))
}

func TestExternalInit(t *testing.T) {
	for id := ciphersuite.ID(1); id <= 7; id++ {
		s, _ := ciphersuite.Lookup(id)
		e := FromEpochSecret(s, bytes.Repeat([]byte{3}, s.HashSize()))
		priv, pub, err := e.ExternalKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		kemOut, secret, err := ExternalInitSecret(s, pub)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReceiveExternalInitSecret(s, priv, kemOut)
		if err != nil || !bytes.Equal(got, secret) || len(secret) != s.HashSize() {
			t.Fatalf("suite %d: external init secrets differ: %v", id, err)
		}
	}
}
