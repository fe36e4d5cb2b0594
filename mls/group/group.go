// Package group is the MLS group state machine (RFC 9420 §§11–12): create
// a group, make KeyPackages, join from a Welcome, propose and commit Add,
// Update, Remove, PreSharedKey and GroupContextExtensions changes (with or
// without an UpdatePath, by value or by reference), welcome new members,
// join by external commit (and resync), close a group by ReInit and start
// its successor (Reinitialize) or a subgroup (Branch), and protect and
// unprotect application messages.
//
// A Group is one member's view of one epoch; each commit moves it to the
// next. It is not safe for concurrent use. Its state (which holds private
// keys) is saved and restored with Save and Load, through a Store.
package group

import (
	"errors"
	"fmt"
	"time"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/keyschedule"
	"github.com/lmbridge/lmbridge/mls/secrettree"
	"github.com/lmbridge/lmbridge/mls/tree"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// Sentinel errors, wrapped with what was being done.
var (
	// ErrWrongGroup means a message for another group.
	ErrWrongGroup = errors.New("group: message for another group")
	// ErrWrongEpoch means a message for an epoch other than the current one.
	ErrWrongEpoch = errors.New("group: message for another epoch")
	// ErrNotMember means a sender, signer or leaf that is not a member.
	ErrNotMember = errors.New("group: not a member")
	// ErrInvalidProposal means a proposal or proposal list that breaks the
	// rules of RFC 9420 §12.2 (or names a proposal this member has not seen).
	ErrInvalidProposal = errors.New("group: invalid proposal")
	// ErrInvalidCommit means a commit that does not follow RFC 9420 §12.4.
	ErrInvalidCommit = errors.New("group: invalid commit")
	// ErrInvalidWelcome means a Welcome this KeyPackage cannot join from.
	ErrInvalidWelcome = errors.New("group: invalid welcome")
	// ErrUnknownPSK means a PSK that the PSK store does not hold.
	ErrUnknownPSK = errors.New("group: unknown PSK")
	// ErrLifetime means a key package leaf outside its lifetime (§7.2).
	ErrLifetime = errors.New("group: leaf outside its lifetime")
	// ErrCapabilities means a leaf or extension that capabilities forbid.
	ErrCapabilities = errors.New("group: unsupported capability")
	// ErrCredential means the authentication service rejected a credential.
	ErrCredential = errors.New("group: credential rejected")
	// ErrPendingCommit means an own commit is pending (or none is).
	ErrPendingCommit = errors.New("group: pending commit state")
	// ErrGroupClosed means a group that a ReInit commit closed: its
	// members move to the new group (see ReInit).
	ErrGroupClosed = errors.New("group: closed by reinit")
	// ErrWireFormat means a message whose wire format this operation does not
	// take (e.g. an application message in a PublicMessage).
	ErrWireFormat = errors.New("group: wrong wire format")
)

// AuthService validates credentials: the authentication service of RFC 9420
// §5.3.1, the application's hook for identity.
type AuthService interface {
	// ValidateCredential accepts or rejects cred as the credential of a
	// member with signature public key sigKey.
	ValidateCredential(cred *wire.Credential, sigKey []byte) error
}

// SuccessorValidator is an optional extension of AuthService: it decides
// whether a member's new credential may replace its old one (§5.3.1): in
// an Update, in the leaf of a member's commit, and when an external commit
// removes the joiner's old leaf (a resync, §12.4.3.2). Without it the two
// must present the same identity (sameIdentity).
type SuccessorValidator interface {
	ValidateSuccessor(old, new *wire.Credential) error
}

// PSKStore finds external pre-shared keys by ID.
type PSKStore interface {
	ExternalPSK(id []byte) (secret []byte, ok bool)
}

// ResumptionStore finds the resumption PSKs of other groups, for a group
// that a reinit or branch starts from one (a *Group is one, for its own
// recent epochs).
type ResumptionStore interface {
	ResumptionPSK(groupID []byte, epoch uint64) (secret []byte, ok bool)
}

// Config is what a Group needs beyond its state.
type Config struct {
	// Auth validates every credential the group sees; nil accepts all
	// (only for tests).
	Auth AuthService
	// PSKs holds external PSKs; nil holds none.
	PSKs PSKStore
	// Resumption holds resumption PSKs of other groups (the old group, for
	// a reinit or branch); nil holds none. If it is the old group itself
	// (a PredecessorGroup, such as the joiner's *Group), Join also checks a
	// reinit or branch Welcome against it.
	Resumption ResumptionStore
	// SecretTree bounds the out-of-order window of each epoch.
	SecretTree secrettree.Config
	// PaddingBlock pads PrivateMessage content to a multiple of this many
	// bytes (0: no padding).
	PaddingBlock int
	// Now is the clock for key package lifetimes; nil means time.Now.
	Now func() time.Time
	// LifetimeTolerance is the slack allowed on the lifetimes of key
	// packages that others' commits add and of the key_package leaves of a
	// tree joined (clock skew, delivery delay: §7.3 makes those checks
	// RECOMMENDED, not MUST). A key package this member adds must be
	// within its lifetime exactly.
	LifetimeTolerance time.Duration
	// CheckTreeLifetimes makes a joiner check the lifetimes of the
	// key_package leaves of the tree it joins (give or take
	// LifetimeTolerance). §7.3 RECOMMENDS it but does not require it, and
	// it is off by default: a member added long ago that has never
	// committed or updated (often the group's creator) still has its key
	// package's leaf, whose lifetime may well have ended (the MLS WG
	// passive-client vectors are such trees).
	CheckTreeLifetimes bool
	// PastEpochs is how many previous epochs' application keys are kept,
	// so that application messages sent before a commit but delivered
	// after it still decrypt (0: none). Handshake messages are accepted
	// only for the current epoch.
	PastEpochs int
	// MaxPastResumptionPSKs is how many past epochs' resumption PSKs are
	// kept for PSK proposals (0: DefaultMaxPastResumptionPSKs).
	MaxPastResumptionPSKs int
}

// DefaultMaxPastResumptionPSKs is Config.MaxPastResumptionPSKs's default.
const DefaultMaxPastResumptionPSKs = 8

// Group is one member's state of an MLS group in its current epoch.
type Group struct {
	cfg   Config
	suite *ciphersuite.Suite

	ctx      wire.GroupContext
	ctxBytes []byte

	tree *tree.Tree
	keys *tree.PrivateKeys
	me   treemath.LeafIndex
	// sigPriv is this member's signature private key.
	sigPriv []byte

	epoch   *keyschedule.Epoch
	secrets *secrettree.Tree
	// interim is the interim transcript hash of this epoch.
	interim []byte

	// proposals are those received (or sent) in this epoch, in order.
	proposals []cachedProposal
	// resumption holds recent epochs' resumption PSKs, oldest first.
	resumption []resumptionPSK
	// pendingUpdates are the leaf keys of this member's Update proposals
	// of this epoch, until one is committed.
	pendingUpdates []pendingUpdate
	// pending is this member's own commit, waiting for the delivery
	// service to sequence it.
	pending *pendingCommit
	// reinit is set once a ReInit commit closed the group.
	reinit *wire.ReInit
	// past holds recent epochs' application keys, oldest first.
	past []pastEpoch
}

// pastEpoch is what decrypting and checking a late application message of
// an earlier epoch takes.
type pastEpoch struct {
	epoch            uint64
	ctxBytes         []byte
	tree             *tree.Tree
	secrets          *secrettree.Tree
	senderDataSecret []byte
}

// retire keeps the current epoch's application keys (up to
// Config.PastEpochs of them) before the group moves on.
func (g *Group) retire() {
	if g.secrets == nil {
		return
	}
	if g.cfg.PastEpochs <= 0 {
		g.secrets.Wipe()
		return
	}
	g.past = append(g.past, pastEpoch{epoch: g.ctx.Epoch, ctxBytes: g.ctxBytes, tree: g.tree,
		secrets: g.secrets, senderDataSecret: g.epoch.SenderDataSecret})
	if n := len(g.past) - g.cfg.PastEpochs; n > 0 {
		for _, p := range g.past[:n] {
			p.secrets.Wipe()
			clear(p.senderDataSecret)
		}
		clear(g.past[:n])
		g.past = append(g.past[:0], g.past[n:]...)
	}
}

type cachedProposal struct {
	ref      []byte
	proposal wire.Proposal
	sender   wire.Sender
}

type pendingUpdate struct {
	pub, priv []byte
}

type resumptionPSK struct {
	epoch  uint64
	secret []byte
}

// Suite is the group's ciphersuite.
func (g *Group) Suite() *ciphersuite.Suite { return g.suite }

// GroupID is the group's ID.
func (g *Group) GroupID() []byte { return g.ctx.GroupID }

// Epoch is the current epoch number.
func (g *Group) Epoch() uint64 { return g.ctx.Epoch }

// LeafIndex is this member's leaf.
func (g *Group) LeafIndex() treemath.LeafIndex { return g.me }

// Context is the current GroupContext. Do not modify it.
func (g *Group) Context() *wire.GroupContext { return &g.ctx }

// EpochAuthenticator is the epoch's authenticator, which members may compare
// out of band to check they share the epoch.
func (g *Group) EpochAuthenticator() []byte { return g.epoch.EpochAuthenticator }

// Export is the MLS-Exporter of the current epoch.
func (g *Group) Export(label string, context []byte, length int) []byte {
	return g.epoch.Export(label, context, length)
}

// Tree is the group's ratchet tree. Do not modify it.
func (g *Group) Tree() *tree.Tree { return g.tree }

// Members calls fn for each member's leaf index and leaf node, in order.
func (g *Group) Members(fn func(treemath.LeafIndex, *wire.LeafNode) bool) { g.tree.Members(fn) }

// setContext installs a new group context and its encoding.
func (g *Group) setContext(ctx wire.GroupContext) {
	g.ctx = ctx
	g.ctxBytes = codec.Marshal(&g.ctx)
}

// startEpoch installs an epoch's secrets and a fresh secret tree, and keeps
// the epoch's resumption PSK.
func (g *Group) startEpoch(e *keyschedule.Epoch, confirmationTag []byte) {
	if old := g.epoch; old != nil {
		// The previous epoch's secrets go (§9.2, §16.6); its sender data
		// secret stays with its kept application keys, its resumption PSK
		// in g.resumption.
		for _, s := range []*[]byte{&old.WelcomeSecret, &old.EpochSecret, &old.ExporterSecret, &old.ExternalSecret,
			&old.ConfirmationKey, &old.MembershipKey, &old.InitSecret} {
			clear(*s)
			*s = nil
		}
		if g.cfg.PastEpochs <= 0 {
			clear(old.SenderDataSecret)
		}
	}
	for _, u := range g.pendingUpdates {
		clear(u.priv)
	}
	g.epoch = e
	g.secrets = secrettree.New(g.suite, e.EncryptionSecret, g.tree.NumLeaves(), g.cfg.SecretTree)
	// The secret tree has its own copy; the RFC wants the rest gone (§9.2).
	clear(e.EncryptionSecret)
	e.EncryptionSecret = nil
	clear(e.JoinerSecret)
	e.JoinerSecret = nil
	g.interim = interimHash(g.suite, g.ctx.ConfirmedTranscriptHash, confirmationTag)
	g.proposals = nil
	g.pendingUpdates = nil
	max := g.cfg.MaxPastResumptionPSKs
	if max <= 0 {
		max = DefaultMaxPastResumptionPSKs
	}
	g.resumption = append(g.resumption, resumptionPSK{epoch: g.ctx.Epoch, secret: e.ResumptionPSK})
	if n := len(g.resumption) - max; n > 0 {
		for _, r := range g.resumption[:n] {
			clear(r.secret)
		}
		g.resumption = append(g.resumption[:0], g.resumption[n:]...)
	}
}

func (g *Group) now() time.Time {
	if g.cfg.Now != nil {
		return g.cfg.Now()
	}
	return time.Now()
}

func (g *Group) validateCredential(ln *wire.LeafNode) error {
	if g.cfg.Auth == nil {
		return nil
	}
	if err := g.cfg.Auth.ValidateCredential(&ln.Credential, ln.SignatureKey); err != nil {
		return fmt.Errorf("%w: %w", ErrCredential, err)
	}
	return nil
}

// validateSuccessor checks that next may replace the credential of old
// (§5.3.1), through Config.Auth's SuccessorValidator or else sameIdentity.
func (g *Group) validateSuccessor(old, next *wire.LeafNode) error {
	if sv, ok := g.cfg.Auth.(SuccessorValidator); ok {
		if err := sv.ValidateSuccessor(&old.Credential, &next.Credential); err != nil {
			return fmt.Errorf("%w: not a successor: %w", ErrCredential, err)
		}
		return nil
	}
	if err := sameIdentity(&old.Credential, &next.Credential); err != nil {
		return fmt.Errorf("%w: not a successor: %w", ErrCredential, err)
	}
	return nil
}

func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}

// CachedProposal is a proposal received (or sent) in the current epoch, which the next commit includes.
type CachedProposal struct {
	Ref      []byte
	Proposal wire.Proposal
	Sender   wire.Sender
}

// CachedProposals lists the proposals the next Commit will include by reference, in order, so that an application
// can tell what a commit will do before making it (a MIMI client adds the matching room-state change). Do not
// modify them.
func (g *Group) CachedProposals() []CachedProposal {
	out := make([]CachedProposal, len(g.proposals))
	for i, p := range g.proposals {
		out[i] = CachedProposal{Ref: p.ref, Proposal: p.proposal, Sender: p.sender}
	}
	return out
}
