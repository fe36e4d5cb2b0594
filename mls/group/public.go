package group

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/framing"
	"github.com/lmbridge/lmbridge/mls/tree"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// PublicGroup is a delivery service's view of a group: it follows the
// ratchet tree and GroupContext from PublicMessage proposals and commits
// without being a member, so a hub that sequences commits can check each
// one (current epoch, sender, signature, proposals, path, tree) and refuse
// a stale epoch or a second commit for an epoch already closed. It cannot
// check membership or confirmation tags, which need the epoch's secrets.
type PublicGroup struct {
	g Group
}

// noLeaf is the leaf index of a PublicGroup's "self": none.
const noLeaf = treemath.LeafIndex(1<<32 - 1)

// NewPublicGroup starts following a group from a signed GroupInfo and its
// tree (from the ratchet_tree extension, else rt).
func NewPublicGroup(cfg Config, gi *wire.GroupInfo, rt wire.RatchetTree) (*PublicGroup, error) {
	s, err := ciphersuite.Lookup(gi.GroupContext.CipherSuite)
	if err != nil {
		return nil, fmt.Errorf("following group: %w", err)
	}
	t, err := verifiedTree(s, gi, rt)
	if err != nil {
		return nil, err
	}
	p := &PublicGroup{g: Group{cfg: cfg, suite: s, tree: t, me: noLeaf}}
	p.g.setContext(gi.GroupContext)
	p.g.interim = interimHash(s, gi.GroupContext.ConfirmedTranscriptHash, gi.ConfirmationTag)
	if err := p.g.checkJoinedTree(t, gi.GroupContext.Extensions); err != nil {
		return nil, fmt.Errorf("following group: %w", err)
	}
	return p, nil
}

// Epoch is the current epoch.
func (p *PublicGroup) Epoch() uint64 { return p.g.ctx.Epoch }

// ReInit is the ReInit a commit closed the group with, or nil; once set,
// Process refuses every message (ErrGroupClosed).
func (p *PublicGroup) ReInit() *wire.ReInit { return p.g.reinit }

// Context is the current GroupContext. Do not modify it.
func (p *PublicGroup) Context() *wire.GroupContext { return &p.g.ctx }

// Tree is the current ratchet tree. Do not modify it.
func (p *PublicGroup) Tree() *tree.Tree { return p.g.tree }

// Process checks a handshake message and, if it is valid, caches a
// proposal or applies a commit. Application messages and PrivateMessage
// handshakes cannot be checked without the group's secrets: ErrWireFormat.
func (p *PublicGroup) Process(m *wire.MLSMessage) (*Processed, error) {
	pm := m.PublicMessage
	if pm == nil {
		return nil, fmt.Errorf("following group: %w: only PublicMessage handshakes can be checked", ErrWireFormat)
	}
	g := &p.g
	if g.reinit != nil {
		return nil, ErrGroupClosed
	}
	if err := g.checkGroupEpoch(pm.Content.GroupID, pm.Content.Epoch); err != nil {
		return nil, err
	}
	ac := &framing.AuthenticatedContent{WireFormat: wire.WireFormatPublicMessage, Content: pm.Content, Auth: pm.Auth}
	pub, err := g.senderKey(ac)
	if err != nil {
		return nil, err
	}
	if err := ac.Verify(g.suite, pub, g.ctxBytes); err != nil {
		return nil, err
	}
	out := &Processed{Sender: ac.Content.Sender, AuthenticatedData: ac.Content.AuthenticatedData}
	switch ac.Content.ContentType {
	case wire.ContentProposal:
		if err := g.cacheProposal(ac); err != nil {
			return nil, err
		}
		out.Kind, out.Proposal = KindProposal, ac.Content.Proposal
	case wire.ContentCommit:
		st, err := g.stageCommit(ac)
		if err != nil {
			return nil, fmt.Errorf("checking commit: %w", err)
		}
		ctx := st.ctx
		ctx.ConfirmedTranscriptHash = st.confirmed
		g.tree = st.tree
		g.setContext(ctx)
		g.interim = interimHash(g.suite, st.confirmed, ac.Auth.ConfirmationTag)
		g.proposals = nil
		g.reinit = st.res.reinit
		out.Kind = KindCommit
	default:
		return nil, fmt.Errorf("following group: %w: application data in a PublicMessage", ErrWireFormat)
	}
	return out, nil
}
