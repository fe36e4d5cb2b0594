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
	"filippo.io/edwards25519/field"
)

// niels is a point in the form mixed addition wants: y+x, y−x and 2d·x·y of its affine coordinates (Z = 1), which
// saves the multiplications that Point.Add spends on converting its operand and on the operand's Z.
type niels struct {
	ypx, ymx, xy2d field.Element
}

// curveD2 is 2d, with d = −121665/121666 the constant of the curve equation.
var curveD2 = func() *field.Element {
	num, den := smallElement(121665), smallElement(121666)
	d := new(field.Element).Multiply(new(field.Element).Negate(num), new(field.Element).Invert(den))
	return d.Add(d, d)
}()

func smallElement(n uint32) *field.Element {
	var b [32]byte
	b[0], b[1], b[2], b[3] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
	e, _ := new(field.Element).SetBytes(b[:])
	return e
}

// table holds d·2^(w·i)·P for every w-bit window i of a 256-bit scalar and every digit 1 ≤ d < 2^w (index d−1), so
// that s·P is one addition per non-zero window.
type table struct {
	w   int
	pts [][]niels
}

func newTable(p *edwards25519.Point, w int) *table {
	windows := (256 + w - 1) / w
	digits := 1<<w - 1
	ext := make([]edwards25519.Point, windows*digits)
	base := new(edwards25519.Point).Set(p)
	for i := 0; i < windows; i++ {
		row := ext[i*digits : (i+1)*digits]
		row[0].Set(base)
		for d := 1; d < digits; d++ {
			row[d].Add(&row[d-1], base)
		}
		// 2^w·base = (2^w−1)·base + base.
		base.Add(&row[digits-1], base)
	}
	// To affine coordinates, inverting every Z at the price of one inversion (Montgomery's trick).
	zs := make([]field.Element, len(ext))
	xs := make([]field.Element, len(ext))
	ys := make([]field.Element, len(ext))
	for k := range ext {
		x, y, z, _ := ext[k].ExtendedCoordinates()
		xs[k], ys[k], zs[k] = *x, *y, *z
	}
	prefix := make([]field.Element, len(ext))
	acc := new(field.Element).One()
	for k := range zs {
		prefix[k].Set(acc)
		acc.Multiply(acc, &zs[k])
	}
	inv := new(field.Element).Invert(acc)
	t := &table{w: w, pts: make([][]niels, windows)}
	flat := make([]niels, len(ext))
	var zinv, x, y field.Element
	for k := len(ext) - 1; k >= 0; k-- {
		zinv.Multiply(inv, &prefix[k])
		inv.Multiply(inv, &zs[k])
		x.Multiply(&xs[k], &zinv)
		y.Multiply(&ys[k], &zinv)
		n := &flat[k]
		n.ypx.Add(&y, &x)
		n.ymx.Subtract(&y, &x)
		n.xy2d.Multiply(&x, &y)
		n.xy2d.Multiply(&n.xy2d, curveD2)
	}
	for i := range t.pts {
		t.pts[i] = flat[i*digits : (i+1)*digits]
	}
	return t
}

// extended is a point in extended coordinates (X:Y:Z:T), x = X/Z, y = Y/Z, xy = T/Z.
type extended struct {
	X, Y, Z, T field.Element
}

func newIdentity() *extended {
	var p extended
	p.Y.One()
	p.Z.One()
	return &p
}

// addNiels sets p = p + q (the complete addition law of twisted Edwards curves with a = −1, operand affine).
func (p *extended) addNiels(q *niels) {
	var a, b, c, d, e, f, g, h field.Element
	a.Subtract(&p.Y, &p.X)
	a.Multiply(&a, &q.ymx)
	b.Add(&p.Y, &p.X)
	b.Multiply(&b, &q.ypx)
	c.Multiply(&p.T, &q.xy2d)
	d.Add(&p.Z, &p.Z)
	e.Subtract(&b, &a)
	f.Subtract(&d, &c)
	g.Add(&d, &c)
	h.Add(&b, &a)
	p.X.Multiply(&e, &f)
	p.Y.Multiply(&g, &h)
	p.T.Multiply(&e, &h)
	p.Z.Multiply(&f, &g)
}

// bytes is the point's 32-byte encoding: y, with the sign of x in the top bit.
func (p *extended) bytes() [32]byte {
	var zinv, x, y field.Element
	zinv.Invert(&p.Z)
	x.Multiply(&p.X, &zinv)
	y.Multiply(&p.Y, &zinv)
	var out [32]byte
	copy(out[:], y.Bytes())
	out[31] |= byte(x.IsNegative() << 7)
	return out
}

// addMultiple adds s·P to acc, where s is a little-endian scalar and t is P's table. Variable time: s is public.
func (t *table) addMultiple(acc *extended, s []byte) {
	for i, row := range t.pts {
		d := 0
		for b, bit := 0, i*t.w; b < t.w && bit < 256; b, bit = b+1, bit+1 {
			d |= int(s[bit/8]>>(bit%8)&1) << b
		}
		if d != 0 {
			acc.addNiels(&row[d-1])
		}
	}
}

// Window widths: 8 bits for the base point (one table of about 1 MB, 32 additions), 6 bits for keys (about 300 KB
// each, 43 additions).
const (
	baseWindow = 8
	keyWindow  = 6
)

var baseTable = sync.OnceValue(func() *table { return newTable(edwards25519.NewGeneratorPoint(), baseWindow) })

// Which keys get a table. Building one costs about forty verifications, so a key gets one only once it has been used
// buildAfter times (an invite from a stranger does not pay for a table). At most maxTables tables (about 300 KB each)
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
	r := newIdentity()
	baseTable().addMultiple(r, s.Bytes())
	negA.addMultiple(r, k.Bytes())
	enc := r.bytes()
	return bytes.Equal(sig[:32], enc[:])
}
