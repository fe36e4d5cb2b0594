package framing

import (
	"crypto/hmac"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
)

// ConfirmedTranscriptHash is Hash(interim_transcript_hash_[n-1] ||
// ConfirmedTranscriptHashInput) for the commit a (§8.2).
func ConfirmedTranscriptHash(s *ciphersuite.Suite, interimBefore []byte, a *AuthenticatedContent) []byte {
	h := s.NewHash()
	h.Write(interimBefore)
	h.Write([]byte{byte(a.WireFormat >> 8), byte(a.WireFormat)})
	h.Write(a.encoded())
	var b [4]byte
	h.Write(codec.AppendVarint(b[:0], len(a.Auth.Signature)))
	h.Write(a.Auth.Signature)
	return h.Sum(nil)
}

// InterimTranscriptHash is Hash(confirmed_transcript_hash_[n] ||
// InterimTranscriptHashInput{confirmation_tag}).
func InterimTranscriptHash(s *ciphersuite.Suite, confirmed, confirmationTag []byte) []byte {
	b := make([]byte, 0, len(confirmed)+codec.VarintSize(len(confirmationTag))+len(confirmationTag))
	b = append(b, confirmed...)
	b = codec.AppendVarint(b, len(confirmationTag))
	b = append(b, confirmationTag...)
	return s.Hash(b)
}

// ConfirmationTag is MAC(confirmation_key, confirmed_transcript_hash).
func ConfirmationTag(s *ciphersuite.Suite, confirmationKey, confirmedTranscriptHash []byte) []byte {
	return s.MAC(confirmationKey, confirmedTranscriptHash)
}

// VerifyConfirmationTag checks tag in constant time.
func VerifyConfirmationTag(s *ciphersuite.Suite, confirmationKey, confirmedTranscriptHash, tag []byte) error {
	if !hmac.Equal(ConfirmationTag(s, confirmationKey, confirmedTranscriptHash), tag) {
		return ErrInvalidConfirmationTag
	}
	return nil
}
