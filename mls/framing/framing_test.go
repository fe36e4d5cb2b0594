package framing

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/internal/vectors"
	"github.com/lmbridge/lmbridge/mls/secrettree"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

type hx = vectors.Hex

type transcriptCase struct {
	CipherSuite                  ciphersuite.ID `json:"cipher_suite"`
	ConfirmationKey              hx             `json:"confirmation_key"`
	AuthenticatedContent         hx             `json:"authenticated_content"`
	InterimTranscriptHashBefore  hx             `json:"interim_transcript_hash_before"`
	ConfirmedTranscriptHashAfter hx             `json:"confirmed_transcript_hash_after"`
	InterimTranscriptHashAfter   hx             `json:"interim_transcript_hash_after"`
}

func TestTranscriptHashVectors(t *testing.T) {
	var cases []transcriptCase
	if err := vectors.Load("transcript-hashes.json", &cases); err != nil {
		t.Fatal(err)
	}
	passed := 0
	for _, c := range cases {
		if t.Run(fmt.Sprintf("suite%d", c.CipherSuite), func(t *testing.T) {
			s, err := ciphersuite.Lookup(c.CipherSuite)
			if err != nil {
				t.Fatal(err)
			}
			var a AuthenticatedContent
			if err := codec.Unmarshal(c.AuthenticatedContent, &a); err != nil {
				t.Fatalf("decoding authenticated content: %v", err)
			}
			if !bytes.Equal(codec.Marshal(&a), c.AuthenticatedContent) {
				t.Fatal("authenticated content does not re-encode")
			}
			if a.Content.ContentType != wire.ContentCommit {
				t.Fatalf("content type %d, want commit", a.Content.ContentType)
			}
			confirmed := ConfirmedTranscriptHash(s, c.InterimTranscriptHashBefore, &a)
			if !bytes.Equal(confirmed, c.ConfirmedTranscriptHashAfter) {
				t.Errorf("confirmed transcript hash %x, want %x", confirmed, c.ConfirmedTranscriptHashAfter)
			}
			if err := VerifyConfirmationTag(s, c.ConfirmationKey, confirmed, a.Auth.ConfirmationTag); err != nil {
				t.Errorf("confirmation tag: %v", err)
			}
			if err := VerifyConfirmationTag(s, c.ConfirmationKey, c.InterimTranscriptHashBefore, a.Auth.ConfirmationTag); err == nil {
				t.Error("confirmation tag verified over the wrong hash")
			}
			interim := InterimTranscriptHash(s, confirmed, a.Auth.ConfirmationTag)
			if !bytes.Equal(interim, c.InterimTranscriptHashAfter) {
				t.Errorf("interim transcript hash %x, want %x", interim, c.InterimTranscriptHashAfter)
			}
		}) {
			passed++
		}
	}
	t.Logf("transcript-hashes.json: %d/%d cases passed", passed, len(cases))
}

type protectionCase struct {
	CipherSuite             ciphersuite.ID `json:"cipher_suite"`
	GroupID                 hx             `json:"group_id"`
	Epoch                   uint64         `json:"epoch"`
	TreeHash                hx             `json:"tree_hash"`
	ConfirmedTranscriptHash hx             `json:"confirmed_transcript_hash"`
	SignaturePriv           hx             `json:"signature_priv"`
	SignaturePub            hx             `json:"signature_pub"`
	EncryptionSecret        hx             `json:"encryption_secret"`
	SenderDataSecret        hx             `json:"sender_data_secret"`
	MembershipKey           hx             `json:"membership_key"`
	Proposal                hx             `json:"proposal"`
	ProposalPub             hx             `json:"proposal_pub"`
	ProposalPriv            hx             `json:"proposal_priv"`
	Commit                  hx             `json:"commit"`
	CommitPub               hx             `json:"commit_pub"`
	CommitPriv              hx             `json:"commit_priv"`
	Application             hx             `json:"application"`
	ApplicationPriv         hx             `json:"application_priv"`
}

// The vectors' sender is leaf 1 of a two-member group.
const (
	protectionSender = treemath.LeafIndex(1)
	protectionLeaves = 2
)

func TestMessageProtectionVectors(t *testing.T) {
	var cases []protectionCase
	if err := vectors.Load("message-protection.json", &cases); err != nil {
		t.Fatal(err)
	}
	passed := 0
	for _, c := range cases {
		if t.Run(fmt.Sprintf("suite%d", c.CipherSuite), func(t *testing.T) { checkProtection(t, &c) }) {
			passed++
		}
	}
	t.Logf("message-protection.json: %d/%d cases passed (each: proposal and commit public and private, application private; decrypt the vector's and round-trip our own)", passed, len(cases))
}

// contentBytes encodes the part of a FramedContent the vector gives raw:
// the proposal (type and body), the commit, or the application data.
func contentBytes(c *wire.FramedContent) []byte {
	var w codec.Writer
	switch c.ContentType {
	case wire.ContentProposal:
		wire.MarshalProposal(&w, c.Proposal)
	case wire.ContentCommit:
		c.Commit.MarshalMLS(&w)
	case wire.ContentApplication:
		w.Raw(c.ApplicationData)
	}
	return w.Bytes()
}

func checkProtection(t *testing.T, c *protectionCase) {
	s, err := ciphersuite.Lookup(c.CipherSuite)
	if err != nil {
		t.Fatal(err)
	}
	gc := codec.Marshal(&wire.GroupContext{Version: wire.MLS10, CipherSuite: c.CipherSuite, GroupID: c.GroupID,
		Epoch: c.Epoch, TreeHash: c.TreeHash, ConfirmedTranscriptHash: c.ConfirmedTranscriptHash})
	newTree := func() *secrettree.Tree {
		return secrettree.New(s, c.EncryptionSecret, protectionLeaves, secrettree.Config{})
	}

	checkPub := func(name string, raw, msg []byte) {
		var m wire.MLSMessage
		if err := codec.Unmarshal(msg, &m); err != nil || m.PublicMessage == nil {
			t.Fatalf("%s pub: decoding: %v", name, err)
		}
		a, err := FromPublicMessage(s, m.PublicMessage, c.MembershipKey, gc)
		if err != nil {
			t.Fatalf("%s pub: %v", name, err)
		}
		if err := a.Verify(s, c.SignaturePub, gc); err != nil {
			t.Fatalf("%s pub: %v", name, err)
		}
		if got := contentBytes(&a.Content); !bytes.Equal(got, raw) {
			t.Fatalf("%s pub: content %x, want %x", name, got, raw)
		}
		if _, err := FromPublicMessage(s, m.PublicMessage, c.SenderDataSecret, gc); err == nil {
			t.Fatalf("%s pub: membership tag verified under another key", name)
		}
		// Our own: sign and tag the same content, then check it back.
		own := &AuthenticatedContent{WireFormat: wire.WireFormatPublicMessage, Content: a.Content}
		if err := own.Sign(s, c.SignaturePriv, gc); err != nil {
			t.Fatal(err)
		}
		pm := own.PublicMessage(s, c.MembershipKey, gc)
		back, err := FromPublicMessage(s, pm, c.MembershipKey, gc)
		if err != nil {
			t.Fatalf("%s pub own: %v", name, err)
		}
		if err := back.Verify(s, c.SignaturePub, gc); err != nil {
			t.Fatalf("%s pub own: %v", name, err)
		}
	}
	checkPriv := func(name string, raw, msg []byte) {
		var m wire.MLSMessage
		if err := codec.Unmarshal(msg, &m); err != nil || m.PrivateMessage == nil {
			t.Fatalf("%s priv: decoding: %v", name, err)
		}
		a, err := Decrypt(s, m.PrivateMessage, newTree(), c.SenderDataSecret)
		if err != nil {
			t.Fatalf("%s priv: %v", name, err)
		}
		if a.Content.Sender.LeafIndex != protectionSender {
			t.Fatalf("%s priv: sender leaf %d", name, a.Content.Sender.LeafIndex)
		}
		if err := a.Verify(s, c.SignaturePub, gc); err != nil {
			t.Fatalf("%s priv: %v", name, err)
		}
		if got := contentBytes(&a.Content); !bytes.Equal(got, raw) {
			t.Fatalf("%s priv: content %x, want %x", name, got, raw)
		}
		// Our own, with padding, decrypted by a receiver with its own tree.
		own := &AuthenticatedContent{WireFormat: wire.WireFormatPrivateMessage, Content: a.Content}
		if err := own.Sign(s, c.SignaturePriv, gc); err != nil {
			t.Fatal(err)
		}
		if a.Content.ContentType == wire.ContentCommit {
			own.Auth.ConfirmationTag = a.Auth.ConfirmationTag
		}
		pm, err := own.Encrypt(s, newTree(), c.SenderDataSecret, 17)
		if err != nil {
			t.Fatalf("%s priv own: %v", name, err)
		}
		enc := codec.Marshal(&wire.MLSMessage{PrivateMessage: pm})
		var m2 wire.MLSMessage
		if err := codec.Unmarshal(enc, &m2); err != nil {
			t.Fatal(err)
		}
		back, err := Decrypt(s, m2.PrivateMessage, newTree(), c.SenderDataSecret)
		if err != nil {
			t.Fatalf("%s priv own: %v", name, err)
		}
		if err := back.Verify(s, c.SignaturePub, gc); err != nil {
			t.Fatalf("%s priv own: %v", name, err)
		}
		if !bytes.Equal(contentBytes(&back.Content), raw) {
			t.Fatalf("%s priv own: content differs", name)
		}
	}
	checkPub("proposal", c.Proposal, c.ProposalPub)
	checkPriv("proposal", c.Proposal, c.ProposalPriv)
	checkPub("commit", c.Commit, c.CommitPub)
	checkPriv("commit", c.Commit, c.CommitPriv)
	checkPriv("application", c.Application, c.ApplicationPriv)
}
