package group

import (
	"bytes"
	"crypto/rand"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/framing"
	"github.com/lmbridge/lmbridge/mls/keyschedule"
	"github.com/lmbridge/lmbridge/mls/tree"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// Create starts a new group of one member, id, in epoch 0 (§11).
// extensions are the GroupContext's (nil for none).
func Create(cfg Config, s *ciphersuite.Suite, groupID []byte, id *Identity, extensions wire.Extensions) (*Group, error) {
	kp, priv, err := NewKeyPackage(s, id)
	if err != nil {
		return nil, fmt.Errorf("creating group: %w", err)
	}
	g := &Group{cfg: cfg, suite: s, sigPriv: id.SigPriv, me: 0}
	g.tree = tree.New(s, &kp.LeafNode)
	g.keys = tree.NewPrivateKeys(0, priv.EncryptionPriv)
	if err := g.checkContextExtensions(g.tree, extensions); err != nil {
		return nil, fmt.Errorf("creating group: %w", err)
	}
	g.setContext(wire.GroupContext{Version: wire.MLS10, CipherSuite: s.ID(), GroupID: groupID,
		TreeHash: g.tree.Hash(), ConfirmedTranscriptHash: []byte{}, Extensions: extensions})
	initSecret := make([]byte, s.HashSize())
	if _, err := rand.Read(initSecret); err != nil {
		return nil, fmt.Errorf("creating group: %w", err)
	}
	e := nextEpoch(s, initSecret, nil, nil, g.ctxBytes)
	g.startEpoch(e, framing.ConfirmationTag(s, e.ConfirmationKey, g.ctx.ConfirmedTranscriptHash))
	return g, nil
}

// JoinOptions are the optional inputs of Join.
type JoinOptions struct {
	// RatchetTree is the group's tree when the Welcome's GroupInfo has no
	// ratchet_tree extension (the delivery service hands it out of band).
	RatchetTree wire.RatchetTree
}

// Join joins a group from a Welcome addressed to kp (§12.4.3.1). kp and
// priv are the KeyPackage and its private keys; delete them afterwards.
func Join(cfg Config, w *wire.Welcome, kp *wire.KeyPackage, priv *KeyPackagePrivate, opts JoinOptions) (*Group, error) {
	s, err := ciphersuite.Lookup(w.CipherSuite)
	if err != nil {
		return nil, fmt.Errorf("joining: %w", err)
	}
	if kp.CipherSuite != w.CipherSuite {
		return nil, fmt.Errorf("%w: welcome for suite %d, key package for %d", ErrInvalidWelcome, w.CipherSuite, kp.CipherSuite)
	}
	gs, err := w.DecryptGroupSecrets(s, kp.Ref(s), priv.InitPriv)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidWelcome, err)
	}
	pskSecret, err := pskSecretFrom(s, gs.PSKs, cfg, nil)
	if err != nil {
		return nil, fmt.Errorf("joining: %w", err)
	}
	gi, err := w.DecryptGroupInfo(s, keyschedule.WelcomeSecret(s, gs.JoinerSecret, pskSecret))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidWelcome, err)
	}
	gc := &gi.GroupContext
	t, err := verifiedTree(s, gi, opts.RatchetTree)
	if err != nil {
		return nil, err
	}

	g := &Group{cfg: cfg, suite: s, sigPriv: priv.SigPriv, tree: t}
	found := false
	t.Members(func(l treemath.LeafIndex, ln *wire.LeafNode) bool {
		if bytes.Equal(ln.EncryptionKey, kp.LeafNode.EncryptionKey) && bytes.Equal(ln.SignatureKey, kp.LeafNode.SignatureKey) {
			g.me, found = l, true
			return false
		}
		return true
	})
	if !found {
		return nil, fmt.Errorf("%w: our leaf is not in the tree", ErrInvalidWelcome)
	}
	if err := g.checkJoinedTree(t, gc.Extensions); err != nil {
		return nil, fmt.Errorf("joining: %w", err)
	}
	if err := checkWelcomePSKs(cfg, gi, gs.PSKs, t.Members); err != nil {
		return nil, fmt.Errorf("joining: %w", err)
	}
	g.keys = tree.NewPrivateKeys(g.me, priv.EncryptionPriv)
	if gs.PathSecret != nil {
		x := treemath.CommonAncestor(g.me.Node(), gi.Signer.Node())
		if _, err := g.keys.ImportPathSecret(t, x, gs.PathSecret); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidWelcome, err)
		}
	}

	g.setContext(*gc)
	e := keyschedule.FromJoiner(s, gs.JoinerSecret, pskSecret, g.ctxBytes)
	if err := framing.VerifyConfirmationTag(s, e.ConfirmationKey, gc.ConfirmedTranscriptHash, gi.ConfirmationTag); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidWelcome, err)
	}
	g.startEpoch(e, gi.ConfirmationTag)
	return g, nil
}

// GroupInfo is a signed GroupInfo for the current epoch, for external joins
// (with the external_pub extension) and for MIMI. withTree adds the
// ratchet_tree extension.
func (g *Group) GroupInfo(withTree bool) (*wire.GroupInfo, error) {
	_, pub, err := g.epoch.ExternalKeyPair()
	if err != nil {
		return nil, err
	}
	exts := wire.Extensions{wire.NewExtension(wire.ExtensionExternalPub, &wire.ExternalPub{PublicKey: pub})}
	return g.signGroupInfo(exts, withTree)
}

func (g *Group) signGroupInfo(exts wire.Extensions, withTree bool) (*wire.GroupInfo, error) {
	if withTree {
		rt := g.tree.RatchetTree()
		exts = append(exts, wire.NewExtension(wire.ExtensionRatchetTree, &rt))
	}
	gi := &wire.GroupInfo{
		GroupContext:    g.ctx,
		Extensions:      exts,
		ConfirmationTag: framing.ConfirmationTag(g.suite, g.epoch.ConfirmationKey, g.ctx.ConfirmedTranscriptHash),
		Signer:          g.me,
	}
	if err := gi.Sign(g.suite, g.sigPriv); err != nil {
		return nil, err
	}
	return gi, nil
}

// checkJoinedTree makes a joiner's checks of every leaf (§12.4.3.1, §7.3)
// beyond the tree's own (signatures, parent hashes, unique keys): the
// authentication service accepts its credential; it supports the group's
// version, suite, required capabilities and context extensions, and the
// credential types of all the others; and a key_package leaf is within
// its lifetime (give or take Config.LifetimeTolerance), with
// Config.CheckTreeLifetimes.
func (g *Group) checkJoinedTree(t *tree.Tree, exts wire.Extensions) error {
	if err := g.checkContextExtensions(t, exts); err != nil {
		return err
	}
	now := g.now()
	var err error
	t.Members(func(l treemath.LeafIndex, ln *wire.LeafNode) bool {
		if err = g.validateCredential(ln); err != nil {
			err = fmt.Errorf("leaf %d: %w", l, err)
			return false
		}
		if err = checkCapabilities(t, ln, g.suite.ID(), exts, l, true); err != nil {
			err = fmt.Errorf("leaf %d: %w", l, err)
			return false
		}
		if ln.Source == wire.SourceKeyPackage && g.cfg.CheckTreeLifetimes {
			if err = checkLifetime(&ln.Lifetime, now, g.cfg.LifetimeTolerance); err != nil {
				err = fmt.Errorf("%w: leaf %d: %w", ErrInvalidWelcome, l, err)
				return false
			}
		}
		return true
	})
	return err
}
