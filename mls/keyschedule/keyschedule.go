// Package keyschedule is RFC 9420's key schedule (§8): from the previous
// epoch's init secret, the commit secret, the PSK secret and the new
// GroupContext it derives the joiner, welcome and epoch secrets and every
// secret of the epoch, plus the PSK secret itself (§8.4), the exporter
// (§8.5), the external key pair (§8.3) and the Welcome key and nonce (§12.4.3.1).
//
// GroupContext and PreSharedKeyID values are passed in their TLS encoding,
// so this package depends only on the ciphersuite.
package keyschedule

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
)

// Epoch holds the secrets of one epoch (§8, Table 4).
type Epoch struct {
	Suite *ciphersuite.Suite

	JoinerSecret  []byte
	WelcomeSecret []byte
	EpochSecret   []byte

	SenderDataSecret []byte
	EncryptionSecret []byte
	ExporterSecret   []byte
	ExternalSecret   []byte
	ConfirmationKey  []byte
	MembershipKey    []byte
	ResumptionPSK    []byte
	// EpochAuthenticator is what members compare out of band to check they
	// share the epoch.
	EpochAuthenticator []byte
	// InitSecret seeds the next epoch.
	InitSecret []byte
}

// JoinerSecret is ExpandWithLabel(Extract(initSecret, commitSecret),
// "joiner", groupContext, Nh). A nil commitSecret means Nh zero bytes (a
// commit without a path).
func JoinerSecret(s *ciphersuite.Suite, initSecret, commitSecret, groupContext []byte) []byte {
	if commitSecret == nil {
		commitSecret = make([]byte, s.HashSize())
	}
	return s.ExpandWithLabel(s.Extract(initSecret, commitSecret), "joiner", groupContext, s.HashSize())
}

// FromJoiner derives an epoch's secrets from its joiner secret, as a new
// member does from a Welcome. A nil pskSecret means no PSKs (Nh zeros).
func FromJoiner(s *ciphersuite.Suite, joinerSecret, pskSecret, groupContext []byte) *Epoch {
	if pskSecret == nil {
		pskSecret = make([]byte, s.HashSize())
	}
	member := s.Extract(joinerSecret, pskSecret)
	e := &Epoch{Suite: s, JoinerSecret: joinerSecret}
	e.WelcomeSecret = s.DeriveSecret(member, "welcome")
	e.EpochSecret = s.ExpandWithLabel(member, "epoch", groupContext, s.HashSize())
	e.deriveFromEpochSecret()
	return e
}

// WelcomeSecret is the welcome secret of the epoch with joinerSecret and
// pskSecret (nil: no PSKs), which a joiner needs before it has the
// GroupContext (it is in the GroupInfo the welcome secret decrypts).
func WelcomeSecret(s *ciphersuite.Suite, joinerSecret, pskSecret []byte) []byte {
	if pskSecret == nil {
		pskSecret = make([]byte, s.HashSize())
	}
	return s.DeriveSecret(s.Extract(joinerSecret, pskSecret), "welcome")
}

// FromEpochSecret derives an epoch's secrets from its epoch secret alone
// (the joiner and welcome secrets stay nil), as when a group is created.
func FromEpochSecret(s *ciphersuite.Suite, epochSecret []byte) *Epoch {
	e := &Epoch{Suite: s, EpochSecret: epochSecret}
	e.deriveFromEpochSecret()
	return e
}

// Next derives the epoch after a commit: initSecret is the previous epoch's
// InitSecret; nil commitSecret and pskSecret mean Nh zeros.
func Next(s *ciphersuite.Suite, initSecret, commitSecret, pskSecret, groupContext []byte) *Epoch {
	return FromJoiner(s, JoinerSecret(s, initSecret, commitSecret, groupContext), pskSecret, groupContext)
}

func (e *Epoch) deriveFromEpochSecret() {
	s, es := e.Suite, e.EpochSecret
	e.SenderDataSecret = s.DeriveSecret(es, "sender data")
	e.EncryptionSecret = s.DeriveSecret(es, "encryption")
	e.ExporterSecret = s.DeriveSecret(es, "exporter")
	e.ExternalSecret = s.DeriveSecret(es, "external")
	e.ConfirmationKey = s.DeriveSecret(es, "confirm")
	e.MembershipKey = s.DeriveSecret(es, "membership")
	e.ResumptionPSK = s.DeriveSecret(es, "resumption")
	e.EpochAuthenticator = s.DeriveSecret(es, "authentication")
	e.InitSecret = s.DeriveSecret(es, "init")
}

// Export is MLS-Exporter(label, context, length) (§8.5).
func (e *Epoch) Export(label string, context []byte, length int) []byte {
	s := e.Suite
	return s.ExpandWithLabel(s.DeriveSecret(e.ExporterSecret, label), "exported", s.Hash(context), length)
}

// ExternalKeyPair is the epoch's external HPKE key pair, derived from the
// external secret; its public half goes in the external_pub extension.
func (e *Epoch) ExternalKeyPair() (priv, pub []byte, err error) {
	priv, pub, err = e.Suite.DeriveKeyPair(e.ExternalSecret)
	if err != nil {
		return nil, nil, fmt.Errorf("deriving external key pair: %w", err)
	}
	return priv, pub, nil
}

// WelcomeKeyNonce derives the key and nonce that encrypt a Welcome's
// GroupInfo from the welcome secret (§12.4.3.1).
func WelcomeKeyNonce(s *ciphersuite.Suite, welcomeSecret []byte) (key, nonce []byte) {
	return s.ExpandWithLabel(welcomeSecret, "key", nil, s.KeySize()),
		s.ExpandWithLabel(welcomeSecret, "nonce", nil, s.NonceSize())
}

// ExternalInitSecret is the init secret of an external commit: the export
// of an HPKE context set up to the group's external public key (§8.3).
// The joiner sends kemOutput in its ExternalInit proposal.
func ExternalInitSecret(s *ciphersuite.Suite, externalPub []byte) (kemOutput, initSecret []byte, err error) {
	kemOutput, initSecret, err = s.ExportSecretSender(externalPub, nil, []byte("MLS 1.0 external init secret"), s.HashSize())
	if err != nil {
		return nil, nil, fmt.Errorf("exporting external init secret: %w", err)
	}
	return kemOutput, initSecret, nil
}

// ReceiveExternalInitSecret is what members derive from an ExternalInit
// proposal's kemOutput with the epoch's external private key.
func ReceiveExternalInitSecret(s *ciphersuite.Suite, externalPriv, kemOutput []byte) ([]byte, error) {
	secret, err := s.ExportSecretReceiver(externalPriv, kemOutput, nil, []byte("MLS 1.0 external init secret"), s.HashSize())
	if err != nil {
		return nil, fmt.Errorf("importing external init secret: %w", err)
	}
	return secret, nil
}

// PSK is one pre-shared key injected into an epoch.
type PSK struct {
	// ID is the TLS encoding of the PSK's PreSharedKeyID (with its nonce).
	ID []byte
	// Secret is the PSK's value.
	Secret []byte
}

// PSKSecret combines PSKs into the psk_secret (§8.4); no PSKs gives Nh
// zeros. Order matters: it must be the order of the PSK proposals.
func PSKSecret(s *ciphersuite.Suite, psks []PSK) ([]byte, error) {
	nh := s.HashSize()
	secret := make([]byte, nh)
	if len(psks) > 0xffff {
		return nil, fmt.Errorf("combining %d PSKs: %w", len(psks), codec.ErrTooLong)
	}
	zero := make([]byte, nh)
	for i, p := range psks {
		extracted := s.Extract(zero, p.Secret)
		// PSKLabel{PreSharedKeyID id; uint16 index; uint16 count}
		w := codec.NewWriter(make([]byte, 0, len(p.ID)+4))
		w.Raw(p.ID)
		w.Uint16(uint16(i))
		w.Uint16(uint16(len(psks)))
		input := s.ExpandWithLabel(extracted, "derived psk", w.Bytes(), nh)
		secret = s.Extract(input, secret)
	}
	return secret, nil
}
