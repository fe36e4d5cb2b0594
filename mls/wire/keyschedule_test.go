package wire_test

import (
	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// epochSecrets is the part of the key schedule (RFC 9420 §8) that the
// welcome test needs, derived here from the ciphersuite's primitives.
type epochSecrets struct {
	s             *ciphersuite.Suite
	member        []byte
	welcomeSecret []byte
}

func newEpochSecrets(s *ciphersuite.Suite, joinerSecret, pskSecret []byte) *epochSecrets {
	if pskSecret == nil {
		pskSecret = make([]byte, s.HashSize())
	}
	member := s.Extract(joinerSecret, pskSecret)
	return &epochSecrets{s: s, member: member, welcomeSecret: s.DeriveSecret(member, "welcome")}
}

func (e *epochSecrets) confirmationTag(gc *wire.GroupContext) []byte {
	epoch := e.s.ExpandWithLabel(e.member, "epoch", codec.Marshal(gc), e.s.HashSize())
	return e.s.MAC(e.s.DeriveSecret(epoch, "confirm"), gc.ConfirmedTranscriptHash)
}
