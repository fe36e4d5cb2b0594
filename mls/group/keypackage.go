package group

import (
	"fmt"
	"time"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// Identity is a client's long-term signing identity: its credential and
// signature key pair.
type Identity struct {
	Credential wire.Credential
	SigPriv    []byte
	SigPub     []byte
	// Capabilities to advertise; zero means this package's own (version
	// 1.0, the suite, basic and x509 credentials).
	Capabilities *wire.Capabilities
}

// NewIdentity makes an identity with a fresh signature key pair and a basic
// credential.
func NewIdentity(s *ciphersuite.Suite, name []byte) (*Identity, error) {
	priv, pub, err := s.GenerateSignatureKeyPair()
	if err != nil {
		return nil, fmt.Errorf("making identity: %w", err)
	}
	return &Identity{Credential: wire.BasicCredential(name), SigPriv: priv, SigPub: pub}, nil
}

func (id *Identity) capabilities(s *ciphersuite.Suite) wire.Capabilities {
	if id.Capabilities != nil {
		return *id.Capabilities
	}
	return wire.Capabilities{
		Versions:     []wire.ProtocolVersion{wire.MLS10},
		CipherSuites: []ciphersuite.ID{s.ID()},
		Credentials:  []wire.CredentialType{wire.CredentialBasic, wire.CredentialX509},
	}
}

// KeyPackagePrivate holds a KeyPackage's private keys: what its owner needs
// to join from a Welcome that uses it. Delete it once used.
type KeyPackagePrivate struct {
	InitPriv       []byte
	EncryptionPriv []byte
	SigPriv        []byte
}

// KeyPackageLifetime is how long NewKeyPackage's packages are valid.
const KeyPackageLifetime = 90 * 24 * time.Hour

// NewKeyPackage makes a signed KeyPackage for id with fresh init and
// encryption keys.
func NewKeyPackage(s *ciphersuite.Suite, id *Identity) (*wire.KeyPackage, *KeyPackagePrivate, error) {
	initPriv, initPub, err := s.GenerateKeyPair()
	if err != nil {
		return nil, nil, fmt.Errorf("making key package: %w", err)
	}
	encPriv, encPub, err := s.GenerateKeyPair()
	if err != nil {
		return nil, nil, fmt.Errorf("making key package: %w", err)
	}
	now := time.Now()
	kp := &wire.KeyPackage{
		Version:     wire.MLS10,
		CipherSuite: s.ID(),
		InitKey:     initPub,
		LeafNode: wire.LeafNode{
			EncryptionKey: encPub,
			SignatureKey:  id.SigPub,
			Credential:    id.Credential,
			Capabilities:  id.capabilities(s),
			Source:        wire.SourceKeyPackage,
			Lifetime: wire.Lifetime{
				NotBefore: uint64(now.Add(-time.Hour).Unix()),
				NotAfter:  uint64(now.Add(KeyPackageLifetime).Unix()),
			},
		},
	}
	if err := kp.LeafNode.Sign(s, id.SigPriv, nil, 0); err != nil {
		return nil, nil, fmt.Errorf("making key package: %w", err)
	}
	if err := kp.Sign(s, id.SigPriv); err != nil {
		return nil, nil, fmt.Errorf("making key package: %w", err)
	}
	return kp, &KeyPackagePrivate{InitPriv: initPriv, EncryptionPriv: encPriv, SigPriv: id.SigPriv}, nil
}
