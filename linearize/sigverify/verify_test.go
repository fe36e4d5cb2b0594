package sigverify

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"testing"

	"filippo.io/edwards25519"
)

// check compares Verify with crypto/ed25519.Verify on one input, over enough calls that the key's table is built and
// used, and fails if a key that is a point got no table (the comparison would then be crypto/ed25519 with itself).
func check(t testing.TB, pub, msg, sig []byte) bool {
	t.Helper()
	keysLock.Lock()
	full := tables >= maxTables-1
	keysLock.Unlock()
	if full {
		resetKeys()
	}
	want := ed25519.Verify(pub, msg, sig)
	for i := 0; i < buildAfter+2; i++ {
		if got := Verify(pub, msg, sig); got != want {
			t.Fatalf("call %d: Verify = %v, crypto/ed25519 = %v\npub %x\nmsg %x\nsig %x", i, got, want, pub, msg, sig)
		}
	}
	// In a batch, between a valid and an invalid signature of a key with a table: each keeps its own answer.
	batch := []Item{decoy, {pub, msg, sig}, {decoy.PublicKey, []byte("other"), decoy.Signature}}
	got := make([]bool, len(batch))
	if VerifyBatch(batch, got); got[0] != true || got[1] != want || got[2] != false {
		t.Fatalf("VerifyBatch = %v, want [true %v false]\npub %x\nmsg %x\nsig %x", got, want, pub, msg, sig)
	}
	if _, err := new(edwards25519.Point).SetBytes(pub); err == nil && len(sig) == 64 && sig[63]&224 == 0 && !hasTable(pub) {
		t.Fatalf("key %x got no table: its table path was not compared", pub)
	}
	return want
}

// decoy is a valid signature by a key that has a table from its first use in a test.
var decoy = func() Item {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte("decoy")
	return Item{pub, msg, ed25519.Sign(priv, msg)}
}()

func resetKeys() {
	keysLock.Lock()
	clear(keys)
	tables = 0
	keysLock.Unlock()
}

func hasTable(pub []byte) bool {
	keysLock.Lock()
	defer keysLock.Unlock()
	e := keys[[32]byte(pub)]
	return e != nil && e.neg != nil
}

// With every table taken by keys in use, a new busy key does without (and still verifies correctly) rather than
// evicting a table in use; once a table has gone stale, the new key takes its place at its next retry.
func TestTablesAreNotRebuiltInALoop(t *testing.T) {
	resetKeys()
	defer resetKeys()
	msg := []byte("m")
	for i := 0; i < maxTables; i++ {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		sig := ed25519.Sign(priv, msg)
		for j := 0; j < buildAfter; j++ {
			Verify(pub, msg, sig)
		}
		if !hasTable(pub) {
			t.Fatalf("key %d got no table", i)
		}
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sig := ed25519.Sign(priv, msg)
	for i := 0; i < 2*buildAfter; i++ {
		if !Verify(pub, msg, sig) {
			t.Fatal("a key without a table failed to verify")
		}
	}
	if hasTable(pub) {
		t.Fatal("a new key took the table of a key in use")
	}
	keysLock.Lock()
	clock += staleAfter
	keys[[32]byte(pub)].uses = retryEvery - 1
	keysLock.Unlock()
	if !Verify(pub, msg, sig) || !hasTable(pub) {
		t.Fatal("the new key did not replace a stale table at its retry")
	}
	keysLock.Lock()
	n := tables
	keysLock.Unlock()
	if n != maxTables {
		t.Fatalf("%d tables after replacing one, want %d", n, maxTables)
	}
}

// order is the group order l, little-endian.
var order = [32]byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}

// addLE returns a+b for little-endian 256-bit numbers (mod 2^256).
func addLE(a, b []byte) []byte {
	out := make([]byte, 32)
	carry := 0
	for i := 0; i < 32; i++ {
		v := int(a[i]) + int(b[i]) + carry
		out[i], carry = byte(v), v>>8
	}
	return out
}

func flip(b []byte, bit int) []byte {
	out := append([]byte(nil), b...)
	out[bit/8] ^= 1 << (bit % 8)
	return out
}

func TestMatchesCryptoEd25519OnValidAndCorruptedSignatures(t *testing.T) {
	valid := 0
	for n := 0; n < 40; n++ {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		msg := make([]byte, n*7)
		_, _ = rand.Read(msg)
		sig := ed25519.Sign(priv, msg)
		if !check(t, pub, msg, sig) {
			t.Fatal("a valid signature does not verify")
		}
		valid++
		for i := 0; i < 8; i++ {
			var r [2]byte
			_, _ = rand.Read(r[:])
			bit := int(r[0])<<8 | int(r[1])
			if check(t, pub, msg, flip(sig, bit%512)) {
				t.Fatal("a signature with a flipped bit verifies")
			}
			if len(msg) > 0 && check(t, pub, flip(msg, bit%(len(msg)*8)), sig) {
				t.Fatal("a changed message verifies")
			}
			check(t, flip(pub, bit%256), msg, sig)
		}
		// Non-canonical S: S+l has the same value mod l but must be refused, as crypto/ed25519 does.
		nonCanonical := append(append([]byte(nil), sig[:32]...), addLE(sig[32:], order[:])...)
		if check(t, pub, msg, nonCanonical) {
			t.Fatal("S+l verifies")
		}
		for _, top := range []byte{0x20, 0x40, 0x80} {
			s := append([]byte(nil), sig...)
			s[63] |= top
			check(t, pub, msg, s)
		}
	}
	// Keys of the wrong length are false, not a panic.
	if Verify(make([]byte, 31), nil, make([]byte, 64)) || Verify(make([]byte, 33), nil, make([]byte, 64)) {
		t.Fatal("a short or long key verifies")
	}
	if valid == 0 {
		t.Fatal("no valid signature tried")
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// oddEncodings are the encodings where implementations disagree: the eight small-order points, non-canonical
// encodings (y ≥ p, x = 0 with the sign bit set) and a y that is not on the curve.
func oddEncodings() [][]byte {
	encs := [][]byte{
		mustHex("0100000000000000000000000000000000000000000000000000000000000000"), // identity
		mustHex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"), // order 2
		mustHex("0000000000000000000000000000000000000000000000000000000000000000"), // order 4
		mustHex("0000000000000000000000000000000000000000000000000000000000000080"), // order 4
		mustHex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), // order 8
		mustHex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
		mustHex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
		mustHex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
		mustHex("0100000000000000000000000000000000000000000000000000000000000080"), // identity, x sign set
		mustHex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"), // order 2, x sign set
		mustHex("0200000000000000000000000000000000000000000000000000000000000000"), // not on the curve
	}
	// y + p for small y: non-canonical encodings of y (y = 0, 1 are small-order points).
	for y := 0; y < 19; y++ {
		e := mustHex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
		e[0] += byte(y)
		encs = append(encs, e, flip(e, 255))
	}
	return encs
}

// signWith signs msg with secret scalar a and nonce r under the encoded key pubEnc, which need not be [a]B: that is
// how a signature for a key with a small-order component is made.
func signWith(a, r *edwards25519.Scalar, pubEnc, msg []byte) []byte {
	R := new(edwards25519.Point).ScalarBaseMult(r).Bytes()
	h := sha512.New()
	h.Write(R)
	h.Write(pubEnc)
	h.Write(msg)
	k, _ := new(edwards25519.Scalar).SetUniformBytes(h.Sum(nil))
	s := new(edwards25519.Scalar).MultiplyAdd(k, a, r)
	return append(R, s.Bytes()...)
}

func randomScalar() *edwards25519.Scalar {
	var b [64]byte
	_, _ = rand.Read(b[:])
	s, _ := new(edwards25519.Scalar).SetUniformBytes(b[:])
	return s
}

func TestMatchesCryptoEd25519OnSmallOrderAndNonCanonicalPoints(t *testing.T) {
	odd := oddEncodings()
	msgs := [][]byte{nil, []byte("lmbridge")}
	scalars := [][]byte{make([]byte, 32), append([]byte{1}, make([]byte, 31)...), randomScalar().Bytes(), order[:],
		addLE(order[:], append([]byte{1}, make([]byte, 31)...))}
	verified := 0
	for _, a := range odd {
		for _, r := range odd {
			for _, s := range scalars {
				for _, m := range msgs {
					if check(t, a, m, append(append([]byte(nil), r...), s...)) {
						verified++
					}
				}
			}
		}
	}
	// Mixed-order keys: A' = [a]B + T for a small-order T, signed as if A' were the key. crypto/ed25519 accepts some
	// of these (when k·T is the identity) and refuses the rest; so must we.
	for _, tEnc := range odd[:8] {
		tp, err := new(edwards25519.Point).SetBytes(tEnc)
		if err != nil {
			t.Fatalf("small-order point %x does not decode", tEnc)
		}
		for i := 0; i < 16; i++ {
			a := randomScalar()
			pub := new(edwards25519.Point).Add(new(edwards25519.Point).ScalarBaseMult(a), tp).Bytes()
			msg := []byte{byte(i)}
			if check(t, pub, msg, signWith(a, randomScalar(), pub, msg)) {
				verified++
			}
		}
	}
	if verified == 0 {
		t.Fatal("no odd input verified in either implementation: the cases test nothing")
	}
	t.Logf("%d odd inputs verified in both implementations", verified)
}

func FuzzVerifyMatchesCryptoEd25519(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	f.Add([]byte(pub), []byte("hello"), ed25519.Sign(priv, []byte("hello")))
	odd := oddEncodings()
	for _, e := range odd[:8] {
		f.Add(e, []byte("m"), append(append([]byte(nil), e...), make([]byte, 32)...))
	}
	f.Fuzz(func(t *testing.T, pub, msg, sig []byte) {
		if len(pub) != ed25519.PublicKeySize {
			if Verify(pub, msg, sig) {
				t.Fatal("a key of the wrong length verifies")
			}
			return
		}
		check(t, pub, msg, sig)
	})
}

// BenchmarkVerify compares one verification of a 400-byte message by a key seen before, here (alone and two to a
// batch) and in crypto/ed25519.
func BenchmarkVerify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 400)
	sig := ed25519.Sign(priv, msg)
	b.Run("sigverify", func(b *testing.B) {
		for i := 0; i <= buildAfter; i++ {
			Verify(pub, msg, sig)
		}
		b.ReportAllocs()
		for b.Loop() {
			if !Verify(pub, msg, sig) {
				b.Fatal("does not verify")
			}
		}
	})
	// Two signatures in one VerifyBatch, as an event's sender and hub signatures are checked; per signature.
	b.Run("batch_of_2", func(b *testing.B) {
		items := []Item{{pub, msg, sig}, {pub, msg, sig}}
		ok := make([]bool, 2)
		VerifyBatch(items, ok)
		b.ReportAllocs()
		for b.Loop() {
			if VerifyBatch(items, ok); !ok[0] || !ok[1] {
				b.Fatal("does not verify")
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/signature")
	})
	b.Run("crypto_ed25519", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("does not verify")
			}
		}
	})
}

// TestVerifyBatchMatchesCryptoEd25519 checks batches mixing keys with tables, a key without one and malformed input,
// valid and corrupted signatures: every item gets crypto/ed25519's answer.
func TestVerifyBatchMatchesCryptoEd25519(t *testing.T) {
	resetKeys()
	defer resetKeys()
	type signer struct {
		pub  ed25519.PublicKey
		priv ed25519.PrivateKey
	}
	var signers []signer
	for i := 0; i < 4; i++ {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		signers = append(signers, signer{pub, priv})
	}
	// All but the last key get their tables.
	for _, sg := range signers[:3] {
		for i := 0; i < buildAfter; i++ {
			Verify(sg.pub, nil, ed25519.Sign(sg.priv, nil))
		}
		if !hasTable(sg.pub) {
			t.Fatal("a key got no table")
		}
	}
	for round := 0; round < 20; round++ {
		var items []Item
		for i := 0; i < 12; i++ {
			sg := signers[(round+i)%len(signers)]
			msg := []byte{byte(round), byte(i)}
			sig := ed25519.Sign(sg.priv, msg)
			switch i % 4 {
			case 1:
				sig = flip(sig, (round*31+i*7)%512)
			case 2:
				msg = append(msg, 'x')
			}
			items = append(items, Item{sg.pub, msg, sig})
		}
		items = append(items, Item{signers[0].pub, nil, make([]byte, 63)}, Item{make([]byte, 31), nil, make([]byte, 64)})
		got := make([]bool, len(items))
		VerifyBatch(items, got)
		valid := 0
		for i, it := range items {
			want := len(it.PublicKey) == ed25519.PublicKeySize && ed25519.Verify(it.PublicKey, it.Message, it.Signature)
			if got[i] != want {
				t.Fatalf("round %d item %d: VerifyBatch = %v, crypto/ed25519 = %v", round, i, got[i], want)
			}
			if want {
				valid++
			}
		}
		if valid == 0 || valid == len(items) {
			t.Fatalf("round %d: %d of %d valid, want a mix", round, valid, len(items))
		}
	}
}

// TestPointWithZeroZMatchesNothing: the inverse of 0 is 0, so a point with Z = 0 would encode as 32 zero bytes, the
// encoding of a real point (y = 0); it must match nothing instead.
func TestPointWithZeroZMatchesNothing(t *testing.T) {
	var p extended
	p.Y.One()
	if p.matches(make([]byte, 32)) {
		t.Fatal("a point with Z = 0 matched the all-zero encoding")
	}
	p.Z.One()
	if p.matches(make([]byte, 32)) || !p.matches(mustHex("0100000000000000000000000000000000000000000000000000000000000000")) {
		t.Fatal("the identity (0, 1) does not encode as 01 00 … 00")
	}
}
