package group

import (
	"bytes"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/framing"
	"github.com/lmbridge/lmbridge/mls/keyschedule"
	"github.com/lmbridge/lmbridge/mls/tree"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// ExternalJoinOptions are the optional inputs of JoinExternal.
type ExternalJoinOptions struct {
	// RatchetTree is the group's tree when the GroupInfo has no
	// ratchet_tree extension.
	RatchetTree wire.RatchetTree
	// Resync removes this leaf (the joiner's old self) in the same commit.
	Resync *treemath.LeafIndex
	// PSKs are injected into the new epoch.
	PSKs []wire.PreSharedKeyID
	// AuthenticatedData travels in the clear with the commit.
	AuthenticatedData []byte
}

// JoinExternal joins a group by external commit (§12.4.3.2) from a signed
// GroupInfo with the external_pub extension: it returns the group in the
// new epoch and the commit to send. If the delivery service refuses the
// commit, drop the group.
func JoinExternal(cfg Config, gi *wire.GroupInfo, id *Identity, opts ExternalJoinOptions) (*Group, *wire.MLSMessage, error) {
	s, err := ciphersuite.Lookup(gi.GroupContext.CipherSuite)
	if err != nil {
		return nil, nil, fmt.Errorf("joining externally: %w", err)
	}
	t, err := verifiedTree(s, gi, opts.RatchetTree)
	if err != nil {
		return nil, nil, err
	}
	var ep wire.ExternalPub
	if ok, err := gi.Extensions.Decode(wire.ExtensionExternalPub, &ep); err != nil {
		// ts-mls 1.6.4, for one, writes the bare key instead of the ExternalPub struct.
		return nil, nil, fmt.Errorf("%w: group info's external_pub is not an ExternalPub: %w", ErrInvalidWelcome, err)
	} else if !ok {
		return nil, nil, fmt.Errorf("%w: group info without external_pub", ErrInvalidWelcome)
	}
	kemOutput, initSecret, err := keyschedule.ExternalInitSecret(s, ep.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("joining externally: %w", err)
	}

	// The group as it was: what the commit is checked against.
	g := &Group{cfg: cfg, suite: s, sigPriv: id.SigPriv, tree: t}
	g.setContext(gi.GroupContext)
	g.interim = interimHash(s, gi.GroupContext.ConfirmedTranscriptHash, gi.ConfirmationTag)
	if err := g.checkJoinedTree(t, gi.GroupContext.Extensions); err != nil {
		return nil, nil, fmt.Errorf("joining externally: %w", err)
	}

	sender := wire.Sender{Type: wire.SenderNewMemberCommit}
	props := []wire.Proposal{&wire.ExternalInit{KEMOutput: kemOutput}}
	if opts.Resync != nil {
		props = append(props, &wire.Remove{Removed: *opts.Resync})
	}
	for _, p := range opts.PSKs {
		props = append(props, &wire.PreSharedKey{PSK: p})
	}
	refs := make([]wire.ProposalOrRef, len(props))
	resolved := make([]resolvedProposal, len(props))
	for i, p := range props {
		refs[i] = wire.ProposalOrRef{Proposal: p}
		resolved[i] = resolvedProposal{p, sender}
	}
	nt := t.Clone()
	res, err := g.applyProposals(nt, resolved, nil, true)
	if err != nil {
		return nil, nil, fmt.Errorf("joining externally: %w", err)
	}

	// Our leaf goes in first as a key-package-like leaf; GeneratePath
	// replaces it with the signed commit leaf.
	encPriv, encPub, err := s.GenerateKeyPair()
	if err != nil {
		return nil, nil, fmt.Errorf("joining externally: %w", err)
	}
	clear(encPriv)
	leaf := &wire.LeafNode{EncryptionKey: encPub, SignatureKey: id.SigPub, Credential: id.Credential,
		Capabilities: id.capabilities(s), Source: wire.SourceCommit}
	if err := checkCapabilities(nt, leaf, s.ID(), res.extensions, 0, false); err != nil {
		return nil, nil, fmt.Errorf("joining externally: %w", err)
	}
	if res.resynced != nil {
		if err := g.validateSuccessor(res.resynced, leaf); err != nil {
			return nil, nil, fmt.Errorf("joining externally: resync of leaf %d: %w", *opts.Resync, err)
		}
	}
	g.me = nt.Add(leaf)
	path, err := nt.GeneratePath(g.me, leaf, id.SigPriv, gi.GroupContext.GroupID)
	if err != nil {
		return nil, nil, fmt.Errorf("joining externally: %w", err)
	}
	newCtx := g.ctx
	newCtx.Epoch++
	newCtx.Extensions = res.extensions
	newCtx.TreeHash = nt.Hash()
	up, err := path.Encrypt(codec.Marshal(&newCtx), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("joining externally: %w", err)
	}

	ac := &framing.AuthenticatedContent{WireFormat: wire.WireFormatPublicMessage, Content: wire.FramedContent{
		GroupID: g.ctx.GroupID, Epoch: g.ctx.Epoch, Sender: sender, AuthenticatedData: opts.AuthenticatedData,
		ContentType: wire.ContentCommit, Commit: &wire.Commit{Proposals: refs, Path: up}}}
	if err := ac.Sign(s, id.SigPriv, g.ctxBytes); err != nil {
		return nil, nil, fmt.Errorf("joining externally: %w", err)
	}
	pskSecret, err := pskSecretFrom(s, res.psks, cfg, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("joining externally: %w", err)
	}
	newCtx.ConfirmedTranscriptHash = framing.ConfirmedTranscriptHash(s, g.interim, ac)
	epoch := nextEpoch(s, initSecret, path.CommitSecret, pskSecret, codec.Marshal(&newCtx))
	ac.Auth.ConfirmationTag = framing.ConfirmationTag(s, epoch.ConfirmationKey, newCtx.ConfirmedTranscriptHash)
	msg := &wire.MLSMessage{PublicMessage: ac.PublicMessage(s, nil, nil)}

	g.tree, g.keys = nt, path.Keys
	g.setContext(newCtx)
	g.startEpoch(epoch, ac.Auth.ConfirmationTag)
	return g, msg, nil
}

// verifiedTree builds the tree a GroupInfo describes (from its extension or
// rt) and makes a joiner's checks: the tree's own, its hash against the
// GroupInfo's, and the GroupInfo's signature by its signer.
func verifiedTree(s *ciphersuite.Suite, gi *wire.GroupInfo, rt wire.RatchetTree) (*tree.Tree, error) {
	gc := &gi.GroupContext
	if gc.Version != wire.MLS10 || gc.CipherSuite != s.ID() {
		return nil, fmt.Errorf("%w: group info for version %d suite %d", ErrInvalidWelcome, gc.Version, gc.CipherSuite)
	}
	var fromExt wire.RatchetTree
	if ok, err := gi.Extensions.Decode(wire.ExtensionRatchetTree, &fromExt); err != nil {
		return nil, fmt.Errorf("%w: ratchet tree extension: %w", ErrInvalidWelcome, err)
	} else if ok {
		rt = fromExt
	}
	if rt == nil {
		return nil, fmt.Errorf("%w: no ratchet tree", ErrInvalidWelcome)
	}
	t, err := tree.FromRatchetTree(s, rt)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidWelcome, err)
	}
	if err := t.Verify(gc.GroupID); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidWelcome, err)
	}
	if !bytes.Equal(t.Hash(), gc.TreeHash) {
		return nil, fmt.Errorf("%w: tree hash differs from the group info's", ErrInvalidWelcome)
	}
	signer := t.Leaf(gi.Signer)
	if signer == nil {
		return nil, fmt.Errorf("%w: group info signer %d is not a member", ErrInvalidWelcome, gi.Signer)
	}
	if err := gi.Verify(s, signer.SignatureKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidWelcome, err)
	}
	return t, nil
}

// ExternalProposal makes a proposal from the external sender at index
// senderIndex of the group's external_senders extension (a delivery
// service removing a member, say), signed with that sender's key. The
// group's members check it against the extension.
func ExternalProposal(s *ciphersuite.Suite, groupID []byte, epoch uint64, senderIndex uint32, sigPriv []byte, p wire.Proposal) (*wire.MLSMessage, error) {
	return outsideProposal(s, groupID, epoch, wire.Sender{Type: wire.SenderExternal, ExternalIndex: senderIndex}, sigPriv, p)
}

// JoinProposal makes a new member's proposal to add itself (sender type
// new_member_proposal), signed with the key of kp's leaf.
func JoinProposal(s *ciphersuite.Suite, groupID []byte, epoch uint64, kp *wire.KeyPackage, sigPriv []byte) (*wire.MLSMessage, error) {
	return outsideProposal(s, groupID, epoch, wire.Sender{Type: wire.SenderNewMemberProposal}, sigPriv, &wire.Add{KeyPackage: *kp})
}

func outsideProposal(s *ciphersuite.Suite, groupID []byte, epoch uint64, sender wire.Sender, sigPriv []byte, p wire.Proposal) (*wire.MLSMessage, error) {
	ac := &framing.AuthenticatedContent{WireFormat: wire.WireFormatPublicMessage, Content: wire.FramedContent{
		GroupID: groupID, Epoch: epoch, Sender: sender, ContentType: wire.ContentProposal, Proposal: p}}
	// Senders outside the group sign without the GroupContext.
	if err := ac.Sign(s, sigPriv, nil); err != nil {
		return nil, fmt.Errorf("making external proposal: %w", err)
	}
	return &wire.MLSMessage{PublicMessage: ac.PublicMessage(s, nil, nil)}, nil
}
