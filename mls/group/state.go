package group

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/keyschedule"
	"github.com/lmbridge/lmbridge/mls/secrettree"
	"github.com/lmbridge/lmbridge/mls/tree"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// Store keeps groups' saved states, for instance in the application's
// database. A state holds private keys: store it as a secret.
type Store interface {
	// SaveGroup stores state as the group's current state, replacing the
	// previous one (which holds secrets that must now be gone).
	SaveGroup(ctx context.Context, groupID []byte, epoch uint64, state []byte) error
	// LoadGroup returns the group's state, or ErrNoState.
	LoadGroup(ctx context.Context, groupID []byte) ([]byte, error)
}

// ErrNoState is what a Store returns for a group it does not hold.
var ErrNoState = errors.New("group: no saved state")

// ErrInvalidState means a saved state that does not decode.
var ErrInvalidState = errors.New("group: invalid saved state")

// stateVersion tags the state encoding, so that a later one can read it.
// Version 2 adds the trees' cached node hashes, so that a member loaded
// from its state does not re-hash the whole tree on its next commit
// (about a third of processing one at 1,024 members); version 1 states
// still load, hashing on first use.
const stateVersion = 2

// Save writes the group's state to st.
func (g *Group) Save(ctx context.Context, st Store) error {
	if err := st.SaveGroup(ctx, g.ctx.GroupID, g.ctx.Epoch, g.MarshalState()); err != nil {
		return fmt.Errorf("saving group state: %w", err)
	}
	return nil
}

// Load reads a group's state from st.
func Load(ctx context.Context, st Store, groupID []byte, cfg Config) (*Group, error) {
	b, err := st.LoadGroup(ctx, groupID)
	if err != nil {
		return nil, fmt.Errorf("loading group state: %w", err)
	}
	return UnmarshalState(b, cfg)
}

// MarshalState encodes the group's whole state, including a pending commit.
func (g *Group) MarshalState() []byte { return g.marshalState(stateVersion) }

// marshalState encodes the state in a given version (an older one, for
// tests of loading it).
func (g *Group) marshalState(version uint8) []byte {
	var w codec.Writer
	w.Uint8(version)
	w.Uint16(uint16(g.suite.ID()))
	w.Uint32(uint32(g.me))
	w.Opaque(g.sigPriv)
	marshalEpochState(&w, &g.ctx, g.tree, g.keys, g.epoch, version)
	w.Vector(g.secrets.MarshalMLS)
	w.Opaque(g.interim)
	w.Vector(func(w *codec.Writer) {
		for i := range g.proposals {
			p := &g.proposals[i]
			w.Opaque(p.ref)
			p.sender.MarshalMLS(w)
			wire.MarshalProposal(w, p.proposal)
		}
	})
	w.Vector(func(w *codec.Writer) {
		for _, u := range g.pendingUpdates {
			w.Opaque(u.pub)
			w.Opaque(u.priv)
		}
	})
	w.Vector(func(w *codec.Writer) {
		for _, r := range g.resumption {
			w.Uint64(r.epoch)
			w.Opaque(r.secret)
		}
	})
	w.Optional(g.pending != nil, func(w *codec.Writer) {
		p := g.pending
		marshalEpochState(w, &p.ctx, p.tree, p.keys, p.epoch, version)
		w.Opaque(p.tag)
		w.Optional(p.reinit != nil, func(w *codec.Writer) { p.reinit.MarshalMLS(w) })
	})
	w.Optional(g.reinit != nil, func(w *codec.Writer) { g.reinit.MarshalMLS(w) })
	w.Vector(func(w *codec.Writer) {
		for i := range g.past {
			p := &g.past[i]
			w.Uint64(p.epoch)
			w.Opaque(p.ctxBytes)
			rt := p.tree.RatchetTree()
			rt.MarshalMLS(w)
			w.Vector(p.secrets.MarshalMLS)
			w.Opaque(p.senderDataSecret)
		}
	})
	return w.Bytes()
}

func marshalEpochState(w *codec.Writer, ctx *wire.GroupContext, t *tree.Tree, keys *tree.PrivateKeys, e *keyschedule.Epoch, version uint8) {
	ctx.MarshalMLS(w)
	rt := t.RatchetTree()
	rt.MarshalMLS(w)
	if version >= 2 {
		// Trailing blank nodes are not in the ratchet tree, but their
		// hashes are: all the tree's nodes go.
		w.Vector(func(w *codec.Writer) {
			for _, h := range t.NodeHashes() {
				w.Opaque(h)
			}
		})
	}
	keys.MarshalMLS(w)
	for _, s := range epochSecrets(e) {
		w.Opaque(*s)
	}
}

// epochSecrets lists the secrets of an epoch kept in a saved state (the
// joiner and epoch secrets are not needed once the epoch is set up; the
// encryption secret is empty once the secret tree holds it).
func epochSecrets(e *keyschedule.Epoch) []*[]byte {
	return []*[]byte{&e.WelcomeSecret, &e.EncryptionSecret, &e.SenderDataSecret, &e.ExporterSecret, &e.ExternalSecret, &e.ConfirmationKey,
		&e.MembershipKey, &e.ResumptionPSK, &e.EpochAuthenticator, &e.InitSecret}
}

// UnmarshalState restores a group from MarshalState's encoding.
func UnmarshalState(data []byte, cfg Config) (*Group, error) {
	r := codec.NewReader(data)
	v := r.Uint8()
	if v != 1 && v != stateVersion && r.Err() == nil {
		return nil, fmt.Errorf("%w: version %d", ErrInvalidState, v)
	}
	s, err := ciphersuite.Lookup(ciphersuite.ID(r.Uint16()))
	if r.Err() == nil && err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	g := &Group{cfg: cfg, suite: s}
	g.me = treemath.LeafIndex(r.Uint32())
	g.sigPriv = own(r.Opaque())
	var ctx wire.GroupContext
	g.tree, g.keys, g.epoch = unmarshalEpochState(r, s, &ctx, v)
	g.setContext(ctx)
	if r.Err() == nil {
		st, err := secrettree.Decode(s, r.Opaque(), cfg.SecretTree)
		r.Fail(err)
		g.secrets = st
	}
	g.interim = own(r.Opaque())
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			var p cachedProposal
			p.ref = own(r.Opaque())
			p.sender.UnmarshalMLS(r)
			p.proposal = wire.UnmarshalProposal(r)
			g.proposals = append(g.proposals, p)
		}
	})
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			g.pendingUpdates = append(g.pendingUpdates, pendingUpdate{pub: own(r.Opaque()), priv: own(r.Opaque())})
		}
	})
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			g.resumption = append(g.resumption, resumptionPSK{epoch: r.Uint64(), secret: own(r.Opaque())})
		}
	})
	if r.Optional() {
		p := &pendingCommit{}
		p.tree, p.keys, p.epoch = unmarshalEpochState(r, s, &p.ctx, v)
		p.tag = own(r.Opaque())
		p.reinit = unmarshalReInit(r)
		g.pending = p
	}
	g.reinit = unmarshalReInit(r)
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() {
			p := pastEpoch{epoch: r.Uint64(), ctxBytes: own(r.Opaque())}
			var rt wire.RatchetTree
			rt.UnmarshalMLS(r)
			st := r.Opaque()
			p.senderDataSecret = own(r.Opaque())
			if r.Err() != nil {
				return
			}
			var err error
			if p.tree, err = tree.FromRatchetTree(s, rt); err != nil {
				r.Fail(err)
				return
			}
			if p.secrets, err = secrettree.Decode(s, st, cfg.SecretTree); err != nil {
				r.Fail(err)
				return
			}
			g.past = append(g.past, p)
		}
	})
	if err := r.Finish(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	if g.tree.Leaf(g.me) == nil || g.keys.LeafIndex() != g.me {
		return nil, fmt.Errorf("%w: own leaf %d is not in the tree", ErrInvalidState, g.me)
	}
	return g, nil
}

// unmarshalEpochState reads what marshalEpochState wrote; errors are on r.
func unmarshalEpochState(r *codec.Reader, s *ciphersuite.Suite, ctx *wire.GroupContext, version uint8) (*tree.Tree, *tree.PrivateKeys, *keyschedule.Epoch) {
	ctx.UnmarshalMLS(r)
	var rt wire.RatchetTree
	rt.UnmarshalMLS(r)
	var hashes [][]byte
	if version >= 2 {
		r.Vector(func(r *codec.Reader) {
			for !r.Empty() {
				hashes = append(hashes, own(r.Opaque()))
			}
		})
	}
	keys := &tree.PrivateKeys{}
	keys.UnmarshalMLS(r)
	e := &keyschedule.Epoch{Suite: s}
	for _, p := range epochSecrets(e) {
		*p = own(r.Opaque())
	}
	if r.Err() != nil {
		return nil, nil, nil
	}
	t, err := tree.FromRatchetTree(s, rt)
	if err != nil {
		r.Fail(err)
		return nil, nil, nil
	}
	if hashes != nil {
		if err := t.SetNodeHashes(hashes); err != nil {
			r.Fail(err)
			return nil, nil, nil
		}
	}
	if ctx.CipherSuite != s.ID() {
		r.Fail(fmt.Errorf("group context for suite %d", ctx.CipherSuite))
	}
	return t, keys, e
}

func unmarshalReInit(r *codec.Reader) *wire.ReInit {
	if !r.Optional() {
		return nil
	}
	ri := &wire.ReInit{}
	ri.UnmarshalMLS(r)
	return ri
}

// own copies b, so a loaded state does not alias the caller's buffer.
func own(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// MemoryStore is a Store in memory, for tests and for short-lived clients.
type MemoryStore struct {
	mu     sync.Mutex
	groups map[string][]byte
}

// SaveGroup implements Store.
func (m *MemoryStore) SaveGroup(_ context.Context, groupID []byte, _ uint64, state []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.groups == nil {
		m.groups = map[string][]byte{}
	}
	m.groups[string(groupID)] = append([]byte(nil), state...)
	return nil
}

// LoadGroup implements Store.
func (m *MemoryStore) LoadGroup(_ context.Context, groupID []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.groups[string(groupID)]
	if !ok {
		return nil, ErrNoState
	}
	return append([]byte(nil), b...), nil
}
