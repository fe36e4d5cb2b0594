// Package sigverify verifies Ed25519 signatures exactly as crypto/ed25519.Verify does, faster for public keys that
// sign again and again (the hub's and the participants' keys, on every event). crypto/ed25519 decompresses the key
// and computes [S]B − [k]A by a joint double-and-add of about 253 doublings for every signature. Here a key seen
// before has a table of its multiples d·128^i·(−A), so [k](−A) is 37 table additions or subtractions (signed digits)
// and no doubling; [S]B likewise, 29 from a table of the base point. The result is the same group element, encoded
// and compared with R as crypto/ed25519 does, so every input verifies here if and only if it verifies there (see the
// differential tests and fuzzer). VerifyBatch shares the one field inversion that encoding costs among signatures.
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

// table holds d·2^(w·i)·P for every w-bit window i of a 256-bit scalar and every digit 1 ≤ d ≤ 2^(w−1) (index d−1):
// with the scalar written in signed digits −2^(w−1) ≤ d < 2^(w−1), s·P is one addition or subtraction per non-zero
// window, from a table half the size an unsigned one of the same width needs.
type table struct {
	w   int
	pts [][]niels
}

func newTable(p *edwards25519.Point, w int) *table {
	windows := windowsFor(w)
	digits := 1 << (w - 1)
	ext := make([]edwards25519.Point, windows*digits)
	base := new(edwards25519.Point).Set(p)
	for i := 0; i < windows; i++ {
		row := ext[i*digits : (i+1)*digits]
		row[0].Set(base)
		for d := 1; d < digits; d++ {
			row[d].Add(&row[d-1], base)
		}
		// 2^w·base = 2·(2^(w−1)·base).
		base.Add(&row[digits-1], &row[digits-1])
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

// windowsFor is how many signed w-bit digits a scalar below 2^253 takes: the carry out of the last full window
// lands in a window whose value stays far below 2^(w−1), so no digit is left over.
func windowsFor(w int) int {
	return (253 + w) / w
}

// extended is a point in extended coordinates (X:Y:Z:T), x = X/Z, y = Y/Z, xy = T/Z.
type extended struct {
	X, Y, Z, T field.Element
}

// addNiels sets p = p + q, or p − q when sub is set (the complete addition law of twisted Edwards curves with
// a = −1, operand affine). −q is q with y+x and y−x swapped and 2d·x·y negated.
func (p *extended) addNiels(q *niels, sub bool) {
	ypx, ymx := &q.ypx, &q.ymx
	if sub {
		ypx, ymx = ymx, ypx
	}
	var a, b, c, d, e, f, g, h field.Element
	a.Subtract(&p.Y, &p.X)
	a.Multiply(&a, ymx)
	b.Add(&p.Y, &p.X)
	b.Multiply(&b, ypx)
	c.Multiply(&p.T, &q.xy2d)
	d.Add(&p.Z, &p.Z)
	e.Subtract(&b, &a)
	if sub {
		f.Add(&d, &c)
		g.Subtract(&d, &c)
	} else {
		f.Subtract(&d, &c)
		g.Add(&d, &c)
	}
	h.Add(&b, &a)
	p.X.Multiply(&e, &f)
	p.Y.Multiply(&g, &h)
	p.T.Multiply(&e, &h)
	p.Z.Multiply(&f, &g)
}

// matches reports whether the point's encoding is enc. A point with Z = 0 (which the complete addition law never
// gives) matches nothing, rather than encoding as 0 through the inverse of 0.
func (p *extended) matches(enc []byte) bool {
	if p.Z.Equal(new(field.Element).Zero()) == 1 {
		return false
	}
	var zinv field.Element
	zinv.Invert(&p.Z)
	got := p.bytesWith(&zinv)
	return bytes.Equal(enc, got[:])
}

// bytesWith is bytes given 1/Z.
func (p *extended) bytesWith(zinv *field.Element) [32]byte {
	var x, y field.Element
	x.Multiply(&p.X, zinv)
	y.Multiply(&p.Y, zinv)
	var out [32]byte
	copy(out[:], y.Bytes())
	out[31] |= byte(x.IsNegative() << 7)
	return out
}

// addMultiple adds s·P to acc, where s is a little-endian scalar below 2^253 and t is P's table. Variable time: s is
// public.
func (t *table) addMultiple(acc *extended, s []byte) {
	half := 1 << (t.w - 1)
	carry := 0
	for i, row := range t.pts {
		d := carry
		for b, bit := 0, i*t.w; b < t.w && bit < 256; b, bit = b+1, bit+1 {
			d += int(s[bit/8]>>(bit%8)&1) << b
		}
		// Signed digit: d ≥ 2^(w−1) becomes d − 2^w, carrying one into the next window.
		carry = 0
		if d >= half {
			d -= 2 * half
			carry = 1
		}
		switch {
		case d > 0:
			acc.addNiels(&row[d-1], false)
		case d < 0:
			acc.addNiels(&row[-d-1], true)
		}
	}
}

// Window widths of the signed digits: 9 bits for the base point (one table of about 900 KB, 29 additions), 7 bits
// for keys (about 280 KB each, 37 additions).
const (
	baseWindow = 9
	keyWindow  = 7
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
	r, done, ok := point(publicKey, message, sig)
	if done {
		return ok
	}
	return r.matches(sig[:32])
}

// Item is one signature for VerifyBatch.
type Item struct {
	PublicKey ed25519.PublicKey
	Message   []byte
	Signature []byte
}

// VerifyBatch sets ok[i] to what Verify reports for items[i] (ok must be as long as items), computing those whose
// keys have tables with one field inversion between them instead of one each (Montgomery's trick). It is not batch
// verification in RFC 8032's sense, a random combination of the equations checked at once: every signature is
// checked on its own, exactly as Verify checks it, and gets its own answer.
func VerifyBatch(items []Item, ok []bool) {
	ok = ok[:len(items)]
	// Room for the usual batch (an event's sender and hub signatures) without allocating.
	var pointsBuf [4]extended
	var whichBuf [4]int
	var prefixBuf [4]field.Element
	points, which := pointsBuf[:0], whichBuf[:0]
	for i, it := range items {
		r, done, valid := point(it.PublicKey, it.Message, it.Signature)
		if done {
			ok[i] = valid
			continue
		}
		points = append(points, r)
		which = append(which, i)
	}
	if len(points) == 0 {
		return
	}
	// prefix[j] = Z_0···Z_(j−1); one inversion of the product gives every 1/Z_j.
	prefix := prefixBuf[:0]
	if len(points) > len(prefixBuf) {
		prefix = make([]field.Element, 0, len(points))
	}
	prefix = prefix[:len(points)]
	acc := new(field.Element).One()
	for j := range points {
		prefix[j].Set(acc)
		acc.Multiply(acc, &points[j].Z)
	}
	// Z is never zero for a point computed by the complete addition law; if it were, the shared inverse would be
	// wrong for every point, so each is then encoded on its own, and one with Z = 0 refused.
	if acc.Equal(new(field.Element).Zero()) == 1 {
		for j, i := range which {
			ok[i] = points[j].matches(items[i].Signature[:32])
		}
		return
	}
	inv := new(field.Element).Invert(acc)
	var zinv field.Element
	for j := len(points) - 1; j >= 0; j-- {
		zinv.Multiply(inv, &prefix[j])
		inv.Multiply(inv, &points[j].Z)
		enc := points[j].bytesWith(&zinv)
		ok[which[j]] = bytes.Equal(items[which[j]].Signature[:32], enc[:])
	}
}

// point computes R' = [S]B − [k]A, the point crypto/ed25519 computes with VarTimeDoubleScalarBaseMult and compares
// with R. When the answer is known without it (malformed input, or a key without a table, verified by
// crypto/ed25519), done is set and ok is the answer.
func point(publicKey ed25519.PublicKey, message, sig []byte) (r extended, done, ok bool) {
	if len(publicKey) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize || sig[63]&224 != 0 {
		return r, true, false
	}
	negA := negTable(publicKey)
	if negA == nil {
		return r, true, ed25519.Verify(publicKey, message, sig)
	}
	h := sha512.New()
	h.Write(sig[:32])
	h.Write(publicKey)
	h.Write(message)
	var digest [64]byte
	k, err := new(edwards25519.Scalar).SetUniformBytes(h.Sum(digest[:0]))
	if err != nil {
		return r, true, false
	}
	s, err := new(edwards25519.Scalar).SetCanonicalBytes(sig[32:])
	if err != nil {
		return r, true, false
	}
	// Both scalars are below the group order, so below 2^253 as addMultiple needs.
	r.Y.One()
	r.Z.One()
	baseTable().addMultiple(&r, s.Bytes())
	negA.addMultiple(&r, k.Bytes())
	return r, false, false
}
