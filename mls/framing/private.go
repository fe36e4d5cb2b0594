package framing

import (
	"crypto/rand"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/secrettree"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// senderDataSize is SenderData's encoding: leaf_index, generation and the
// 4-byte reuse guard.
const senderDataSize = 12

func ratchetType(ct wire.ContentType) secrettree.RatchetType {
	if ct == wire.ContentApplication {
		return secrettree.Application
	}
	return secrettree.Handshake
}

// privateContentAAD writes PrivateContentAAD (§6.3.1).
func privateContentAAD(w *codec.Writer, groupID []byte, epoch uint64, ct wire.ContentType, authData []byte) {
	w.Opaque(groupID)
	w.Uint64(epoch)
	w.Uint8(uint8(ct))
	w.Opaque(authData)
}

// senderDataAAD is SenderDataAAD (§6.3.2).
func senderDataAAD(groupID []byte, epoch uint64, ct wire.ContentType) []byte {
	w := codec.NewWriter(make([]byte, 0, len(groupID)+13))
	w.Opaque(groupID)
	w.Uint64(epoch)
	w.Uint8(uint8(ct))
	return w.Bytes()
}

// guardNonce is the ratchet nonce with its first four bytes XORed with the
// reuse guard.
func guardNonce(nonce []byte, guard [4]byte) []byte {
	n := append([]byte(nil), nonce...)
	for i := range guard {
		n[i] ^= guard[i]
	}
	return n
}

// Encrypt protects a as a PrivateMessage (§6.3) with the next key of the
// sender's ratchet in tree, adding padding zero bytes. a's sender must be a
// member, and a must have been signed with WireFormat PrivateMessage.
func (a *AuthenticatedContent) Encrypt(s *ciphersuite.Suite, tree *secrettree.Tree, senderDataSecret []byte, padding int) (*wire.PrivateMessage, error) {
	c := &a.Content
	if c.Sender.Type != wire.SenderMember || a.WireFormat != wire.WireFormatPrivateMessage {
		return nil, fmt.Errorf("encrypting %d content: %w", c.Sender.Type, ErrInvalidSender)
	}
	gen, kn, err := tree.Next(c.Sender.LeafIndex, ratchetType(c.ContentType))
	if err != nil {
		return nil, fmt.Errorf("encrypting: taking a ratchet key: %w", err)
	}
	var guard [4]byte
	if _, err := rand.Read(guard[:]); err != nil {
		return nil, fmt.Errorf("encrypting: reuse guard: %w", err)
	}

	// PrivateMessageContent: the content (without its type, which travels
	// outside), the auth data, then the padding. MarshalBody writes the type
	// byte first; it is dropped.
	w := codec.NewWriter(make([]byte, 0, 128+len(c.ApplicationData)+padding))
	c.MarshalBody(w)
	a.Auth.Marshal(w, c.ContentType)
	pt := w.Bytes()[1:]
	pt = append(pt, make([]byte, padding)...)

	aad := codec.NewWriter(make([]byte, 0, len(c.GroupID)+len(c.AuthenticatedData)+16))
	privateContentAAD(aad, c.GroupID, c.Epoch, c.ContentType, c.AuthenticatedData)
	ct, err := s.Seal(kn.Key, guardNonce(kn.Nonce, guard), aad.Bytes(), pt)
	if err != nil {
		return nil, fmt.Errorf("encrypting content: %w", err)
	}

	var sd [senderDataSize]byte
	putUint32(sd[0:], uint32(c.Sender.LeafIndex))
	putUint32(sd[4:], gen)
	copy(sd[8:], guard[:])
	sdk := secrettree.SenderDataKeyNonce(s, senderDataSecret, ct)
	esd, err := s.Seal(sdk.Key, sdk.Nonce, senderDataAAD(c.GroupID, c.Epoch, c.ContentType), sd[:])
	if err != nil {
		return nil, fmt.Errorf("encrypting sender data: %w", err)
	}
	return &wire.PrivateMessage{
		GroupID:             c.GroupID,
		Epoch:               c.Epoch,
		ContentType:         c.ContentType,
		AuthenticatedData:   c.AuthenticatedData,
		EncryptedSenderData: esd,
		Ciphertext:          ct,
	}, nil
}

// Decrypt opens m with the keys of its epoch: the sender data with the
// sender data secret, then the content with the sender's ratchet key in
// tree (which is then deleted). The caller checks that the sender leaf is a
// member and verifies the signature (with WireFormat PrivateMessage, which
// the result carries).
func Decrypt(s *ciphersuite.Suite, m *wire.PrivateMessage, tree *secrettree.Tree, senderDataSecret []byte) (*AuthenticatedContent, error) {
	sdk := secrettree.SenderDataKeyNonce(s, senderDataSecret, m.Ciphertext)
	sd, err := s.Open(sdk.Key, sdk.Nonce, senderDataAAD(m.GroupID, m.Epoch, m.ContentType), m.EncryptedSenderData)
	if err != nil {
		return nil, fmt.Errorf("decrypting sender data: %w: %w", ErrDecrypt, err)
	}
	if len(sd) != senderDataSize {
		return nil, fmt.Errorf("decrypting sender data: %d bytes: %w", len(sd), codec.ErrTrailingBytes)
	}
	leaf := treemath.LeafIndex(getUint32(sd[0:]))
	gen := getUint32(sd[4:])
	var guard [4]byte
	copy(guard[:], sd[8:])

	// Peek, and delete the key only once the message decrypts: a member can
	// forge sender data naming any generation.
	kn, err := tree.Peek(leaf, ratchetType(m.ContentType), gen)
	if err != nil {
		return nil, fmt.Errorf("decrypting message from leaf %d generation %d: %w", leaf, gen, err)
	}
	aad := codec.NewWriter(make([]byte, 0, len(m.GroupID)+len(m.AuthenticatedData)+16))
	privateContentAAD(aad, m.GroupID, m.Epoch, m.ContentType, m.AuthenticatedData)
	pt, err := s.Open(kn.Key, guardNonce(kn.Nonce, guard), aad.Bytes(), m.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("decrypting message from leaf %d: %w: %w", leaf, ErrDecrypt, err)
	}
	if err := tree.Delete(leaf, ratchetType(m.ContentType), gen); err != nil {
		return nil, fmt.Errorf("decrypting message from leaf %d: %w", leaf, err)
	}

	return parseContent(m, leaf, pt)
}

// parseContent decodes PrivateMessageContent: the content m's type selects,
// the auth data, and padding that must be all zeros.
func parseContent(m *wire.PrivateMessage, leaf treemath.LeafIndex, pt []byte) (*AuthenticatedContent, error) {
	a := &AuthenticatedContent{
		WireFormat: wire.WireFormatPrivateMessage,
		Content: wire.FramedContent{
			GroupID:           m.GroupID,
			Epoch:             m.Epoch,
			Sender:            wire.Sender{Type: wire.SenderMember, LeafIndex: leaf},
			AuthenticatedData: m.AuthenticatedData,
			ContentType:       m.ContentType,
		},
	}
	r := codec.NewReader(pt)
	a.Content.UnmarshalContent(r)
	a.Auth.Unmarshal(r, m.ContentType)
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("decoding private message content: %w", err)
	}
	for _, b := range r.Raw(r.Len()) {
		if b != 0 {
			return nil, ErrInvalidPadding
		}
	}
	return a, nil
}

func putUint32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

func getUint32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
