package group

import (
	"bytes"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// checkResumptionUsage enforces §12.1.4 on a PSK proposal: a resumption
// PSK of usage reinit or branch belongs only to the first commit of a
// group made by a reinit or branch (epoch 0 to 1, §11.2, §11.3), and only
// one of them; an unknown usage is refused.
func (g *Group) checkResumptionUsage(id *wire.PreSharedKeyID, before []wire.PreSharedKeyID) error {
	if id.Type != wire.PSKResumption {
		return nil
	}
	switch id.Usage {
	case wire.UsageApplication:
		return nil
	case wire.UsageReInit, wire.UsageBranch:
	default:
		return errorf(ErrInvalidProposal, "resumption PSK of usage %d", id.Usage)
	}
	if g.ctx.Epoch != 0 {
		return errorf(ErrInvalidProposal, "resumption PSK of usage %d outside a new group's first commit", id.Usage)
	}
	for _, q := range before {
		if q.Type == wire.PSKResumption && q.Usage != wire.UsageApplication {
			return errorf(ErrInvalidProposal, "second reinit or branch PSK")
		}
	}
	return nil
}

// ProposeReInit proposes closing the group in favour of a new one with
// ri's parameters; a commit must then carry it alone.
func (g *Group) ProposeReInit(ri *wire.ReInit, private bool) (*wire.MLSMessage, error) {
	if _, err := ciphersuite.Lookup(ri.CipherSuite); err != nil || ri.Version != wire.MLS10 {
		return nil, errorf(ErrInvalidProposal, "reinit to version %d suite %d", ri.Version, ri.CipherSuite)
	}
	return g.propose(ri, private)
}

// Reinitialize starts the group that this group's ReInit commit asked for
// (§11.2): id (a signing identity in the new suite; nil to keep this
// member's, if the suite is the same) creates it with the ReInit's group
// ID, suite and extensions, and commits the other members' new key
// packages with the reinit PSK of this group's final epoch. The new group
// has the commit pending: MergePendingCommit once the delivery service
// takes it. Joiners Join its Welcome with this group (their copy) as
// Config.Resumption.
func (g *Group) Reinitialize(cfg Config, id *Identity, kps []*wire.KeyPackage) (*Group, *CommitResult, error) {
	ri := g.reinit
	if ri == nil {
		return nil, nil, fmt.Errorf("reinitializing: %w: no reinit commit", ErrInvalidProposal)
	}
	s, err := ciphersuite.Lookup(ri.CipherSuite)
	if err != nil {
		return nil, nil, fmt.Errorf("reinitializing: %w", err)
	}
	psk, err := g.ReInitPSK()
	if err != nil {
		return nil, nil, fmt.Errorf("reinitializing: %w", err)
	}
	return g.successor(cfg, s, id, ri.GroupID, ri.Extensions, kps, psk)
}

// Branch starts a new group, newGroupID, of some of this group's members
// (§11.3): this member creates it in the same suite with its own identity
// and commits the others' new key packages with the branch PSK of the
// current epoch. Like Reinitialize, the commit is pending and joiners pass
// this group as Config.Resumption.
func (g *Group) Branch(cfg Config, newGroupID []byte, extensions wire.Extensions, kps []*wire.KeyPackage) (*Group, *CommitResult, error) {
	if g.reinit != nil {
		return nil, nil, ErrGroupClosed
	}
	psk, err := g.BranchPSK()
	if err != nil {
		return nil, nil, fmt.Errorf("branching: %w", err)
	}
	return g.successor(cfg, g.suite, nil, newGroupID, extensions, kps, psk)
}

func (g *Group) successor(cfg Config, s *ciphersuite.Suite, id *Identity, groupID []byte, exts wire.Extensions, kps []*wire.KeyPackage, psk wire.PreSharedKeyID) (*Group, *CommitResult, error) {
	if id == nil {
		if s.ID() != g.suite.ID() {
			return nil, nil, fmt.Errorf("%w: a new suite needs a new identity", ErrInvalidProposal)
		}
		me := g.tree.Leaf(g.me)
		caps := me.Capabilities
		id = &Identity{Credential: me.Credential, SigPriv: g.sigPriv, SigPub: me.SignatureKey, Capabilities: &caps}
	}
	if cfg.Resumption == nil {
		cfg.Resumption = g
	}
	ng, err := Create(cfg, s, groupID, id, exts)
	if err != nil {
		return nil, nil, err
	}
	res, err := ng.Commit(CommitOptions{Add: kps, PSKs: []wire.PreSharedKeyID{psk}, RatchetTreeInWelcome: true})
	if err != nil {
		return nil, nil, err
	}
	return ng, res, nil
}

// PredecessorGroup is a ResumptionStore that is the old group itself (a
// *Group is one), so that a joiner can check a reinit or branch Welcome
// against it.
type PredecessorGroup interface {
	ResumptionStore
	GroupID() []byte
	Epoch() uint64
	Context() *wire.GroupContext
	ReInit() *wire.ReInit
	Members(fn func(treemath.LeafIndex, *wire.LeafNode) bool)
}

// checkWelcomePSKs makes a joiner's checks on the resumption PSKs of a
// Welcome (§12.4.3.1, §11.2, §11.3): at most one of usage reinit or
// branch, only in a group's first epoch; a reinit group has the
// parameters the old group's ReInit named and starts from its final epoch;
// a branch keeps the old group's version and suite and has only old
// members. The old group's own checks need Config.Resumption to be a
// PredecessorGroup.
func checkWelcomePSKs(cfg Config, gi *wire.GroupInfo, psks []wire.PreSharedKeyID, members func(fn func(treemath.LeafIndex, *wire.LeafNode) bool)) error {
	var found *wire.PreSharedKeyID
	for i := range psks {
		id := &psks[i]
		if id.Type != wire.PSKResumption || id.Usage == wire.UsageApplication {
			continue
		}
		if id.Usage != wire.UsageReInit && id.Usage != wire.UsageBranch {
			return fmt.Errorf("%w: resumption PSK of usage %d", ErrInvalidWelcome, id.Usage)
		}
		if found != nil {
			return fmt.Errorf("%w: second reinit or branch PSK", ErrInvalidWelcome)
		}
		found = id
	}
	if found == nil {
		return nil
	}
	gc := &gi.GroupContext
	if gc.Epoch != 1 {
		return fmt.Errorf("%w: reinit or branch PSK in epoch %d", ErrInvalidWelcome, gc.Epoch)
	}
	old, ok := cfg.Resumption.(PredecessorGroup)
	if !ok || !bytes.Equal(old.GroupID(), found.GroupID) {
		return nil
	}
	oc := old.Context()
	switch found.Usage {
	case wire.UsageReInit:
		ri := old.ReInit()
		if ri == nil {
			return fmt.Errorf("%w: reinit PSK of a group not closed by reinit", ErrInvalidWelcome)
		}
		if found.Epoch != old.Epoch() {
			return fmt.Errorf("%w: reinit PSK of epoch %d, not the old group's last (%d)", ErrInvalidWelcome, found.Epoch, old.Epoch())
		}
		if !bytes.Equal(ri.GroupID, gc.GroupID) || ri.Version != gc.Version || ri.CipherSuite != gc.CipherSuite ||
			!bytes.Equal(codec.Marshal(&ri.Extensions), codec.Marshal(&gc.Extensions)) {
			return fmt.Errorf("%w: new group differs from the reinit proposal", ErrInvalidWelcome)
		}
	case wire.UsageBranch:
		if oc.Version != gc.Version || oc.CipherSuite != gc.CipherSuite {
			return fmt.Errorf("%w: branch to another version or suite", ErrInvalidWelcome)
		}
		var err error
		members(func(l treemath.LeafIndex, ln *wire.LeafNode) bool {
			inOld := false
			old.Members(func(_ treemath.LeafIndex, on *wire.LeafNode) bool {
				inOld = sameIdentity(&on.Credential, &ln.Credential) == nil
				return !inOld
			})
			if !inOld {
				err = fmt.Errorf("%w: branch member at leaf %d is not in the old group", ErrInvalidWelcome, l)
			}
			return err == nil
		})
		return err
	}
	return nil
}
