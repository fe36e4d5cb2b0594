// Package sigverify verifies Ed25519 signatures exactly as crypto/ed25519.Verify does, faster for public keys that
// sign again and again (the hub's and the participants' keys, on every event). crypto/ed25519 decompresses the key
// and computes [S]B − [k]A by a joint double-and-add of about 253 doublings for every signature. Here a key seen
// before has a table of its multiples d·64^i·(−A), so [k](−A) is 43 table additions and no doubling; [S]B likewise,
// 32 additions from a table of the base point. The result is the same group element, encoded and compared with R as crypto/ed25519
// does, so every input verifies here if and only if it verifies there (see the differential tests and fuzzer).
package sigverify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"sync"

	"filippo.io/edwards25519"
)

// table holds d·2^(w·i)·P for every w-bit window i of a 256-bit scalar and every digit 1 ≤ d < 2^w (index d−1), so
// that s·P is one addition per non-zero window.
type table struct {
	w   int
	pts [][]edwards25519.Point
}

func newTable(p *edwards25519.Point, w int) *table {
	t := &table{w: w, pts: make([][]edwards25519.Point, (256+w-1)/w)}
	digits := 1<<w - 1
	base := new(edwards25519.Point).Set(p)
	for i := range t.pts {
		row := make([]edwards25519.Point, digits)
		row[0].Set(base)
		for d := 1; d < digits; d++ {
			row[d].Add(&row[d-1], base)
		}
		// 2^w·base = (2^w−1)·base + base.
		base.Add(&row[digits-1], base)
		t.pts[i] = row
	}
	return t
}

// addMultiple adds s·P to acc, where s is a little-endian scalar and t is P's table. Variable time: s is public.
func (t *table) addMultiple(acc *edwards25519.Point, s []byte) {
	for i, row := range t.pts {
		d := 0
		for b, bit := 0, i*t.w; b < t.w && bit < 256; b, bit = b+1, bit+1 {
			d |= int(s[bit/8]>>(bit%8)&1) << b
		}
		if d != 0 {
			acc.Add(acc, &row[d-1])
		}
	}
}

// Window widths: 8 bits for the base point (one table of 1.3 MB, 32 additions), 6 bits for keys (about 430 KB each,
// 43 additions).
const (
	baseWindow = 8
	keyWindow  = 6
)

var baseTable = sync.OnceValue(func() *table { return newTable(edwards25519.NewGeneratorPoint(), baseWindow) })

// Which keys get a table. Building one costs about forty verifications, so a key gets one only once it has been used
// buildAfter times (an invite from a stranger does not pay for a table). At most maxTables tables (about 430 KB each)
// exist: when they are all taken, the least recently used one is replaced only if it has gone stale (unused for
// staleAfter verifications), else the new key does without, tried again every retryEvery uses. So a server talking to
// more than maxTables busy peers verifies some of them at crypto/ed25519's speed but never rebuilds tables in a loop.
// Counters of keys without a table are dropped when there are maxCounted of them.
const (
	buildAfter = 4
	maxTables  = 32
	staleAfter = 100_000
	retryEvery = 4096
	maxCounted = 4096
)

type keyEntry struct {
	uses     int
	lastUse  uint64
	neg      *table // of −A
	building bool
}

var (
	keysLock sync.Mutex
	keys     = make(map[[ed25519.PublicKeySize]byte]*keyEntry)
	tables   int
	clock    uint64
)

// negTable returns the table of −A for a key worth one, or nil: the caller then verifies with crypto/ed25519.
func negTable(pub []byte) *table {
	var k [ed25519.PublicKeySize]byte
	copy(k[:], pub)
	keysLock.Lock()
	clock++
	e := keys[k]
	if e == nil {
		if len(keys) >= maxCounted {
			for key, entry := range keys {
				if entry.neg == nil && !entry.building {
					delete(keys, key)
				}
			}
		}
		e = &keyEntry{}
		keys[k] = e
	}
	e.uses++
	e.lastUse = clock
	if e.neg != nil || e.building || e.uses < buildAfter || (e.uses > buildAfter && e.uses%retryEvery != 0) {
		t := e.neg
		keysLock.Unlock()
		return t
	}
	if tables >= maxTables && !evictStale() {
		keysLock.Unlock()
		return nil
	}
	e.building = true
	tables++
	keysLock.Unlock()

	var t *table
	if a, err := new(edwards25519.Point).SetBytes(pub); err == nil {
		t = newTable(new(edwards25519.Point).Negate(a), keyWindow)
	}
	// A key that is not a point gets no table: crypto/ed25519 refuses it every time, and so do we.
	keysLock.Lock()
	e.building = false
	e.neg = t
	if t == nil {
		tables--
	}
	keysLock.Unlock()
	return t
}

// evictStale drops the least recently used table if it has gone stale. Called with keysLock held.
func evictStale() bool {
	var victim *keyEntry
	for _, entry := range keys {
		if entry.neg != nil && (victim == nil || entry.lastUse < victim.lastUse) {
			victim = entry
		}
	}
	if victim == nil || clock-victim.lastUse < staleAfter {
		return false
	}
	victim.neg = nil
	victim.uses = 0
	tables--
	return true
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
