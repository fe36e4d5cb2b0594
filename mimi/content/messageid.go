package content

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// IDScheme selects how the message ID hash input is framed.
type IDScheme int

const (
	// IDSchemeLengthPrefixed is the HEAD (-08) form: each URI is preceded by its length as a
	// big-endian uint16, so that sender and room URIs cannot be shifted into one another.
	IDSchemeLengthPrefixed IDScheme = iota
	// IDSchemeDraft07 is the -07 form: the URIs are concatenated as they are. Kept for peers
	// that still implement -07.
	IDSchemeDraft07
)

func (s IDScheme) String() string {
	switch s {
	case IDSchemeLengthPrefixed:
		return "draft-08"
	case IDSchemeDraft07:
		return "draft-07"
	}
	return fmt.Sprintf("IDScheme(%d)", int(s))
}

// HashIDSHA256 is the hash algorithm octet of SHA-256 message IDs (IANA Named Information
// Hash Algorithm Registry), the only one the draft defines for message IDs.
const HashIDSHA256 = 0x01

// ComputeMessageID computes the ID of the encoded message msg sent by senderURI into
// roomURI: 0x01 || the first 31 octets of SHA-256(sender, room, msg, salt), with the framing
// of scheme. The salt is read from msg, which must be a deterministic MIMI content
// encoding (it starts with array(7) and a 16-byte byte string).
func ComputeMessageID(scheme IDScheme, senderURI, roomURI string, msg []byte) (MessageID, error) {
	if len(msg) < 18 || msg[0] != 0x87 || msg[1] != 0x50 {
		return MessageID{}, fmt.Errorf("computing MIMI message ID: %w: message does not start with array(7), bytes(16)", ErrMalformed)
	}
	var salt Salt
	copy(salt[:], msg[2:18])
	return MessageIDWithSalt(scheme, senderURI, roomURI, msg, salt)
}

// MessageIDWithSalt is ComputeMessageID with the salt given by the caller.
func MessageIDWithSalt(scheme IDScheme, senderURI, roomURI string, msg []byte, salt Salt) (MessageID, error) {
	h := sha256.New()
	switch scheme {
	case IDSchemeLengthPrefixed:
		for _, uri := range []string{senderURI, roomURI} {
			if len(uri) > 0xffff {
				return MessageID{}, fmt.Errorf("computing MIMI message ID: %w: %d bytes", ErrURITooLong, len(uri))
			}
			h.Write(binary.BigEndian.AppendUint16(nil, uint16(len(uri))))
			h.Write([]byte(uri))
		}
	case IDSchemeDraft07:
		h.Write([]byte(senderURI))
		h.Write([]byte(roomURI))
	default:
		return MessageID{}, fmt.Errorf("computing MIMI message ID: %w: %d", ErrUnknownIDScheme, int(scheme))
	}
	h.Write(msg)
	h.Write(salt[:])
	var id MessageID
	id[0] = HashIDSHA256
	copy(id[1:], h.Sum(nil)[:31])
	return id, nil
}

// ID computes the message ID of m as encoded now; sender and room URIs come from the
// caller because the protocol takes them from the MLS credential and group, not from the
// (sender-controlled) extensions.
func (m *Message) ID(scheme IDScheme, senderURI, roomURI string) (MessageID, error) {
	enc, err := m.Encode()
	if err != nil {
		return MessageID{}, err
	}
	return MessageIDWithSalt(scheme, senderURI, roomURI, enc, m.Salt)
}

// KnownHash reports whether the ID's first octet names the hash algorithm the draft uses.
func (id MessageID) KnownHash() bool { return id[0] == HashIDSHA256 }
