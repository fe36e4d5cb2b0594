package wire

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/keyschedule"
)

// ErrEncryptedGroupInfoMissing means AddMember was called before
// SealGroupInfo: the group secrets' encryption context is the encrypted
// group info.
var ErrEncryptedGroupInfoMissing = errors.New("wire: welcome has no encrypted group info yet")

const welcomeLabel = "Welcome"

// SealGroupInfo encrypts gi with the key and nonce derived from the epoch's
// welcome secret and sets w.EncryptedGroupInfo.
func (w *Welcome) SealGroupInfo(s *ciphersuite.Suite, welcomeSecret []byte, gi *GroupInfo) error {
	key, nonce := keyschedule.WelcomeKeyNonce(s, welcomeSecret)
	ct, err := s.Seal(key, nonce, nil, codec.Marshal(gi))
	if err != nil {
		return fmt.Errorf("encrypting group info: %w", err)
	}
	w.CipherSuite = s.ID()
	w.EncryptedGroupInfo = ct
	return nil
}

// AddMember encrypts gs to kp's init key and appends it to w.Secrets, under
// kp's KeyPackageRef. SealGroupInfo must come first.
func (w *Welcome) AddMember(s *ciphersuite.Suite, kp *KeyPackage, gs *GroupSecrets) error {
	if w.EncryptedGroupInfo == nil {
		return ErrEncryptedGroupInfoMissing
	}
	kem, ct, err := s.EncryptWithLabel(kp.InitKey, welcomeLabel, w.EncryptedGroupInfo, codec.Marshal(gs))
	if err != nil {
		return fmt.Errorf("encrypting group secrets: %w", err)
	}
	w.Secrets = append(w.Secrets, EncryptedGroupSecrets{
		NewMember:             kp.Ref(s),
		EncryptedGroupSecrets: HPKECiphertext{KEMOutput: kem, Ciphertext: ct},
	})
	return nil
}

// Find returns the secrets addressed to the KeyPackageRef ref.
func (w *Welcome) Find(ref []byte) (*EncryptedGroupSecrets, bool) {
	for i := range w.Secrets {
		if bytes.Equal(w.Secrets[i].NewMember, ref) {
			return &w.Secrets[i], true
		}
	}
	return nil, false
}

// DecryptGroupSecrets finds the secrets for the KeyPackage whose reference
// is ref and decrypts them with its init private key.
func (w *Welcome) DecryptGroupSecrets(s *ciphersuite.Suite, ref, initPriv []byte) (*GroupSecrets, error) {
	e, ok := w.Find(ref)
	if !ok {
		return nil, fmt.Errorf("decrypting group secrets: key package %x: %w", ref, ErrNotFound)
	}
	pt, err := s.DecryptWithLabel(initPriv, welcomeLabel, w.EncryptedGroupInfo,
		e.EncryptedGroupSecrets.KEMOutput, e.EncryptedGroupSecrets.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("decrypting group secrets: %w", err)
	}
	gs := new(GroupSecrets)
	if err := codec.Unmarshal(pt, gs); err != nil {
		return nil, fmt.Errorf("decoding group secrets: %w", err)
	}
	return gs, nil
}

// DecryptGroupInfo decrypts the GroupInfo with the welcome secret (derived
// from the joiner secret and PSK secret by the key schedule). The caller
// still verifies its signature and confirmation tag.
func (w *Welcome) DecryptGroupInfo(s *ciphersuite.Suite, welcomeSecret []byte) (*GroupInfo, error) {
	key, nonce := keyschedule.WelcomeKeyNonce(s, welcomeSecret)
	pt, err := s.Open(key, nonce, nil, w.EncryptedGroupInfo)
	if err != nil {
		return nil, fmt.Errorf("decrypting group info: %w", err)
	}
	gi := new(GroupInfo)
	if err := codec.Unmarshal(pt, gi); err != nil {
		return nil, fmt.Errorf("decoding group info: %w", err)
	}
	return gi, nil
}
