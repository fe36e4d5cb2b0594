package wire

import (
	"errors"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/internal/vectors"
)

func TestDecodeRejectsUnknownTypes(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		v    codec.Unmarshaler
		want error
	}{
		{"credential type 3", []byte{0, 3, 0}, new(Credential), ErrUnknownType},
		{"node type 3", []byte{3}, new(Node), ErrUnknownType},
		{"proposal-or-ref type 3", []byte{3}, new(ProposalOrRef), ErrUnknownType},
		{"proposal type 8", []byte{1, 0, 8}, new(ProposalOrRef), ErrUnknownType},
		{"sender type 5", []byte{5}, new(Sender), ErrUnknownType},
		{"psk type 3", []byte{3, 0}, new(PreSharedKeyID), ErrUnknownType},
		{"protocol version 2", []byte{0, 2, 0, 5}, new(MLSMessage), ErrUnsupportedVersion},
		{"wire format 6", []byte{0, 1, 0, 6}, new(MLSMessage), ErrUnknownType},
		{"private message content type 4", []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0}, new(PrivateMessage), ErrUnknownType},
		{"optional byte 2", []byte{0, 2}, new(Commit), codec.ErrInvalidOptional},
		{"trailing byte", []byte{0, 0, 0, 0, 0}, new(Remove), codec.ErrTrailingBytes},
		{"short", []byte{0, 0, 0}, new(Remove), codec.ErrShort},
		{"odd uint16 vector", []byte{3, 0, 1, 0}, new(RequiredCapabilities), codec.ErrShort},
	}
	for _, tc := range tests {
		if err := codec.Unmarshal(tc.data, tc.v); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestSignatures(t *testing.T) {
	var cases []messagesCase
	if err := vectors.Load("messages.json", &cases); err != nil {
		t.Fatal(err)
	}
	s, err := ciphersuite.Lookup(1)
	if err != nil {
		t.Fatal(err)
	}
	sigPriv, sigPub, err := s.GenerateSignatureKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	_, initPub, _ := s.GenerateKeyPair()
	_, encPub, _ := s.GenerateKeyPair()
	kp := KeyPackage{Version: MLS10, CipherSuite: s.ID(), InitKey: initPub, LeafNode: LeafNode{
		EncryptionKey: encPub, SignatureKey: sigPub, Credential: BasicCredential([]byte("alice")),
		Capabilities: Capabilities{Versions: []ProtocolVersion{MLS10}, CipherSuites: []ciphersuite.ID{s.ID()}},
		Source:       SourceKeyPackage, Lifetime: Lifetime{NotBefore: 1, NotAfter: 2},
	}}
	if err := kp.LeafNode.Sign(s, sigPriv, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := kp.Sign(s, sigPriv); err != nil {
		t.Fatal(err)
	}
	var decoded KeyPackage
	if err := codec.Unmarshal(codec.Marshal(&kp), &decoded); err != nil {
		t.Fatal(err)
	}
	if err := decoded.Verify(s); err != nil {
		t.Errorf("signed key package: %v", err)
	}
	decoded.Extensions = Extensions{{Type: 0x0a0a, Data: []byte{1}}}
	if err := decoded.Verify(s); !errors.Is(err, ErrInvalidSignature) {
		t.Errorf("changed key package: got %v, want ErrInvalidSignature", err)
	}
	if len(kp.Ref(s)) != s.HashSize() {
		t.Errorf("KeyPackageRef has %d bytes", len(kp.Ref(s)))
	}

	// An update leaf is bound to its group and leaf index.
	ln := kp.LeafNode
	ln.Source = SourceUpdate
	if err := ln.Sign(s, sigPriv, nil, 0); !errors.Is(err, ErrMissingContext) {
		t.Errorf("signing an update leaf without a group: %v", err)
	}
	if err := ln.Sign(s, sigPriv, []byte("g"), 3); err != nil {
		t.Fatal(err)
	}
	if err := ln.Verify(s, []byte("g"), 3); err != nil {
		t.Errorf("update leaf: %v", err)
	}
	if err := ln.Verify(s, []byte("g"), 4); !errors.Is(err, ErrInvalidSignature) {
		t.Errorf("update leaf at another index: %v", err)
	}
	if err := ln.Verify(s, []byte("h"), 3); !errors.Is(err, ErrInvalidSignature) {
		t.Errorf("update leaf in another group: %v", err)
	}
	kp.LeafNode = ln
	if err := kp.Verify(s); !errors.Is(err, ErrWrongSource) {
		t.Errorf("key package with an update leaf: %v", err)
	}

	gi := GroupInfo{GroupContext: GroupContext{Version: MLS10, CipherSuite: s.ID(), GroupID: []byte("g")},
		ConfirmationTag: []byte{1, 2}, Signer: 3}
	if err := gi.Sign(s, sigPriv); err != nil {
		t.Fatal(err)
	}
	if err := gi.Verify(s, sigPub); err != nil {
		t.Errorf("group info: %v", err)
	}
	gi.GroupContext.Epoch++
	if err := gi.Verify(s, sigPub); !errors.Is(err, ErrInvalidSignature) {
		t.Errorf("changed group info: %v", err)
	}
}

func TestExtensions(t *testing.T) {
	rc := RequiredCapabilities{Extensions: []ExtensionType{ExtensionApplicationID, 0xff00}, Credentials: []CredentialType{CredentialBasic}}
	exts := Extensions{NewExtension(ExtensionRequiredCapabilities, &rc), NewExtension(ExtensionExternalPub, &ExternalPub{PublicKey: []byte{9}})}
	var got RequiredCapabilities
	if ok, err := exts.Decode(ExtensionRequiredCapabilities, &got); !ok || err != nil {
		t.Fatalf("Decode: %v, %v", ok, err)
	}
	if ok, _ := exts.Decode(ExtensionExternalSenders, new(ExternalSenders)); ok {
		t.Error("found an absent extension")
	}
	caps := Capabilities{Extensions: []ExtensionType{0xff00}, Credentials: []CredentialType{CredentialBasic}}
	if !got.SatisfiedBy(&caps) {
		t.Error("capabilities that list everything do not satisfy")
	}
	caps.Extensions = nil
	if got.SatisfiedBy(&caps) {
		t.Error("capabilities without a required extension satisfy")
	}
	if err := append(exts, exts[0]).CheckUnique(); !errors.Is(err, ErrDuplicateExtension) {
		t.Errorf("CheckUnique: %v", err)
	}
}
