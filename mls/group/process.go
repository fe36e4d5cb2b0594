package group

import (
	"bytes"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/framing"
	"github.com/lmbridge/lmbridge/mls/tree"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// Kind says what a processed message was.
type Kind uint8

// Kinds of processed messages.
const (
	// KindApplication is application data from a member.
	KindApplication Kind = iota + 1
	// KindProposal is a proposal, now cached for a later commit.
	KindProposal
	// KindCommit is a commit, now applied: the group is in the next epoch.
	KindCommit
)

// Processed is the outcome of Process.
type Processed struct {
	Kind   Kind
	Sender wire.Sender
	// AuthenticatedData is the sender's authenticated_data.
	AuthenticatedData []byte
	// ApplicationData is set for KindApplication.
	ApplicationData []byte
	// Proposal is set for KindProposal.
	Proposal wire.Proposal
	// Removed is set for a KindCommit that removed this member: the group
	// can no longer be used.
	Removed bool
}

// Process handles a message for this group: it checks and decrypts it,
// caches a proposal, applies a commit (moving to the next epoch), or
// returns application data. A commit this member sent is applied only by
// MergePendingCommit.
func (g *Group) Process(m *wire.MLSMessage) (*Processed, error) {
	if g.reinit != nil {
		return nil, ErrGroupClosed
	}
	ac, err := g.unprotect(m)
	if err != nil {
		return nil, err
	}
	out := &Processed{Sender: ac.Content.Sender, AuthenticatedData: ac.Content.AuthenticatedData}
	switch ac.Content.ContentType {
	case wire.ContentApplication:
		if ac.WireFormat != wire.WireFormatPrivateMessage {
			return nil, fmt.Errorf("processing application data: %w: must be a PrivateMessage", ErrWireFormat)
		}
		out.Kind, out.ApplicationData = KindApplication, ac.Content.ApplicationData
	case wire.ContentProposal:
		if err := g.cacheProposal(ac); err != nil {
			return nil, err
		}
		out.Kind, out.Proposal = KindProposal, ac.Content.Proposal
	case wire.ContentCommit:
		removed, err := g.processCommit(ac)
		if err != nil {
			return nil, fmt.Errorf("processing commit: %w", err)
		}
		out.Kind, out.Removed = KindCommit, removed
	}
	return out, nil
}

// unprotect checks a message's group and epoch, then its membership tag or
// decrypts it, and verifies its signature.
func (g *Group) unprotect(m *wire.MLSMessage) (*framing.AuthenticatedContent, error) {
	var ac *framing.AuthenticatedContent
	switch {
	case m.PublicMessage != nil:
		pm := m.PublicMessage
		if err := g.checkGroupEpoch(pm.Content.GroupID, pm.Content.Epoch); err != nil {
			return nil, err
		}
		var err error
		if ac, err = framing.FromPublicMessage(g.suite, pm, g.epoch.MembershipKey, g.ctxBytes); err != nil {
			return nil, fmt.Errorf("checking public message: %w", err)
		}
	case m.PrivateMessage != nil:
		pm := m.PrivateMessage
		if pm.Epoch < g.ctx.Epoch && pm.ContentType == wire.ContentApplication && bytes.Equal(pm.GroupID, g.ctx.GroupID) {
			return g.unprotectPast(pm)
		}
		if err := g.checkGroupEpoch(pm.GroupID, pm.Epoch); err != nil {
			return nil, err
		}
		var err error
		if ac, err = framing.Decrypt(g.suite, pm, g.secrets, g.epoch.SenderDataSecret); err != nil {
			return nil, fmt.Errorf("decrypting private message: %w", err)
		}
	default:
		return nil, fmt.Errorf("processing message: %w: %d", ErrWireFormat, m.WireFormat())
	}
	pub, err := g.senderKey(ac)
	if err != nil {
		return nil, err
	}
	if err := ac.Verify(g.suite, pub, g.ctxBytes); err != nil {
		return nil, err
	}
	return ac, nil
}

// unprotectPast decrypts and checks an application message of a past epoch
// whose keys are kept.
func (g *Group) unprotectPast(pm *wire.PrivateMessage) (*framing.AuthenticatedContent, error) {
	for i := range g.past {
		p := &g.past[i]
		if p.epoch != pm.Epoch {
			continue
		}
		ac, err := framing.Decrypt(g.suite, pm, p.secrets, p.senderDataSecret)
		if err != nil {
			return nil, fmt.Errorf("decrypting private message of epoch %d: %w", pm.Epoch, err)
		}
		ln := p.tree.Leaf(ac.Content.Sender.LeafIndex)
		if ln == nil {
			return nil, fmt.Errorf("%w: sender leaf %d in epoch %d", ErrNotMember, ac.Content.Sender.LeafIndex, pm.Epoch)
		}
		if err := ac.Verify(g.suite, ln.SignatureKey, p.ctxBytes); err != nil {
			return nil, err
		}
		return ac, nil
	}
	return nil, fmt.Errorf("%w: message for epoch %d, group at %d", ErrWrongEpoch, pm.Epoch, g.ctx.Epoch)
}

func (g *Group) checkGroupEpoch(groupID []byte, epoch uint64) error {
	if !bytes.Equal(groupID, g.ctx.GroupID) {
		return ErrWrongGroup
	}
	if epoch != g.ctx.Epoch {
		return fmt.Errorf("%w: message for epoch %d, group at %d", ErrWrongEpoch, epoch, g.ctx.Epoch)
	}
	return nil
}

// senderKey finds the signature key that must have signed ac.
func (g *Group) senderKey(ac *framing.AuthenticatedContent) ([]byte, error) {
	s := ac.Content.Sender
	switch s.Type {
	case wire.SenderMember:
		ln := g.tree.Leaf(s.LeafIndex)
		if ln == nil {
			return nil, fmt.Errorf("%w: sender leaf %d", ErrNotMember, s.LeafIndex)
		}
		return ln.SignatureKey, nil
	case wire.SenderExternal:
		var senders wire.ExternalSenders
		ok, err := g.ctx.Extensions.Decode(wire.ExtensionExternalSenders, &senders)
		if err != nil || !ok || uint64(s.ExternalIndex) >= uint64(len(senders)) {
			return nil, fmt.Errorf("%w: external sender %d", ErrNotMember, s.ExternalIndex)
		}
		if ac.Content.ContentType != wire.ContentProposal {
			return nil, fmt.Errorf("%w: external senders send only proposals", ErrInvalidProposal)
		}
		return senders[s.ExternalIndex].SignatureKey, nil
	case wire.SenderNewMemberProposal:
		add, ok := ac.Content.Proposal.(*wire.Add)
		if ac.Content.ContentType != wire.ContentProposal || !ok {
			return nil, fmt.Errorf("%w: a new member proposes only its own add", ErrInvalidProposal)
		}
		return add.KeyPackage.LeafNode.SignatureKey, nil
	case wire.SenderNewMemberCommit:
		c := ac.Content.Commit
		if ac.Content.ContentType != wire.ContentCommit || c.Path == nil {
			return nil, fmt.Errorf("%w: external commit without a path", ErrInvalidCommit)
		}
		return c.Path.LeafNode.SignatureKey, nil
	}
	return nil, fmt.Errorf("%w: sender type %d", ErrNotMember, s.Type)
}

func (g *Group) cacheProposal(ac *framing.AuthenticatedContent) error {
	if ac.Content.Sender.Type == wire.SenderMember && ac.Content.Sender.LeafIndex == g.me && g.pending == nil {
		// Our own proposal, echoed back: already cached when sent.
		if _, ok := g.findProposal(g.proposalRef(ac)); ok {
			return nil
		}
	}
	if u, ok := ac.Content.Proposal.(*wire.Update); ok {
		// Check the leaf now so that a bad update is refused up front.
		l := ac.Content.Sender.LeafIndex
		if err := g.checkLeafNode(g.tree, &u.LeafNode, wire.SourceUpdate, l, g.ctx.Extensions); err != nil {
			return fmt.Errorf("caching update proposal from leaf %d: %w", l, err)
		}
	}
	g.proposals = append(g.proposals, cachedProposal{ref: g.proposalRef(ac), proposal: ac.Content.Proposal, sender: ac.Content.Sender})
	return nil
}

// processCommit applies another member's commit (§12.4.2). It changes the
// group only if every check passes.
func (g *Group) processCommit(ac *framing.AuthenticatedContent) (removed bool, err error) {
	if ac.Content.Sender.Type == wire.SenderMember && ac.Content.Sender.LeafIndex == g.me {
		return false, fmt.Errorf("%w: own commit; use MergePendingCommit", ErrPendingCommit)
	}
	st, err := g.stageCommit(ac)
	if err != nil {
		return false, err
	}
	if st.res.removedMe {
		// Nothing more to learn: the commit's secrets are not for us.
		g.pending = nil
		return true, nil
	}
	c, t, newCtx := ac.Content.Commit, st.tree, st.ctx
	keys := g.keys.Clone()
	if err := g.adoptUpdate(t, keys); err != nil {
		return false, err
	}
	var commitSecret []byte
	if c.Path != nil {
		provisional := codec.Marshal(&newCtx)
		commitSecret, _, err = t.DecryptPath(keys, st.committer, c.Path, st.res.added, provisional)
		if err != nil {
			return false, fmt.Errorf("%w: %w", ErrInvalidCommit, err)
		}
	} else {
		keys.Prune(t)
	}

	initSecret := g.epoch.InitSecret
	if st.res.externalInit != nil {
		priv, _, err := g.epoch.ExternalKeyPair()
		if err != nil {
			return false, err
		}
		if initSecret, err = receiveExternalInit(g, priv, st.res.externalInit.KEMOutput); err != nil {
			return false, fmt.Errorf("%w: %w", ErrInvalidCommit, err)
		}
	}
	pskSecret, err := g.pskSecret(st.res.psks)
	if err != nil {
		return false, err
	}
	newCtx.ConfirmedTranscriptHash = st.confirmed
	epoch := nextEpoch(g.suite, initSecret, commitSecret, pskSecret, codec.Marshal(&newCtx))
	if err := framing.VerifyConfirmationTag(g.suite, epoch.ConfirmationKey, newCtx.ConfirmedTranscriptHash, ac.Auth.ConfirmationTag); err != nil {
		return false, fmt.Errorf("%w: %w", ErrInvalidCommit, err)
	}

	g.retire()
	g.tree, g.keys = t, keys
	g.setContext(newCtx)
	g.startEpoch(epoch, ac.Auth.ConfirmationTag)
	g.pending = nil
	g.reinit = st.res.reinit
	return false, nil
}

// stagedCommit is the public outcome of a commit: what anyone who sees it
// (a member or the delivery service) can compute.
type stagedCommit struct {
	tree      *tree.Tree
	committer treemath.LeafIndex
	res       *applied
	// ctx is the provisional GroupContext: the next epoch's, with the old
	// confirmed transcript hash; confirmed is the new one.
	ctx       wire.GroupContext
	confirmed []byte
}

// stageCommit resolves and applies a verified commit's proposals and merges
// its path into a copy of the tree (§12.4.2), without touching the group.
func (g *Group) stageCommit(ac *framing.AuthenticatedContent) (*stagedCommit, error) {
	c := ac.Content.Commit
	sender := ac.Content.Sender
	var committer *treemath.LeafIndex
	switch sender.Type {
	case wire.SenderMember:
		l := sender.LeafIndex
		committer = &l
	case wire.SenderNewMemberCommit:
	default:
		return nil, fmt.Errorf("%w: commit from sender type %d", ErrInvalidCommit, sender.Type)
	}
	if ac.Auth.ConfirmationTag == nil {
		return nil, fmt.Errorf("%w: no confirmation tag", ErrInvalidCommit)
	}
	props, err := g.resolve(c, sender)
	if err != nil {
		return nil, err
	}
	t := g.tree.Clone()
	res, err := g.applyProposals(t, props, committer, false)
	if err != nil {
		return nil, err
	}
	if res.needsPath && c.Path == nil {
		return nil, fmt.Errorf("%w: proposals require a path", ErrInvalidCommit)
	}
	// An external committer joins at the leftmost free leaf.
	if committer == nil {
		if err := g.checkLeafNode(t, &c.Path.LeafNode, wire.SourceCommit, nextFreeLeaf(t), res.extensions); err != nil {
			return nil, fmt.Errorf("external committer's leaf: %w", err)
		}
		if res.resynced != nil {
			if err := g.validateSuccessor(res.resynced, &c.Path.LeafNode); err != nil {
				return nil, fmt.Errorf("external commit removing leaf of another client: %w", err)
			}
		}
		l := t.Add(&c.Path.LeafNode)
		committer = &l
	}
	if c.Path != nil {
		if err := g.checkLeafNode(t, &c.Path.LeafNode, wire.SourceCommit, *committer, res.extensions); err != nil {
			return nil, fmt.Errorf("committer's path leaf: %w", err)
		}
		if err := t.MergeUpdatePath(*committer, c.Path, g.ctx.GroupID); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidCommit, err)
		}
	}
	st := &stagedCommit{tree: t, committer: *committer, res: res, ctx: g.ctx}
	st.ctx.Epoch++
	st.ctx.Extensions = res.extensions
	st.ctx.TreeHash = t.Hash()
	st.confirmed = framing.ConfirmedTranscriptHash(g.suite, g.interim, ac)
	return st, nil
}

// adoptUpdate installs the private key of this member's Update proposal if
// the commit applied it.
func (g *Group) adoptUpdate(t *tree.Tree, keys *tree.PrivateKeys) error {
	pub := t.Leaf(g.me).EncryptionKey
	if bytes.Equal(pub, g.tree.Leaf(g.me).EncryptionKey) {
		return nil
	}
	for _, u := range g.pendingUpdates {
		if bytes.Equal(u.pub, pub) {
			// A copy: the pending updates' keys are wiped with the epoch.
			keys.Set(g.me.Node(), append([]byte(nil), u.priv...))
			return nil
		}
	}
	return fmt.Errorf("%w: our leaf was updated with a key we did not propose", ErrInvalidCommit)
}

// nextFreeLeaf is where Add would put a new member.
func nextFreeLeaf(t interface {
	NumLeaves() uint32
	Leaf(treemath.LeafIndex) *wire.LeafNode
}) treemath.LeafIndex {
	n := t.NumLeaves()
	for l := treemath.LeafIndex(0); uint32(l) < n; l++ {
		if t.Leaf(l) == nil {
			return l
		}
	}
	return treemath.LeafIndex(n)
}
