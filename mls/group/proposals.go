package group

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/framing"
	"github.com/lmbridge/lmbridge/mls/tree"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

const proposalRefLabel = "MLS 1.0 Proposal Reference"

// proposalRef is the ProposalRef of a proposal message (§5.2).
func (g *Group) proposalRef(ac *framing.AuthenticatedContent) []byte {
	return g.suite.RefHash(proposalRefLabel, codec.Marshal(ac))
}

// findProposal looks a reference up among this epoch's proposals.
func (g *Group) findProposal(ref []byte) (*cachedProposal, bool) {
	for i := range g.proposals {
		if bytes.Equal(g.proposals[i].ref, ref) {
			return &g.proposals[i], true
		}
	}
	return nil, false
}

// resolvedProposal is a commit's proposal with the sender that proposed it.
type resolvedProposal struct {
	proposal wire.Proposal
	sender   wire.Sender
}

// resolve looks up a commit's proposals: by value they come from the
// committer, by reference from whoever sent them this epoch.
func (g *Group) resolve(c *wire.Commit, committer wire.Sender) ([]resolvedProposal, error) {
	out := make([]resolvedProposal, 0, len(c.Proposals))
	for i, p := range c.Proposals {
		if p.Proposal != nil {
			out = append(out, resolvedProposal{p.Proposal, committer})
			continue
		}
		cp, ok := g.findProposal(p.Reference)
		if !ok {
			return nil, errorf(ErrInvalidProposal, "proposal %d: unknown reference %x", i, p.Reference)
		}
		out = append(out, resolvedProposal{cp.proposal, cp.sender})
	}
	return out, nil
}

// applied is what applying a commit's proposals produced.
type applied struct {
	// added lists the leaves of new members, in proposal order, with their
	// key packages.
	added    []treemath.LeafIndex
	addedKPs []*wire.KeyPackage
	psks     []wire.PreSharedKeyID
	// extensions is the new GroupContext extensions (the old ones if no
	// GroupContextExtensions proposal).
	extensions   wire.Extensions
	externalInit *wire.ExternalInit
	reinit       *wire.ReInit
	// resynced is the leaf an external commit removes: the joiner's old
	// self, whose identity the new leaf must have (§12.4.3.2).
	resynced *wire.LeafNode
	// removedMe is set when the commit removes this member.
	removedMe bool
	// needsPath is set when the proposals require an UpdatePath (§12.4).
	needsPath bool
}

// applyProposals checks a commit's proposal list (§12.2) and applies it to
// t (a clone of the group's tree) in the order of §12.3: context
// extensions, updates, removes, adds. committer is the committing member's
// leaf, or nil for an external commit.
//
// sending says the commit is this member's own: the key packages it adds
// must then be within their lifetimes exactly (§7.3), while a received
// commit's may be off by Config.LifetimeTolerance.
func (g *Group) applyProposals(t *tree.Tree, props []resolvedProposal, committer *treemath.LeafIndex, sending bool) (*applied, error) {
	res := &applied{extensions: g.ctx.Extensions, needsPath: len(props) == 0}
	var updates, removes, adds []int
	var gce *wire.GroupContextExtensions
	seenLeaf := map[treemath.LeafIndex]bool{}
	for i, rp := range props {
		if err := g.checkProposalSender(rp, committer == nil); err != nil {
			return nil, fmt.Errorf("proposal %d: %w", i, err)
		}
		switch p := rp.proposal.(type) {
		case *wire.Update:
			if committer != nil && rp.sender.LeafIndex == *committer {
				return nil, errorf(ErrInvalidProposal, "proposal %d: the committer updates itself", i)
			}
			if seenLeaf[rp.sender.LeafIndex] {
				return nil, errorf(ErrInvalidProposal, "proposal %d: second update or remove of leaf %d", i, rp.sender.LeafIndex)
			}
			seenLeaf[rp.sender.LeafIndex] = true
			updates = append(updates, i)
			res.needsPath = true
		case *wire.Remove:
			if committer != nil && p.Removed == *committer {
				return nil, errorf(ErrInvalidProposal, "proposal %d: the committer removes itself", i)
			}
			if t.Leaf(p.Removed) == nil {
				return nil, errorf(ErrInvalidProposal, "proposal %d: remove of leaf %d, not a member", i, p.Removed)
			}
			if seenLeaf[p.Removed] {
				return nil, errorf(ErrInvalidProposal, "proposal %d: second update or remove of leaf %d", i, p.Removed)
			}
			if committer == nil {
				if res.resynced != nil {
					return nil, errorf(ErrInvalidProposal, "proposal %d: second remove in an external commit", i)
				}
				res.resynced = t.Leaf(p.Removed)
			}
			seenLeaf[p.Removed] = true
			removes = append(removes, i)
			res.needsPath = true
		case *wire.Add:
			adds = append(adds, i)
		case *wire.PreSharedKey:
			for _, q := range res.psks {
				if bytes.Equal(codec.Marshal(&q), codec.Marshal(&p.PSK)) {
					return nil, errorf(ErrInvalidProposal, "proposal %d: PSK proposed twice", i)
				}
			}
			if len(p.PSK.Nonce) != g.suite.HashSize() {
				return nil, errorf(ErrInvalidProposal, "proposal %d: PSK nonce of %d bytes", i, len(p.PSK.Nonce))
			}
			if err := g.checkResumptionUsage(&p.PSK, res.psks); err != nil {
				return nil, fmt.Errorf("proposal %d: %w", i, err)
			}
			res.psks = append(res.psks, p.PSK)
		case *wire.GroupContextExtensions:
			if gce != nil {
				return nil, errorf(ErrInvalidProposal, "proposal %d: second group context extensions proposal", i)
			}
			gce = p
			res.needsPath = true
		case *wire.ExternalInit:
			if committer != nil || res.externalInit != nil {
				return nil, errorf(ErrInvalidProposal, "proposal %d: external init outside an external commit", i)
			}
			res.externalInit = p
			res.needsPath = true
		case *wire.ReInit:
			if len(props) != 1 {
				return nil, errorf(ErrInvalidProposal, "proposal %d: reinit with other proposals", i)
			}
			if _, err := ciphersuite.Lookup(p.CipherSuite); err != nil || p.Version != wire.MLS10 {
				return nil, errorf(ErrInvalidProposal, "proposal %d: reinit to version %d suite %d", i, p.Version, p.CipherSuite)
			}
			res.reinit = p
		default:
			return nil, errorf(ErrInvalidProposal, "proposal %d: unsupported type %d", i, rp.proposal.ProposalType())
		}
	}
	if committer == nil && res.externalInit == nil {
		return nil, errorf(ErrInvalidProposal, "external commit without external init")
	}

	if gce != nil {
		if err := g.checkContextExtensions(t, gce.Extensions); err != nil {
			return nil, err
		}
		res.extensions = gce.Extensions
	}
	for _, i := range updates {
		l := props[i].sender.LeafIndex
		ln := &props[i].proposal.(*wire.Update).LeafNode
		if err := g.checkLeafNode(t, ln, wire.SourceUpdate, l, res.extensions); err != nil {
			return nil, fmt.Errorf("proposal %d: update of leaf %d: %w", i, l, err)
		}
		if err := t.Update(l, ln); err != nil {
			return nil, fmt.Errorf("proposal %d: %w: %w", i, ErrInvalidProposal, err)
		}
	}
	for _, i := range removes {
		l := props[i].proposal.(*wire.Remove).Removed
		if l == g.me {
			res.removedMe = true
		}
		if err := t.Remove(l); err != nil {
			return nil, fmt.Errorf("proposal %d: %w: %w", i, ErrInvalidProposal, err)
		}
	}
	for _, i := range adds {
		kp := &props[i].proposal.(*wire.Add).KeyPackage
		if err := g.checkKeyPackage(t, kp, res.extensions, sending); err != nil {
			return nil, fmt.Errorf("proposal %d: %w", i, err)
		}
		res.added = append(res.added, t.Add(&kp.LeafNode))
		res.addedKPs = append(res.addedKPs, kp)
	}
	return res, nil
}

// checkProposalSender enforces who may send which proposal (§12.1, §12.1.8).
func (g *Group) checkProposalSender(rp resolvedProposal, external bool) error {
	t := rp.proposal.ProposalType()
	switch rp.sender.Type {
	case wire.SenderMember:
		if t == wire.ProposalExternalInit {
			return errorf(ErrInvalidProposal, "external init from a member")
		}
	case wire.SenderExternal:
		if t == wire.ProposalUpdate || t == wire.ProposalExternalInit {
			return errorf(ErrInvalidProposal, "proposal type %d from an external sender", t)
		}
	case wire.SenderNewMemberProposal:
		if t != wire.ProposalAdd {
			return errorf(ErrInvalidProposal, "proposal type %d from a new member", t)
		}
	case wire.SenderNewMemberCommit:
		// By value in an external commit: ExternalInit, Remove (of the
		// joiner's old self) and PSK only.
		if t != wire.ProposalExternalInit && t != wire.ProposalRemove && t != wire.ProposalPSK {
			return errorf(ErrInvalidProposal, "proposal type %d in an external commit", t)
		}
	}
	if external && rp.sender.Type != wire.SenderNewMemberCommit {
		return errorf(ErrInvalidProposal, "an external commit includes a proposal by reference")
	}
	if t == wire.ProposalUpdate && rp.sender.Type != wire.SenderMember {
		return errorf(ErrInvalidProposal, "update from a non-member")
	}
	return nil
}

// checkKeyPackage makes the checks of §10.1 and §12.2 on an Add.
func (g *Group) checkKeyPackage(t *tree.Tree, kp *wire.KeyPackage, exts wire.Extensions, sending bool) error {
	if kp.Version != wire.MLS10 || kp.CipherSuite != g.suite.ID() {
		return errorf(ErrInvalidProposal, "key package for version %d suite %d", kp.Version, kp.CipherSuite)
	}
	if err := kp.Verify(g.suite); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidProposal, err)
	}
	if bytes.Equal(kp.InitKey, kp.LeafNode.EncryptionKey) {
		return errorf(ErrInvalidProposal, "key package init key equals its encryption key")
	}
	tolerance := g.cfg.LifetimeTolerance
	if sending {
		tolerance = 0
	}
	if err := checkLifetime(&kp.LeafNode.Lifetime, g.now(), tolerance); err != nil {
		return fmt.Errorf("%w: key package: %w", ErrInvalidProposal, err)
	}
	return g.checkLeafNode(t, &kp.LeafNode, wire.SourceKeyPackage, 0, exts)
}

// checkLeafNode makes the leaf node checks of §7.3 for a leaf about to
// enter t at leaf l (for update and commit sources, whose signature covers
// the group and leaf; a key package leaf's was checked with its package).
func (g *Group) checkLeafNode(t *tree.Tree, ln *wire.LeafNode, source wire.LeafNodeSource, l treemath.LeafIndex, exts wire.Extensions) error {
	if ln.Source != source {
		return errorf(ErrInvalidProposal, "leaf node source %d, want %d", ln.Source, source)
	}
	if source != wire.SourceKeyPackage {
		if err := ln.Verify(g.suite, g.ctx.GroupID, l); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidProposal, err)
		}
	}
	if err := g.validateCredential(ln); err != nil {
		return err
	}
	if old := t.Leaf(l); source != wire.SourceKeyPackage && old != nil && old != ln {
		if err := g.validateSuccessor(old, ln); err != nil {
			return err
		}
	}
	if err := checkCapabilities(t, ln, g.suite.ID(), exts, l, source != wire.SourceKeyPackage); err != nil {
		return err
	}
	// Encryption and signature keys are unique among members (§7.3); a
	// member replacing its own leaf may keep its signature key, but not
	// its encryption key (which would undo the update's point, and which
	// the RFC's uniqueness covers: the old leaf is a member's until the
	// update applies).
	var dup error
	t.Members(func(m treemath.LeafIndex, other *wire.LeafNode) bool {
		if source != wire.SourceKeyPackage && m == l {
			if other != ln && bytes.Equal(other.EncryptionKey, ln.EncryptionKey) {
				dup = errorf(ErrInvalidProposal, "leaf %d replaced with its own encryption key", m)
				return false
			}
			return true
		}
		if bytes.Equal(other.EncryptionKey, ln.EncryptionKey) || bytes.Equal(other.SignatureKey, ln.SignatureKey) {
			dup = errorf(ErrInvalidProposal, "leaf node shares a key with leaf %d", m)
			return false
		}
		return true
	})
	return dup
}

// checkCapabilities checks ln against the group: it supports version 1.0,
// the suite, the required capabilities, every member's credential type and
// its own extensions; and every member supports its credential type.
func checkCapabilities(t *tree.Tree, ln *wire.LeafNode, suite ciphersuite.ID, exts wire.Extensions, self treemath.LeafIndex, replacing bool) error {
	caps := &ln.Capabilities
	if !slices.Contains(caps.Versions, wire.MLS10) {
		return errorf(ErrCapabilities, "leaf does not support MLS 1.0")
	}
	if !slices.Contains(caps.CipherSuites, suite) {
		return errorf(ErrCapabilities, "leaf does not support the group's ciphersuite")
	}
	var rc wire.RequiredCapabilities
	if ok, err := exts.Decode(wire.ExtensionRequiredCapabilities, &rc); err != nil {
		return fmt.Errorf("%w: %w", ErrCapabilities, err)
	} else if ok && !rc.SatisfiedBy(caps) {
		return errorf(ErrCapabilities, "leaf does not meet the required capabilities")
	}
	for _, e := range ln.Extensions {
		if !isDefaultExtension(e.Type) && !caps.SupportsExtension(e.Type) {
			return errorf(ErrCapabilities, "leaf carries extension %d it does not list", e.Type)
		}
	}
	// Every member supports the group's context extensions (§13.4), a
	// new or updated leaf as much as those a GroupContextExtensions
	// proposal checks.
	for _, e := range exts {
		if !isDefaultExtension(e.Type) && !caps.SupportsExtension(e.Type) {
			return errorf(ErrCapabilities, "leaf does not support the group's extension %d", e.Type)
		}
	}
	if !caps.SupportsCredential(ln.Credential.Type) {
		return errorf(ErrCapabilities, "leaf does not list its own credential type %d", ln.Credential.Type)
	}
	var err error
	t.Members(func(m treemath.LeafIndex, other *wire.LeafNode) bool {
		if replacing && m == self {
			return true
		}
		if !other.Capabilities.SupportsCredential(ln.Credential.Type) {
			err = errorf(ErrCapabilities, "leaf %d does not support credential type %d", m, ln.Credential.Type)
			return false
		}
		if !caps.SupportsCredential(other.Credential.Type) {
			err = errorf(ErrCapabilities, "leaf does not support credential type %d of leaf %d", other.Credential.Type, m)
			return false
		}
		return true
	})
	return err
}

// checkLifetime checks that now is within lt, give or take tolerance
// (§7.2: not_before ≤ now ≤ not_after).
func checkLifetime(lt *wire.Lifetime, now time.Time, tolerance time.Duration) error {
	t := now.Unix()
	slack := int64(tolerance / time.Second)
	// Lifetimes are uint64 seconds; beyond int64 they are in no one's
	// lifetime, and compare as the far future.
	if lt.NotBefore > math.MaxInt64 || int64(lt.NotBefore)-slack > t {
		return fmt.Errorf("%w: not before %d, now %d", ErrLifetime, lt.NotBefore, t)
	}
	if lt.NotAfter <= math.MaxInt64 && int64(lt.NotAfter)+slack < t {
		return fmt.Errorf("%w: not after %d, now %d", ErrLifetime, lt.NotAfter, t)
	}
	return nil
}

func isDefaultExtension(t wire.ExtensionType) bool {
	return t >= wire.ExtensionApplicationID && t <= wire.ExtensionExternalSenders
}

// checkContextExtensions checks new GroupContext extensions: every member
// supports them and meets their required capabilities.
func (g *Group) checkContextExtensions(t *tree.Tree, exts wire.Extensions) error {
	if err := exts.CheckUnique(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidProposal, err)
	}
	var rc wire.RequiredCapabilities
	hasRC, err := exts.Decode(wire.ExtensionRequiredCapabilities, &rc)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidProposal, err)
	}
	// External senders' credentials go through the authentication
	// service like members' (§12.1.8.1).
	var senders wire.ExternalSenders
	if ok, err := exts.Decode(wire.ExtensionExternalSenders, &senders); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidProposal, err)
	} else if ok && g.cfg.Auth != nil {
		for i := range senders {
			if err := g.cfg.Auth.ValidateCredential(&senders[i].Credential, senders[i].SignatureKey); err != nil {
				return fmt.Errorf("%w: external sender %d: %w", ErrCredential, i, err)
			}
		}
	}
	t.Members(func(m treemath.LeafIndex, ln *wire.LeafNode) bool {
		for _, e := range exts {
			if !isDefaultExtension(e.Type) && !ln.Capabilities.SupportsExtension(e.Type) {
				err = errorf(ErrCapabilities, "leaf %d does not support extension %d", m, e.Type)
				return false
			}
		}
		if hasRC && !rc.SatisfiedBy(&ln.Capabilities) {
			err = errorf(ErrCapabilities, "leaf %d does not meet the required capabilities", m)
			return false
		}
		return true
	})
	return err
}
