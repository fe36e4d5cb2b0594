// Package sigverify verifies Ed25519 signatures exactly as crypto/ed25519.Verify does, faster for public keys that
// sign again and again (the hub's and the participants' keys, on every event). crypto/ed25519 decompresses the key
// and computes [S]B − [k]A by a joint double-and-add of about 253 doublings for every signature. Here a key seen
// before has a table of its multiples j·16^i·(−A), so [k](−A) is 64 table additions and no doubling; [S]B likewise from
// a table of the base point. The result is the same group element, encoded and compared with R as crypto/ed25519
// does, so every input verifies here if and only if it verifies there (see the differential tests and fuzzer).
package sigverify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"sync"

	"filippo.io/edwards25519"
)

// windows is the number of 4-bit digits of a 256-bit little-endian scalar.
const windows = 64

// table holds j·16^i·P for i < windows and 1 ≤ j ≤ 15 (index j−1).
type table [windows][15]edwards25519.Point

func newTable(p *edwards25519.Point) *table {
	t := new(table)
	base := new(edwards25519.Point).Set(p)
	for i := 0; i < windows; i++ {
		t[i][0].Set(base)
		for j := 1; j < 15; j++ {
			t[i][j].Add(&t[i][j-1], base)
		}
		// 16·base = 15·base + base.
		base.Add(&t[i][14], base)
	}
	return t
}

// addMultiple adds s·P to acc, where s is a little-endian scalar and t is P's table. Variable time: s is public.
func (t *table) addMultiple(acc *edwards25519.Point, s []byte) {
	for i := 0; i < windows; i++ {
		d := s[i/2] >> (4 * (i % 2)) & 15
		if d != 0 {
			acc.Add(acc, &t[i][d-1])
		}
	}
}

var baseTable = sync.OnceValue(func() *table { return newTable(edwards25519.NewGeneratorPoint()) })

// A key gets a table on its second use: building one costs about as much as four verifications, which a key seen once
// (an invite from a stranger) should not pay. At most maxKeys tables are kept (about 150 KB each); when full, the
// cache starts over.
const maxKeys = 64

type keyEntry struct {
	uses int
	neg  *table // of −A; nil until the second use
}

var (
	keysLock sync.Mutex
	keys     = make(map[[ed25519.PublicKeySize]byte]*keyEntry)
)

// negTable returns the table of −A for a key worth one, or nil: the caller then verifies with crypto/ed25519.
func negTable(pub []byte) *table {
	var k [ed25519.PublicKeySize]byte
	copy(k[:], pub)
	keysLock.Lock()
	e := keys[k]
	if e == nil {
		if len(keys) >= maxKeys {
			clear(keys)
		}
		e = &keyEntry{}
		keys[k] = e
	}
	e.uses++
	t, build := e.neg, e.neg == nil && e.uses >= 2
	keysLock.Unlock()
	if !build {
		return t
	}
	a, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		// Not a point: crypto/ed25519 refuses it every time, and so do we.
		return nil
	}
	t = newTable(new(edwards25519.Point).Negate(a))
	keysLock.Lock()
	e.neg = t
	keysLock.Unlock()
	return t
}

// Verify reports whether sig is a valid signature of message by publicKey, with the semantics of
// crypto/ed25519.Verify (RFC 8032 with cofactorless verification, canonical S required, any encoding of A that
// crypto/ed25519 accepts), except that a public key of the wrong length is false rather than a panic.
func Verify(publicKey ed25519.PublicKey, message, sig []byte) bool {
	if len(publicKey) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize || sig[63]&224 != 0 {
		return false
	}
	negA := negTable(publicKey)
	if negA == nil {
		return ed25519.Verify(publicKey, message, sig)
	}
	h := sha512.New()
	h.Write(sig[:32])
	h.Write(publicKey)
	h.Write(message)
	var digest [64]byte
	k, err := new(edwards25519.Scalar).SetUniformBytes(h.Sum(digest[:0]))
	if err != nil {
		return false
	}
	s, err := new(edwards25519.Scalar).SetCanonicalBytes(sig[32:])
	if err != nil {
		return false
	}
	// R' = [S]B − [k]A, the point crypto/ed25519 computes with VarTimeDoubleScalarBaseMult.
	r := edwards25519.NewIdentityPoint()
	baseTable().addMultiple(r, s.Bytes())
	negA.addMultiple(r, k.Bytes())
	return bytes.Equal(sig[:32], r.Bytes())
}
