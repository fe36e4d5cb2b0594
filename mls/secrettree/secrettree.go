// Package secrettree is RFC 9420's secret tree (§9): the per-epoch tree of
// secrets, rooted at the encryption secret, from which each member's
// handshake and application hash ratchets start, and the keys and nonces
// those ratchets yield for PrivateMessage encryption.
//
// It deletes secrets as §9.2 requires: a node's secret once its children's
// are derived, a ratchet secret once the next is, and a key and nonce once
// used. Keys for generations a receiver skips over are kept, up to a
// configurable bound, so that messages arriving out of order can still be
// decrypted once.
package secrettree

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/treemath"
)

// Sentinel errors.
var (
	// ErrLeafOutOfRange means a leaf index not in the tree.
	ErrLeafOutOfRange = errors.New("secrettree: leaf index out of range")
	// ErrGenerationConsumed means the key for that generation was already
	// used or deleted (a replay, or a message older than the window).
	ErrGenerationConsumed = errors.New("secrettree: generation already consumed or expired")
	// ErrTooFarAhead means a generation further beyond the ratchet than
	// Config.MaxForward allows.
	ErrTooFarAhead = errors.New("secrettree: generation too far ahead")
	// ErrExhausted means a ratchet reached the last uint32 generation.
	ErrExhausted = errors.New("secrettree: ratchet exhausted")
)

// RatchetType selects one of a leaf's two ratchets.
type RatchetType uint8

// The two ratchets of each leaf.
const (
	Handshake RatchetType = iota
	Application
)

// Config bounds what a receiver keeps for out-of-order messages.
type Config struct {
	// MaxForward is how many generations past the next expected one a
	// message may be (the receiver derives and keeps keys for all those it
	// skips). Zero means DefaultMaxForward.
	MaxForward uint32
	// MaxSkipped is how many skipped generations' keys a ratchet keeps; the
	// oldest go first. Zero means DefaultMaxSkipped; negative keeps none.
	MaxSkipped int
}

// Defaults for Config's zero fields.
const (
	DefaultMaxForward = 1024
	DefaultMaxSkipped = 64
)

// KeyNonce is one generation's AEAD key and nonce.
type KeyNonce struct {
	Key, Nonce []byte
}

type skipped struct {
	generation uint32
	KeyNonce
}

// ratchet is one hash ratchet (§9.1): secret is for generation next.
type ratchet struct {
	secret []byte
	next   uint32
	// skipped holds keys for generations below next not yet used, oldest
	// first.
	skipped []skipped
}

type leafRatchets struct {
	r [2]*ratchet
}

// Tree is one epoch's secret tree. It is not safe for concurrent use.
type Tree struct {
	suite   *ciphersuite.Suite
	nLeaves uint32
	cfg     Config
	// nodes holds the node secrets not yet consumed. Only the frontier of
	// what has been derived is there, so a map stays small for any size.
	nodes  map[treemath.NodeIndex][]byte
	leaves map[treemath.LeafIndex]*leafRatchets
}

// New makes the secret tree of an epoch with nLeaves leaves from its
// encryption secret. The tree keeps its own copy of the secret.
func New(suite *ciphersuite.Suite, encryptionSecret []byte, nLeaves uint32, cfg Config) *Tree {
	t := &Tree{suite: suite, nLeaves: nLeaves, cfg: cfg.withDefaults(),
		nodes: map[treemath.NodeIndex][]byte{}, leaves: map[treemath.LeafIndex]*leafRatchets{}}
	if nLeaves > 0 {
		t.nodes[treemath.Root(nLeaves)] = append([]byte(nil), encryptionSecret...)
	}
	return t
}

func (c Config) withDefaults() Config {
	if c.MaxForward == 0 {
		c.MaxForward = DefaultMaxForward
	}
	if c.MaxSkipped == 0 {
		c.MaxSkipped = DefaultMaxSkipped
	}
	if c.MaxSkipped < 0 {
		c.MaxSkipped = 0
	}
	return c
}

// LeafCount is the number of leaves the tree was made for.
func (t *Tree) LeafCount() uint32 { return t.nLeaves }

// ratchetFor returns leaf's ratchet of type typ, deriving the leaf's secret
// (and so both its ratchets) on first use.
func (t *Tree) ratchetFor(leaf treemath.LeafIndex, typ RatchetType) (*ratchet, error) {
	if uint32(leaf) >= t.nLeaves {
		return nil, fmt.Errorf("leaf %d of %d: %w", leaf, t.nLeaves, ErrLeafOutOfRange)
	}
	if typ > Application {
		return nil, fmt.Errorf("ratchet type %d: %w", typ, ErrLeafOutOfRange)
	}
	if lr := t.leaves[leaf]; lr != nil {
		return lr.r[typ], nil
	}
	secret := t.leafSecret(leaf.Node())
	if secret == nil {
		// Wiped, or a state that lost it: derive nothing from nothing.
		return nil, fmt.Errorf("leaf %d: %w", leaf, ErrGenerationConsumed)
	}
	nh := t.suite.HashSize()
	lr := &leafRatchets{r: [2]*ratchet{
		{secret: t.suite.ExpandWithLabel(secret, "handshake", nil, nh)},
		{secret: t.suite.ExpandWithLabel(secret, "application", nil, nh)},
	}}
	wipe(secret)
	t.leaves[leaf] = lr
	return lr.r[typ], nil
}

// leafSecret derives the secret of leaf node x from its lowest ancestor
// still holding one, keeping the siblings along the way and deleting each
// consumed parent, then takes the leaf's secret out of the tree.
func (t *Tree) leafSecret(x treemath.NodeIndex) []byte {
	path := treemath.DirectPath(x, t.nLeaves)
	// Find the lowest node on [x, path...] that still has its secret.
	start := -1
	if t.nodes[x] == nil {
		for i, p := range path {
			if t.nodes[p] != nil {
				start = i
				break
			}
		}
		if start < 0 {
			return nil
		}
		nh := t.suite.HashSize()
		for i := start; i >= 0; i-- {
			p := path[i]
			left, right := treemath.Left(p), treemath.Right(p)
			t.nodes[left] = t.suite.ExpandWithLabel(t.nodes[p], "tree", []byte("left"), nh)
			t.nodes[right] = t.suite.ExpandWithLabel(t.nodes[p], "tree", []byte("right"), nh)
			wipe(t.nodes[p])
			delete(t.nodes, p)
		}
	}
	s := t.nodes[x]
	delete(t.nodes, x)
	return s
}

// Next takes the next generation of the sender's own ratchet, for
// encrypting: its key and nonce are returned and deleted from the tree.
func (t *Tree) Next(leaf treemath.LeafIndex, typ RatchetType) (uint32, KeyNonce, error) {
	r, err := t.ratchetFor(leaf, typ)
	if err != nil {
		return 0, KeyNonce{}, err
	}
	if r.secret == nil {
		return 0, KeyNonce{}, ErrExhausted
	}
	g := r.next
	kn := t.advance(r)
	return g, kn, nil
}

// Get returns the key and nonce for a received message of generation g and
// deletes them, so each generation decrypts once. Generations skipped on the
// way are kept within Config's bounds.
func (t *Tree) Get(leaf treemath.LeafIndex, typ RatchetType, g uint32) (KeyNonce, error) {
	r, err := t.ratchetFor(leaf, typ)
	if err != nil {
		return KeyNonce{}, err
	}
	if g < r.next || r.secret == nil {
		for i, s := range r.skipped {
			if s.generation == g {
				r.skipped = append(r.skipped[:i], r.skipped[i+1:]...)
				return s.KeyNonce, nil
			}
		}
		return KeyNonce{}, fmt.Errorf("leaf %d generation %d: %w", leaf, g, ErrGenerationConsumed)
	}
	if g-r.next > t.cfg.MaxForward {
		return KeyNonce{}, fmt.Errorf("leaf %d generation %d, next expected %d: %w", leaf, g, r.next, ErrTooFarAhead)
	}
	for r.next < g {
		gen := r.next
		kn := t.advance(r)
		if r.secret == nil {
			return KeyNonce{}, ErrExhausted
		}
		t.keep(r, skipped{generation: gen, KeyNonce: kn})
	}
	return t.advance(r), nil
}

// Peek returns the key and nonce for generation g like Get but deletes
// nothing, so that a forged message naming g cannot burn the key of the
// genuine one: a receiver peeks, decrypts, and calls Delete on success.
func (t *Tree) Peek(leaf treemath.LeafIndex, typ RatchetType, g uint32) (KeyNonce, error) {
	r, err := t.ratchetFor(leaf, typ)
	if err != nil {
		return KeyNonce{}, err
	}
	if g < r.next || r.secret == nil {
		for _, s := range r.skipped {
			if s.generation == g {
				return s.KeyNonce, nil
			}
		}
		return KeyNonce{}, fmt.Errorf("leaf %d generation %d: %w", leaf, g, ErrGenerationConsumed)
	}
	if g-r.next > t.cfg.MaxForward {
		return KeyNonce{}, fmt.Errorf("leaf %d generation %d, next expected %d: %w", leaf, g, r.next, ErrTooFarAhead)
	}
	s := t.suite
	secret := r.secret
	for gen := r.next; gen < g; gen++ {
		next := s.DeriveTreeSecret(secret, "secret", gen, s.HashSize())
		if gen != r.next {
			wipe(secret)
		}
		secret = next
	}
	kn := KeyNonce{Key: s.DeriveTreeSecret(secret, "key", g, s.KeySize()), Nonce: s.DeriveTreeSecret(secret, "nonce", g, s.NonceSize())}
	if g != r.next {
		wipe(secret)
	}
	return kn, nil
}

// Delete consumes generation g as Get does, once its message decrypted.
func (t *Tree) Delete(leaf treemath.LeafIndex, typ RatchetType, g uint32) error {
	_, err := t.Get(leaf, typ, g)
	return err
}

func (t *Tree) keep(r *ratchet, s skipped) {
	if t.cfg.MaxSkipped == 0 {
		wipe(s.Key)
		wipe(s.Nonce)
		return
	}
	if len(r.skipped) >= t.cfg.MaxSkipped {
		old := r.skipped[0]
		wipe(old.Key)
		wipe(old.Nonce)
		copy(r.skipped, r.skipped[1:])
		r.skipped = r.skipped[:len(r.skipped)-1]
	}
	r.skipped = append(r.skipped, s)
}

// advance derives generation r.next's key and nonce and moves the ratchet
// to the next secret, deleting the old one.
func (t *Tree) advance(r *ratchet) KeyNonce {
	s := t.suite
	g := r.next
	kn := KeyNonce{
		Key:   s.DeriveTreeSecret(r.secret, "key", g, s.KeySize()),
		Nonce: s.DeriveTreeSecret(r.secret, "nonce", g, s.NonceSize()),
	}
	old := r.secret
	if g == ^uint32(0) {
		r.secret = nil
	} else {
		r.secret = s.DeriveTreeSecret(old, "secret", g, s.HashSize())
		r.next = g + 1
	}
	wipe(old)
	return kn
}

// Wipe deletes every secret the tree still holds, when its epoch is over.
func (t *Tree) Wipe() {
	for x, s := range t.nodes {
		wipe(s)
		delete(t.nodes, x)
	}
	for l, lr := range t.leaves {
		for _, r := range lr.r {
			wipe(r.secret)
			r.secret = nil
			for _, s := range r.skipped {
				wipe(s.Key)
				wipe(s.Nonce)
			}
			r.skipped = nil
		}
		delete(t.leaves, l)
	}
}

// SenderDataKeyNonce derives the key and nonce that protect a
// PrivateMessage's sender data (§6.3.2), from the epoch's sender data secret
// and the first Nh bytes of the message's ciphertext.
func SenderDataKeyNonce(suite *ciphersuite.Suite, senderDataSecret, ciphertext []byte) KeyNonce {
	sample := ciphertext
	if len(sample) > suite.HashSize() {
		sample = sample[:suite.HashSize()]
	}
	return KeyNonce{
		Key:   suite.ExpandWithLabel(senderDataSecret, "key", sample, suite.KeySize()),
		Nonce: suite.ExpandWithLabel(senderDataSecret, "nonce", sample, suite.NonceSize()),
	}
}

// wipe overwrites a secret that is being deleted. Go may have copied it
// elsewhere, so this is best effort.
func wipe(b []byte) {
	clear(b)
}

// MarshalMLS encodes the tree's remaining secrets, so that a group's state
// can be saved. The encoding holds key material: store it as a secret.
func (t *Tree) MarshalMLS(w *codec.Writer) {
	w.Uint32(t.nLeaves)
	w.Vector(func(w *codec.Writer) {
		for _, x := range slices.Sorted(maps.Keys(t.nodes)) {
			w.Uint32(uint32(x))
			w.Opaque(t.nodes[x])
		}
	})
	w.Vector(func(w *codec.Writer) {
		for _, l := range slices.Sorted(maps.Keys(t.leaves)) {
			lr := t.leaves[l]
			w.Uint32(uint32(l))
			for _, r := range lr.r {
				w.Optional(r.secret != nil, func(w *codec.Writer) { w.Opaque(r.secret) })
				w.Uint32(r.next)
				w.Vector(func(w *codec.Writer) {
					for _, s := range r.skipped {
						w.Uint32(s.generation)
						w.Opaque(s.Key)
						w.Opaque(s.Nonce)
					}
				})
			}
		}
	})
}

// Decode restores a tree encoded by MarshalMLS.
func Decode(suite *ciphersuite.Suite, data []byte, cfg Config) (*Tree, error) {
	r := codec.NewReader(data)
	n := r.Uint32()
	if r.Err() == nil && n > 1<<30 {
		r.Fail(fmt.Errorf("%d leaves: %w", n, ErrLeafOutOfRange))
	}
	if r.Err() != nil {
		return nil, fmt.Errorf("decoding secret tree: %w", r.Err())
	}
	t := &Tree{suite: suite, nLeaves: n, cfg: cfg.withDefaults(),
		nodes: map[treemath.NodeIndex][]byte{}, leaves: map[treemath.LeafIndex]*leafRatchets{}}
	own := func(b []byte) []byte { return append([]byte{}, b...) }
	// Indices must increase, as MarshalMLS writes them, so that each state
	// has one encoding.
	r.Vector(func(r *codec.Reader) {
		next := uint32(0)
		for !r.Empty() {
			x := r.Uint32()
			s := r.Opaque()
			if x < next || x >= treemath.NodeWidth(n) {
				r.Fail(fmt.Errorf("node %d: %w", x, ErrLeafOutOfRange))
				return
			}
			t.nodes[treemath.NodeIndex(x)] = own(s)
			next = x + 1
		}
	})
	r.Vector(func(r *codec.Reader) {
		next := uint32(0)
		for !r.Empty() {
			l := r.Uint32()
			if l < next || l >= n {
				r.Fail(fmt.Errorf("leaf %d: %w", l, ErrLeafOutOfRange))
				return
			}
			lr := &leafRatchets{}
			for i := range lr.r {
				rt := &ratchet{}
				if r.Optional() {
					rt.secret = own(r.Opaque())
				}
				rt.next = r.Uint32()
				r.Vector(func(r *codec.Reader) {
					for !r.Empty() {
						g := r.Uint32()
						rt.skipped = append(rt.skipped, skipped{generation: g, KeyNonce: KeyNonce{Key: own(r.Opaque()), Nonce: own(r.Opaque())}})
					}
				})
				lr.r[i] = rt
			}
			t.leaves[treemath.LeafIndex(l)] = lr
			next = l + 1
		}
	})
	if err := r.Finish(); err != nil {
		return nil, fmt.Errorf("decoding secret tree: %w", err)
	}
	return t, nil
}
