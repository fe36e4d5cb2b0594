package group

import (
	"crypto/rand"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/framing"
	"github.com/lmbridge/lmbridge/mls/keyschedule"
	"github.com/lmbridge/lmbridge/mls/tree"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// CommitOptions say what a commit does beyond committing every proposal
// cached in this epoch (by reference).
type CommitOptions struct {
	// Add, Remove, PSKs and Extensions become proposals by value.
	Add    []*wire.KeyPackage
	Remove []treemath.LeafIndex
	PSKs   []wire.PreSharedKeyID
	// Extensions, if not nil, replaces the GroupContext extensions.
	Extensions *wire.Extensions
	// ReInit closes the group in favour of a new one with these parameters
	// (it must be the only proposal; see ReInit).
	ReInit *wire.ReInit
	// NoPath leaves out the UpdatePath when the proposals allow it. By
	// default every commit refreshes the committer's path (post-compromise
	// security).
	NoPath bool
	// RatchetTreeInWelcome puts the ratchet tree in the Welcome's GroupInfo,
	// so joiners need not fetch it.
	RatchetTreeInWelcome bool
	// Private sends the commit as a PrivateMessage.
	Private bool
	// AuthenticatedData travels in the clear with the commit.
	AuthenticatedData []byte
}

// CommitResult is a commit waiting for MergePendingCommit.
type CommitResult struct {
	// Commit is the message to send to the group.
	Commit *wire.MLSMessage
	// Welcome is for the members added, nil if none.
	Welcome *wire.Welcome
}

// pendingCommit is an own commit's next-epoch state.
type pendingCommit struct {
	tree  *tree.Tree
	keys  *tree.PrivateKeys
	ctx   wire.GroupContext
	epoch *keyschedule.Epoch
	tag   []byte
	// reinit is the ReInit the commit closes the group with, if any.
	reinit *wire.ReInit
}

// Commit makes a commit of the cached proposals and those opts adds (§12.4).
// The group stays in its epoch until MergePendingCommit, which the caller
// invokes once the delivery service accepts the commit (or DiscardPending
// Commit if it refuses it).
func (g *Group) Commit(opts CommitOptions) (*CommitResult, error) {
	if g.pending != nil {
		return nil, fmt.Errorf("committing: %w: a commit is already pending", ErrPendingCommit)
	}
	if g.reinit != nil {
		return nil, ErrGroupClosed
	}
	me := wire.Sender{Type: wire.SenderMember, LeafIndex: g.me}
	var refs []wire.ProposalOrRef
	var props []resolvedProposal
	for _, cp := range g.proposals {
		if _, ok := cp.proposal.(*wire.Update); ok && cp.sender == me {
			// The committer's path replaces its own updates (§12.2).
			continue
		}
		// A cached proposal that conflicts with those before it (a second
		// remove of a leaf, a reinit among others) is left out rather than
		// failing the commit (§12.2).
		cand := append(props[:len(props):len(props)], resolvedProposal{cp.proposal, cp.sender})
		if _, err := g.applyProposals(g.tree.Clone(), cand, &g.me, true); err != nil {
			continue
		}
		refs = append(refs, wire.ProposalOrRef{Reference: cp.ref})
		props = cand
	}
	byValue := func(p wire.Proposal) {
		refs = append(refs, wire.ProposalOrRef{Proposal: p})
		props = append(props, resolvedProposal{p, me})
	}
	if opts.ReInit != nil {
		byValue(opts.ReInit)
	}
	if opts.Extensions != nil {
		byValue(&wire.GroupContextExtensions{Extensions: *opts.Extensions})
	}
	for _, l := range opts.Remove {
		byValue(&wire.Remove{Removed: l})
	}
	for _, kp := range opts.Add {
		byValue(&wire.Add{KeyPackage: *kp})
	}
	for _, id := range opts.PSKs {
		byValue(&wire.PreSharedKey{PSK: id})
	}

	t := g.tree.Clone()
	res, err := g.applyProposals(t, props, &g.me, true)
	if err != nil {
		return nil, fmt.Errorf("committing: %w", err)
	}
	newCtx := g.ctx
	newCtx.Epoch++
	newCtx.Extensions = res.extensions
	commit := &wire.Commit{Proposals: refs}
	keys := g.keys.Clone()
	var path *tree.Path
	var commitSecret []byte
	if res.needsPath || !opts.NoPath {
		ln := *t.Leaf(g.me)
		if path, err = t.GeneratePath(g.me, &ln, g.sigPriv, g.ctx.GroupID); err != nil {
			return nil, fmt.Errorf("committing: %w", err)
		}
		newCtx.TreeHash = t.Hash()
		up, err := path.Encrypt(codec.Marshal(&newCtx), res.added)
		if err != nil {
			return nil, fmt.Errorf("committing: %w", err)
		}
		commit.Path = up
		keys, commitSecret = path.Keys, path.CommitSecret
	} else {
		newCtx.TreeHash = t.Hash()
		keys.Prune(t)
	}

	wf := wire.WireFormatPublicMessage
	if opts.Private {
		wf = wire.WireFormatPrivateMessage
	}
	ac := &framing.AuthenticatedContent{WireFormat: wf, Content: wire.FramedContent{
		GroupID: g.ctx.GroupID, Epoch: g.ctx.Epoch, Sender: me,
		AuthenticatedData: opts.AuthenticatedData, ContentType: wire.ContentCommit, Commit: commit}}
	if err := ac.Sign(g.suite, g.sigPriv, g.ctxBytes); err != nil {
		return nil, fmt.Errorf("committing: %w", err)
	}
	pskSecret, err := g.pskSecret(res.psks)
	if err != nil {
		return nil, fmt.Errorf("committing: %w", err)
	}
	newCtx.ConfirmedTranscriptHash = framing.ConfirmedTranscriptHash(g.suite, g.interim, ac)
	newCtxBytes := codec.Marshal(&newCtx)
	joiner := keyschedule.JoinerSecret(g.suite, g.epoch.InitSecret, commitSecret, newCtxBytes)
	epoch := keyschedule.FromJoiner(g.suite, joiner, pskSecret, newCtxBytes)
	ac.Auth.ConfirmationTag = framing.ConfirmationTag(g.suite, epoch.ConfirmationKey, newCtx.ConfirmedTranscriptHash)

	msg, err := g.protect(ac)
	if err != nil {
		return nil, fmt.Errorf("committing: %w", err)
	}
	out := &CommitResult{Commit: msg}
	g.pending = &pendingCommit{tree: t, keys: keys, ctx: newCtx, epoch: epoch, tag: ac.Auth.ConfirmationTag, reinit: res.reinit}
	if len(res.added) > 0 {
		if out.Welcome, err = g.welcome(res, path, joiner, opts.RatchetTreeInWelcome); err != nil {
			g.pending = nil
			return nil, fmt.Errorf("committing: %w", err)
		}
	}
	return out, nil
}

// welcome builds the Welcome for the members a pending commit adds.
func (g *Group) welcome(res *applied, path *tree.Path, joiner []byte, withTree bool) (*wire.Welcome, error) {
	p := g.pending
	// Sign the GroupInfo as the new epoch's member.
	next := &Group{cfg: g.cfg, suite: g.suite, tree: p.tree, me: g.me, sigPriv: g.sigPriv, epoch: p.epoch}
	next.setContext(p.ctx)
	gi, err := next.signGroupInfo(nil, withTree)
	if err != nil {
		return nil, err
	}
	w := &wire.Welcome{}
	if err := w.SealGroupInfo(g.suite, p.epoch.WelcomeSecret, gi); err != nil {
		return nil, err
	}
	for i, kp := range res.addedKPs {
		gs := &wire.GroupSecrets{JoinerSecret: joiner, PSKs: res.psks}
		if path != nil {
			_, gs.PathSecret = path.SecretFor(res.added[i])
		}
		if err := w.AddMember(g.suite, kp, gs); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// MergePendingCommit moves the group to the epoch of its pending commit.
func (g *Group) MergePendingCommit() error {
	p := g.pending
	if p == nil {
		return fmt.Errorf("merging: %w: no commit pending", ErrPendingCommit)
	}
	g.retire()
	g.tree, g.keys = p.tree, p.keys
	g.setContext(p.ctx)
	g.startEpoch(p.epoch, p.tag)
	g.pending = nil
	g.reinit = p.reinit
	return nil
}

// ReInit is the ReInit a commit closed the group with, or nil. Once it is
// set, the group only serves as the ResumptionStore of the new group: one
// member starts that group with Reinitialize (ReInit's parameters, the
// other members' KeyPackages, the PSK of ReInitPSK); joiners pass this
// group as Config.Resumption to Join.
func (g *Group) ReInit() *wire.ReInit { return g.reinit }

// ReInitPSK is the resumption PSK (usage reinit) of this group's final
// epoch, for the new group's first commit.
func (g *Group) ReInitPSK() (wire.PreSharedKeyID, error) {
	return g.resumptionPSKID(wire.UsageReInit)
}

// BranchPSK is the resumption PSK (usage branch) of the current epoch, for
// the first commit of a group branched from this one.
func (g *Group) BranchPSK() (wire.PreSharedKeyID, error) {
	return g.resumptionPSKID(wire.UsageBranch)
}

func (g *Group) resumptionPSKID(usage wire.ResumptionPSKUsage) (wire.PreSharedKeyID, error) {
	nonce := make([]byte, g.suite.HashSize())
	if _, err := rand.Read(nonce); err != nil {
		return wire.PreSharedKeyID{}, err
	}
	return wire.PreSharedKeyID{Type: wire.PSKResumption, Usage: usage, GroupID: g.ctx.GroupID, Epoch: g.ctx.Epoch, Nonce: nonce}, nil
}

// DiscardPendingCommit forgets the pending commit (the delivery service
// refused it); the group stays in its epoch.
func (g *Group) DiscardPendingCommit() { g.pending = nil }

// HasPendingCommit reports whether a commit awaits MergePendingCommit.
func (g *Group) HasPendingCommit() bool { return g.pending != nil }

// protect frames a signed AuthenticatedContent as its wire format says.
func (g *Group) protect(ac *framing.AuthenticatedContent) (*wire.MLSMessage, error) {
	if ac.WireFormat == wire.WireFormatPublicMessage {
		return &wire.MLSMessage{PublicMessage: ac.PublicMessage(g.suite, g.epoch.MembershipKey, g.ctxBytes)}, nil
	}
	pm, err := ac.Encrypt(g.suite, g.secrets, g.epoch.SenderDataSecret, g.padding(ac))
	if err != nil {
		return nil, err
	}
	return &wire.MLSMessage{PrivateMessage: pm}, nil
}

func (g *Group) padding(ac *framing.AuthenticatedContent) int {
	b := g.cfg.PaddingBlock
	if b <= 1 {
		return 0
	}
	n := len(ac.Content.ApplicationData) + len(ac.Auth.Signature) + 8
	return (b - n%b) % b
}

// Protect encrypts application data as a PrivateMessage from this member.
func (g *Group) Protect(data, authenticatedData []byte) (*wire.MLSMessage, error) {
	if g.reinit != nil {
		return nil, ErrGroupClosed
	}
	ac := &framing.AuthenticatedContent{WireFormat: wire.WireFormatPrivateMessage, Content: wire.FramedContent{
		GroupID: g.ctx.GroupID, Epoch: g.ctx.Epoch, Sender: wire.Sender{Type: wire.SenderMember, LeafIndex: g.me},
		AuthenticatedData: authenticatedData, ContentType: wire.ContentApplication, ApplicationData: data}}
	if err := ac.Sign(g.suite, g.sigPriv, g.ctxBytes); err != nil {
		return nil, fmt.Errorf("protecting application data: %w", err)
	}
	m, err := g.protect(ac)
	if err != nil {
		return nil, fmt.Errorf("protecting application data: %w", err)
	}
	return m, nil
}

// propose signs a proposal from this member and caches it.
func (g *Group) propose(p wire.Proposal, private bool) (*wire.MLSMessage, error) {
	if g.reinit != nil {
		return nil, ErrGroupClosed
	}
	wf := wire.WireFormatPublicMessage
	if private {
		wf = wire.WireFormatPrivateMessage
	}
	ac := &framing.AuthenticatedContent{WireFormat: wf, Content: wire.FramedContent{
		GroupID: g.ctx.GroupID, Epoch: g.ctx.Epoch, Sender: wire.Sender{Type: wire.SenderMember, LeafIndex: g.me},
		ContentType: wire.ContentProposal, Proposal: p}}
	if err := ac.Sign(g.suite, g.sigPriv, g.ctxBytes); err != nil {
		return nil, fmt.Errorf("proposing: %w", err)
	}
	m, err := g.protect(ac)
	if err != nil {
		return nil, fmt.Errorf("proposing: %w", err)
	}
	g.proposals = append(g.proposals, cachedProposal{ref: g.proposalRef(ac), proposal: p, sender: ac.Content.Sender})
	return m, nil
}

// ProposeAdd proposes adding kp's client.
func (g *Group) ProposeAdd(kp *wire.KeyPackage, private bool) (*wire.MLSMessage, error) {
	return g.propose(&wire.Add{KeyPackage: *kp}, private)
}

// ProposeRemove proposes removing the member at leaf l.
func (g *Group) ProposeRemove(l treemath.LeafIndex, private bool) (*wire.MLSMessage, error) {
	return g.propose(&wire.Remove{Removed: l}, private)
}

// ProposeUpdate proposes a fresh encryption key for this member's leaf.
// The new private key is kept until a commit includes the proposal.
func (g *Group) ProposeUpdate(private bool) (*wire.MLSMessage, error) {
	priv, pub, err := g.suite.GenerateKeyPair()
	if err != nil {
		return nil, fmt.Errorf("proposing update: %w", err)
	}
	ln := *g.tree.Leaf(g.me)
	ln.EncryptionKey = pub
	ln.Source = wire.SourceUpdate
	ln.Lifetime = wire.Lifetime{}
	ln.ParentHash = nil
	if err := ln.Sign(g.suite, g.sigPriv, g.ctx.GroupID, g.me); err != nil {
		return nil, fmt.Errorf("proposing update: %w", err)
	}
	m, err := g.propose(&wire.Update{LeafNode: ln}, private)
	if err != nil {
		return nil, err
	}
	g.pendingUpdates = append(g.pendingUpdates, pendingUpdate{pub: pub, priv: priv})
	return m, nil
}

// NewPSKID makes a PreSharedKeyID for the external PSK id with a fresh nonce.
func (g *Group) NewPSKID(id []byte) (wire.PreSharedKeyID, error) {
	nonce := make([]byte, g.suite.HashSize())
	if _, err := rand.Read(nonce); err != nil {
		return wire.PreSharedKeyID{}, err
	}
	return wire.PreSharedKeyID{Type: wire.PSKExternal, ID: id, Nonce: nonce}, nil
}
