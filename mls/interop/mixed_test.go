package interop_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	mlsgroup "github.com/lmbridge/lmbridge/mls/group"
	"github.com/lmbridge/lmbridge/mls/interop"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// peer is one member of a mixed group: a Go *mlsgroup.Group (goSide), or a ts-mls client in the harness named by
// mixed.client. Before it joins, a Go peer holds its KeyPackage's private keys; either kind holds its KeyPackage
// MLSMessage.
type peer struct {
	name   string
	goSide bool
	g      *mlsgroup.Group
	kp     *wire.KeyPackage
	kpPriv *mlsgroup.KeyPackagePrivate
	id     *mlsgroup.Identity
	kpMsg  []byte
}

func (p *peer) String() string {
	if p.goSide {
		return p.name + "(go)"
	}
	return p.name + "(ts)"
}

// mixed is a group whose members are split between the Go library and ts-mls. The test carries every message
// between them as bytes, as a delivery service would.
type mixed struct {
	t       *testing.T
	ctx     context.Context
	h       *interop.Harness
	s       *ciphersuite.Suite
	suite   uint16
	prefix  string
	members []*peer
	epoch   uint64
	// ds is the Go library's delivery-service view, following every PublicMessage handshake from the GroupInfo it
	// started from; nil when not following.
	ds *mlsgroup.PublicGroup
}

func (x *mixed) client(p *peer) string { return x.prefix + p.name }

// pskID and pskSecret are an external PSK that every Go member holds (goConfig) and the ts-mls members are given
// (Harness.PSK) before a commit injects it.
var pskID, pskSecret = []byte("lmbridge interop psk"), bytes.Repeat([]byte{0x5a}, 32)

type pskStore map[string][]byte

func (m pskStore) ExternalPSK(id []byte) ([]byte, bool) { s, ok := m[string(id)]; return s, ok }

// goConfig is every Go member's configuration.
var goConfig = mlsgroup.Config{PSKs: pskStore{string(pskID): pskSecret}}

// reload replaces a Go member's group with one restored from its saved state, as after a restart.
func (x *mixed) reload(p *peer) {
	x.t.Helper()
	var st mlsgroup.MemoryStore
	if err := p.g.Save(x.ctx, &st); err != nil {
		x.t.Fatal(err)
	}
	g, err := mlsgroup.Load(x.ctx, &st, p.g.GroupID(), goConfig)
	if err != nil {
		x.t.Fatalf("%s's saved state does not load: %v", p, err)
	}
	p.g = g
}

func (x *mixed) decode(what string, b []byte) *wire.MLSMessage {
	x.t.Helper()
	var m wire.MLSMessage
	if err := codec.Unmarshal(b, &m); err != nil {
		x.t.Fatalf("%s does not decode: %v", what, err)
	}
	return &m
}

// newPeer makes a would-be member with a fresh KeyPackage on its side.
func (x *mixed) newPeer(name string, goSide bool) *peer {
	x.t.Helper()
	p := &peer{name: name, goSide: goSide}
	if !goSide {
		kp, err := x.h.KeyPackage(x.ctx, x.client(p), x.suite, []byte(name))
		if err != nil {
			x.t.Fatal(err)
		}
		p.kpMsg = kp
		return p
	}
	var err error
	if p.id, err = mlsgroup.NewIdentity(x.s, []byte(name)); err != nil {
		x.t.Fatal(err)
	}
	if p.kp, p.kpPriv, err = mlsgroup.NewKeyPackage(x.s, p.id); err != nil {
		x.t.Fatal(err)
	}
	p.kpMsg = codec.Marshal(&wire.MLSMessage{KeyPackage: p.kp})
	return p
}

// create makes p the creator of the group in epoch 0.
func (x *mixed) create(p *peer, groupID []byte) {
	x.t.Helper()
	if p.goSide {
		g, err := mlsgroup.Create(goConfig, x.s, groupID, p.id, nil)
		if err != nil {
			x.t.Fatal(err)
		}
		p.g = g
	} else if _, err := x.h.Create(x.ctx, x.client(p), x.suite, groupID, []byte(p.name)); err != nil {
		x.t.Fatal(err)
	}
	x.members = []*peer{p}
}

func (x *mixed) leaf(p *peer) uint32 {
	x.t.Helper()
	if p.goSide {
		return uint32(p.g.LeafIndex())
	}
	st, err := x.h.State(x.ctx, x.client(p))
	if err != nil {
		x.t.Fatal(err)
	}
	return st.Leaf
}

// change is what one commit does. An empty change is an update: a commit with a path and no proposals.
type change struct {
	add    []*peer
	remove []*peer
	// noTree leaves the ratchet tree out of the Welcome; joiners get it out of band.
	noTree bool
	// private frames the commit as a PrivateMessage.
	private bool
	// psk injects the external PSK pskID.
	psk bool
}

// committed is a commit's bytes as they travel.
type committed struct {
	commit, welcome, tree []byte
}

// commit has by make a commit and move to the new epoch at once (its delivery service accepted it).
func (x *mixed) commit(by *peer, c change) committed {
	x.t.Helper()
	if by.goSide {
		opts := mlsgroup.CommitOptions{RatchetTreeInWelcome: !c.noTree, Private: c.private}
		for _, p := range c.add {
			opts.Add = append(opts.Add, x.decode("KeyPackage of "+p.String(), p.kpMsg).KeyPackage)
		}
		for _, p := range c.remove {
			opts.Remove = append(opts.Remove, treemath.LeafIndex(x.leaf(p)))
		}
		if c.psk {
			id, err := by.g.NewPSKID(pskID)
			if err != nil {
				x.t.Fatal(err)
			}
			opts.PSKs = append(opts.PSKs, id)
		}
		res, err := by.g.Commit(opts)
		if err != nil {
			x.t.Fatalf("%s failed to commit: %v", by, err)
		}
		if err = by.g.MergePendingCommit(); err != nil {
			x.t.Fatal(err)
		}
		out := committed{commit: codec.Marshal(res.Commit), tree: by.g.Tree().Encode()}
		if res.Welcome != nil {
			out.welcome = codec.Marshal(&wire.MLSMessage{Welcome: res.Welcome})
		}
		return out
	}
	opts := interop.CommitOptions{NoRatchetTree: c.noTree, Private: c.private}
	var res interop.Commit
	var err error
	if len(c.remove) == 0 && len(c.add) > 0 && !c.psk {
		kps := make([][]byte, len(c.add))
		for i, p := range c.add {
			kps[i] = p.kpMsg
		}
		res, err = x.h.Add(x.ctx, x.client(by), kps, opts)
	} else {
		var props []interop.Proposal
		for _, p := range c.add {
			props = append(props, interop.AddProposal(p.kpMsg))
		}
		for _, p := range c.remove {
			props = append(props, interop.RemoveProposal(x.leaf(p)))
		}
		if c.psk {
			props = append(props, interop.PSKProposal(pskID, nil))
		}
		res, err = x.h.Commit(x.ctx, x.client(by), props, opts)
	}
	if err != nil {
		x.t.Fatalf("%s failed to commit: %v", by, err)
	}
	return committed{commit: res.Message, welcome: res.Welcome, tree: res.Tree}
}

// process hands msg to p and returns what it was and, for an application message, its content; an error is the
// refusal, for the caller to check.
func (x *mixed) process(p *peer, msg []byte) (kind string, data []byte, removed bool, err error) {
	if !p.goSide {
		r, err := x.h.Process(x.ctx, x.client(p), msg)
		if err != nil {
			return "", nil, false, err
		}
		return r.Kind, r.Plaintext, r.Kind == "commit" && r.Active != "active", nil
	}
	var m wire.MLSMessage
	if err = codec.Unmarshal(msg, &m); err != nil {
		return "", nil, false, err
	}
	r, err := p.g.Process(&m)
	if err != nil {
		return "", nil, false, err
	}
	switch r.Kind {
	case mlsgroup.KindApplication:
		return "application", r.ApplicationData, false, nil
	case mlsgroup.KindProposal:
		return "proposal", nil, false, nil
	case mlsgroup.KindCommit:
		return "commit", nil, r.Removed, nil
	}
	return fmt.Sprintf("kind %d", r.Kind), nil, false, nil
}

// deliver hands a handshake message from sender to every other member, each of which must take it as kind; then to
// the delivery-service view when it is a commit in a PublicMessage.
func (x *mixed) deliver(sender *peer, msg []byte, kind string) {
	x.t.Helper()
	for _, p := range x.members {
		if p == sender {
			continue
		}
		got, _, removed, err := x.process(p, msg)
		if err != nil {
			x.t.Fatalf("%s refused a %s from %s: %v", p, kind, sender, err)
		}
		if got != kind || removed {
			x.t.Fatalf("%s took a %s from %s as a %s (removed %v)", p, kind, sender, got, removed)
		}
	}
	if x.ds != nil {
		m := x.decode("handshake", msg)
		if m.PublicMessage != nil {
			if _, err := x.ds.Process(m); err != nil {
				x.t.Fatalf("the delivery-service view refused a %s from %s: %v", kind, sender, err)
			}
		}
	}
}

// deliverRemoval delivers a commit that removes gone: the others move on, gone learns it is out.
func (x *mixed) deliverRemoval(sender *peer, msg []byte, gone *peer) {
	x.t.Helper()
	x.members = slices.DeleteFunc(x.members, func(p *peer) bool { return p == gone })
	x.deliver(sender, msg, "commit")
	kind, _, removed, err := x.process(gone, msg)
	if err != nil {
		x.t.Fatalf("%s refused the commit that removes it: %v", gone, err)
	}
	if kind != "commit" || !removed {
		x.t.Fatalf("%s took the commit that removes it as a %s, removed %v", gone, kind, removed)
	}
}

// join has p join from a Welcome; tree is the ratchet tree given out of band, or nil.
func (x *mixed) join(p *peer, welcome, tree []byte) {
	x.t.Helper()
	if p.goSide {
		var opts mlsgroup.JoinOptions
		if tree != nil {
			if err := codec.Unmarshal(tree, &opts.RatchetTree); err != nil {
				x.t.Fatalf("the ratchet tree for %s does not decode: %v", p, err)
			}
		}
		g, err := mlsgroup.Join(goConfig, x.decode("Welcome", welcome).Welcome, p.kp, p.kpPriv, opts)
		if err != nil {
			x.t.Fatalf("%s failed to join from the Welcome: %v", p, err)
		}
		p.g, p.kpPriv = g, nil
	} else if _, err := x.h.Join(x.ctx, x.client(p), welcome, tree); err != nil {
		x.t.Fatal(err)
	}
	x.members = append(x.members, p)
}

// groupInfo is p's signed GroupInfo with external_pub (and the tree, unless withoutTree), and the tree.
func (x *mixed) groupInfo(p *peer, withoutTree bool) (gi, tree []byte) {
	x.t.Helper()
	if !p.goSide {
		gi, tree, err := x.h.GroupInfo(x.ctx, x.client(p), withoutTree)
		if err != nil {
			x.t.Fatal(err)
		}
		return gi, tree
	}
	info, err := p.g.GroupInfo(!withoutTree)
	if err != nil {
		x.t.Fatal(err)
	}
	return codec.Marshal(&wire.MLSMessage{GroupInfo: info}), p.g.Tree().Encode()
}

// externalJoin has p join by an external commit from a GroupInfo (and the tree, when the GroupInfo has none), and
// returns the commit for the members.
func (x *mixed) externalJoin(p *peer, gi, tree []byte) []byte {
	x.t.Helper()
	if !p.goSide {
		c, _, err := x.h.ExternalJoin(x.ctx, x.client(p), gi, tree, []byte(p.name))
		if err != nil {
			x.t.Fatal(err)
		}
		return c
	}
	var opts mlsgroup.ExternalJoinOptions
	if tree != nil {
		if err := codec.Unmarshal(tree, &opts.RatchetTree); err != nil {
			x.t.Fatal(err)
		}
	}
	g, c, err := mlsgroup.JoinExternal(goConfig, x.decode("GroupInfo", gi).GroupInfo, p.id, opts)
	if err != nil {
		x.t.Fatalf("%s failed to join externally: %v", p, err)
	}
	p.g = g
	return codec.Marshal(c)
}

// view is what a member reports of its epoch, whichever side it is on.
type view struct {
	epoch                         uint64
	auth, exporter, treeHash, cth []byte
	groupID                       []byte
	members                       []interop.Member
}

func (x *mixed) view(p *peer, label string, ctx []byte) view {
	x.t.Helper()
	if !p.goSide {
		st, err := x.h.Export(x.ctx, x.client(p), label, ctx, 32)
		if err != nil {
			x.t.Fatal(err)
		}
		if st.Active != "active" {
			x.t.Fatalf("%s is %q, want active", p, st.Active)
		}
		return view{st.Epoch, st.EpochAuthenticator, st.Exporter, st.TreeHash, st.ConfirmedTranscriptHash, st.GroupID, st.Members}
	}
	gc := p.g.Context()
	v := view{p.g.Epoch(), p.g.EpochAuthenticator(), p.g.Export(label, ctx, 32), p.g.Tree().Hash(), gc.ConfirmedTranscriptHash, p.g.GroupID(), nil}
	if !bytes.Equal(v.treeHash, gc.TreeHash) {
		x.t.Fatalf("%s's tree hashes to %x, its group context has %x", p, v.treeHash, gc.TreeHash)
	}
	p.g.Members(func(l treemath.LeafIndex, leaf *wire.LeafNode) bool {
		v.members = append(v.members, interop.Member{Leaf: uint32(l), Identity: leaf.Credential.Identity})
		return true
	})
	return v
}

// agree checks that every member, on either side, is in epoch want and agrees on the epoch authenticator, an
// exporter value, the tree hash, the confirmed transcript hash and the member list; so does the delivery-service
// view on the tree hash. It returns the epoch authenticator.
func (x *mixed) agree(want uint64) []byte {
	x.t.Helper()
	label, ctx := "lmbridge interop", []byte(fmt.Sprintf("epoch %d", want))
	first := x.view(x.members[0], label, ctx)
	if len(first.auth) != x.s.HashSize() || len(first.exporter) != 32 {
		x.t.Fatalf("%s reports an epoch authenticator of %d bytes and an exporter value of %d", x.members[0], len(first.auth), len(first.exporter))
	}
	for _, p := range x.members {
		v := first
		if p != x.members[0] {
			v = x.view(p, label, ctx)
		}
		if v.epoch != want {
			x.t.Fatalf("%s is in epoch %d, want %d", p, v.epoch, want)
		}
		for _, c := range []struct {
			what string
			a, b []byte
		}{
			{"epoch_authenticator", first.auth, v.auth},
			{"exporter value", first.exporter, v.exporter},
			{"tree hash", first.treeHash, v.treeHash},
			{"confirmed transcript hash", first.cth, v.cth},
			{"group id", first.groupID, v.groupID},
		} {
			if !bytes.Equal(c.a, c.b) {
				x.t.Fatalf("epoch %d: %s has %s %x, %s has %x", want, x.members[0], c.what, c.a, p, c.b)
			}
		}
		if !slices.EqualFunc(first.members, v.members, func(a, b interop.Member) bool {
			return a.Leaf == b.Leaf && bytes.Equal(a.Identity, b.Identity)
		}) {
			x.t.Fatalf("epoch %d: %s sees members %v, %s sees %v", want, x.members[0], first.members, p, v.members)
		}
	}
	if len(first.members) != len(x.members) {
		x.t.Fatalf("epoch %d: the tree holds %d members, want %d", want, len(first.members), len(x.members))
	}
	if x.ds != nil {
		if x.ds.Epoch() != want || !bytes.Equal(x.ds.Tree().Hash(), first.treeHash) {
			x.t.Fatalf("epoch %d: the delivery-service view is in epoch %d with tree hash %x, the members have %x", want, x.ds.Epoch(), x.ds.Tree().Hash(), first.treeHash)
		}
	}
	x.epoch = want
	return first.auth
}

func (x *mixed) send(from *peer, text []byte) []byte {
	x.t.Helper()
	if !from.goSide {
		msg, err := x.h.Send(x.ctx, x.client(from), text)
		if err != nil {
			x.t.Fatal(err)
		}
		return msg
	}
	m, err := from.g.Protect(text, nil)
	if err != nil {
		x.t.Fatal(err)
	}
	return codec.Marshal(m)
}

// chat has every member send a message that every other member decrypts.
func (x *mixed) chat() {
	x.t.Helper()
	for _, from := range x.members {
		text := []byte(fmt.Sprintf("%s says hello in epoch %d", from, x.epoch))
		msg := x.send(from, text)
		for _, to := range x.members {
			if to == from {
				continue
			}
			kind, data, _, err := x.process(to, msg)
			if err != nil {
				x.t.Fatalf("%s could not read %s's message: %v", to, from, err)
			}
			if kind != "application" || !bytes.Equal(data, text) {
				x.t.Fatalf("%s got %s %q from %s, want application %q", to, kind, data, from, text)
			}
		}
	}
}

// refusedByAll checks that every member but the sender refuses a tampered copy of msg (each of a few single-bit
// flips), and that the delivery-service view refuses a tampered PublicMessage too.
func (x *mixed) refusedByAll(sender *peer, msg []byte, what string) {
	x.t.Helper()
	for _, at := range []int{len(msg) / 3, len(msg) / 2, len(msg) - 1} {
		bad := slices.Clone(msg)
		bad[at] ^= 0x01
		for _, p := range x.members {
			if p == sender {
				continue
			}
			if kind, _, _, err := x.process(p, bad); err == nil {
				x.t.Fatalf("%s took a %s from %s with byte %d of %d flipped as a %s", p, what, sender, at, len(msg), kind)
			}
		}
		if x.ds != nil && x.decode(what, msg).PublicMessage != nil {
			var m wire.MLSMessage
			if codec.Unmarshal(bad, &m) == nil {
				// The view has no membership key: a flip in the membership tag is beyond what it can check.
				if at == len(msg)-1 {
					continue
				}
				if _, err := x.ds.Process(&m); err == nil {
					x.t.Fatalf("the delivery-service view took a %s from %s with byte %d of %d flipped", what, sender, at, len(msg))
				}
			}
		}
	}
}

// TestMixedInterop runs one group whose members are split between the Go library and ts-mls, for every suite:
// each side creates a group the other joins, commits adds, updates (with a path) and removes that the other
// processes, joins externally from the other's GroupInfo, and exchanges application messages; every member compares
// the epoch authenticator and an exporter value after every epoch, and refuses tampered commits and messages.
func TestMixedInterop(t *testing.T) {
	t.Parallel()
	h := interop.StartT(t)
	for _, id := range suites {
		t.Run(fmt.Sprintf("suite%d", id), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			s, err := ciphersuite.Lookup(ciphersuite.ID(id))
			if err != nil {
				t.Fatal(err)
			}
			tsCreates(t, &mixed{t: t, ctx: ctx, h: h, s: s, suite: id, prefix: fmt.Sprintf("mt%d-", id)})
			goCreates(t, &mixed{t: t, ctx: ctx, h: h, s: s, suite: id, prefix: fmt.Sprintf("mg%d-", id)})
			outsiders(t, &mixed{t: t, ctx: ctx, h: h, s: s, suite: id, prefix: fmt.Sprintf("me%d-", id)})
		})
	}
}

// tsCreates: ts-mls creates the group and adds a Go member, which joins from the Welcome; then both sides commit.
func tsCreates(t *testing.T, x *mixed) {
	groupID := make([]byte, 16)
	_, _ = rand.Read(groupID)
	alice, bob, carol, dave := x.newPeer("alice", false), x.newPeer("bob", true), x.newPeer("carol", false), x.newPeer("dave", true)

	// Epoch 0 and 1: alice (ts-mls) creates the group and adds bob (Go) in an add-only commit without a path.
	x.create(alice, groupID)
	x.agree(0)
	c := x.commit(alice, change{add: []*peer{bob}})
	if c.welcome == nil {
		t.Fatal("alice's add produced no Welcome")
	}
	x.join(bob, c.welcome, nil)
	auth1 := x.agree(1)
	x.chat()

	// The delivery-service view follows the group from here, from bob's GroupInfo.
	gi, _ := x.groupInfo(bob, false)
	ds, err := mlsgroup.NewPublicGroup(mlsgroup.Config{}, x.decode("GroupInfo", gi).GroupInfo, nil)
	if err != nil {
		t.Fatal(err)
	}
	x.ds = ds

	// Epoch 2: bob (Go) adds carol (ts-mls) and dave (Go) in one commit with a path; the tree travels out of band.
	c = x.commit(bob, change{add: []*peer{carol, dave}, noTree: true})
	x.refusedByAll(bob, c.commit, "commit")
	x.deliver(bob, c.commit, "commit")
	x.join(carol, c.welcome, c.tree)
	x.join(dave, c.welcome, c.tree)
	if auth2 := x.agree(2); bytes.Equal(auth1, auth2) {
		t.Fatal("the epoch authenticator did not change from epoch 1 to 2")
	}
	x.chat()

	// Epoch 3: dave (Go) updates: a commit with a path and no proposals.
	c = x.commit(dave, change{})
	x.refusedByAll(dave, c.commit, "commit")
	x.deliver(dave, c.commit, "commit")
	x.agree(3)

	// Epoch 4: carol (ts-mls) updates with an empty commit with a path.
	c = x.commit(carol, change{})
	x.refusedByAll(carol, c.commit, "commit")
	x.deliver(carol, c.commit, "commit")
	x.agree(4)
	// The same commit again is for an epoch that has passed, on both sides.
	for _, p := range []*peer{alice, bob} {
		if _, _, _, err = x.process(p, c.commit); err == nil {
			t.Fatalf("%s processed carol's commit a second time", p)
		}
	}
	x.chat()

	// Epoch 5: a PrivateMessage commit from each side in turn (5 and 6).
	c = x.commit(bob, change{private: true})
	x.refusedByAll(bob, c.commit, "private commit")
	x.deliver(bob, c.commit, "commit")
	x.ds = nil // a PrivateMessage commit is beyond the delivery-service view
	x.agree(5)
	c = x.commit(alice, change{private: true})
	x.refusedByAll(alice, c.commit, "private commit")
	x.deliver(alice, c.commit, "commit")
	x.agree(6)

	// Epoch 7: carol (ts-mls) removes dave (Go).
	c = x.commit(carol, change{remove: []*peer{dave}})
	x.deliverRemoval(carol, c.commit, dave)
	x.agree(7)
	x.chat()

	// Epoch 8: erin (Go) joins by an external commit from alice's (ts-mls) GroupInfo.
	erin := x.newPeer("erin", true)
	gi, _ = x.groupInfo(alice, false)
	ext := x.externalJoin(erin, gi, nil)
	x.refusedByAll(erin, ext, "external commit")
	x.deliver(erin, ext, "commit")
	x.members = append(x.members, erin)
	x.agree(8)

	// Epoch 9: frank (ts-mls) joins by an external commit from erin's (Go) GroupInfo, without the tree in it.
	frank := x.newPeer("frank", false)
	gi, tree := x.groupInfo(erin, true)
	ext = x.externalJoin(frank, gi, tree)
	x.refusedByAll(frank, ext, "external commit")
	x.deliver(frank, ext, "commit")
	x.members = append(x.members, frank)
	x.agree(9)
	x.chat()

	// Epoch 10: bob (Go) removes alice (ts-mls), the group's creator.
	c = x.commit(bob, change{remove: []*peer{alice}})
	x.deliverRemoval(bob, c.commit, alice)
	x.agree(10)
	x.chat()
	t.Logf("suite %d, ts-mls creator: %d epochs, members %v agree after each", x.suite, x.epoch, x.members)
}

// goCreates: the Go library creates the group and adds a ts-mls member; three members on each side by the end.
func goCreates(t *testing.T, x *mixed) {
	groupID := make([]byte, 16)
	_, _ = rand.Read(groupID)
	alice, bob, carol, dave := x.newPeer("alice", true), x.newPeer("bob", false), x.newPeer("carol", true), x.newPeer("dave", false)

	// Epoch 0 and 1: alice (Go) creates the group and adds bob (ts-mls).
	x.create(alice, groupID)
	x.agree(0)
	gi, _ := x.groupInfo(alice, false)
	ds, err := mlsgroup.NewPublicGroup(mlsgroup.Config{}, x.decode("GroupInfo", gi).GroupInfo, nil)
	if err != nil {
		t.Fatal(err)
	}
	x.ds = ds
	c := x.commit(alice, change{add: []*peer{bob}})
	x.deliver(alice, c.commit, "commit")
	x.join(bob, c.welcome, nil)
	x.agree(1)
	x.chat()

	// Epoch 2: bob (ts-mls) adds carol (Go) and dave (ts-mls), no path (ts-mls's add-only commit), the tree out of
	// band.
	c = x.commit(bob, change{add: []*peer{carol, dave}, noTree: true})
	x.refusedByAll(bob, c.commit, "commit")
	x.deliver(bob, c.commit, "commit")
	x.join(carol, c.welcome, c.tree)
	x.join(dave, c.welcome, c.tree)
	x.agree(2)
	x.chat()

	// Epoch 3 and 4: updates, ts-mls's then Go's.
	c = x.commit(dave, change{})
	x.deliver(dave, c.commit, "commit")
	x.agree(3)
	c = x.commit(carol, change{})
	x.deliver(carol, c.commit, "commit")
	x.agree(4)

	// Epoch 5: dave (ts-mls) adds erin (Go) and removes alice (Go, the creator) in one commit with a path.
	erin := x.newPeer("erin", true)
	c = x.commit(dave, change{add: []*peer{erin}, remove: []*peer{alice}})
	x.refusedByAll(dave, c.commit, "commit")
	x.deliverRemoval(dave, c.commit, alice)
	x.join(erin, c.welcome, nil)
	x.agree(5)
	x.chat()

	// Epoch 6: frank (ts-mls) joins externally from carol's (Go) GroupInfo; epoch 7: george (Go) from frank's.
	frank := x.newPeer("frank", false)
	gi, _ = x.groupInfo(carol, false)
	ext := x.externalJoin(frank, gi, nil)
	x.deliver(frank, ext, "commit")
	x.members = append(x.members, frank)
	x.agree(6)
	george := x.newPeer("george", true)
	gi, _ = x.groupInfo(frank, false)
	ext = x.externalJoin(george, gi, nil)
	x.deliver(george, ext, "commit")
	x.members = append(x.members, george)
	x.agree(7)

	// Epoch 8: carol (Go) removes bob (ts-mls). Not in the same commit as an add, unlike epoch 5: the added member
	// would take bob's leaf, and ts-mls 1.6.4 cannot process a commit that removes it and reuses its leaf (it tries
	// to decrypt the path: "No overlap between provided private keys and update path"; ts-mls against itself does
	// the same).
	c = x.commit(carol, change{remove: []*peer{bob}})
	x.deliverRemoval(carol, c.commit, bob)
	x.agree(8)

	// Epoch 9: carol (Go) adds harriet (ts-mls), who gets the tree out of band.
	harriet := x.newPeer("harriet", false)
	c = x.commit(carol, change{add: []*peer{harriet}, noTree: true})
	x.deliver(carol, c.commit, "commit")
	x.join(harriet, c.welcome, c.tree)
	x.agree(9)
	x.chat()

	// Epoch 10: george (Go) proposes an Update of his leaf, which dave (ts-mls) commits by reference.
	prop, err := george.g.ProposeUpdate(false)
	if err != nil {
		t.Fatal(err)
	}
	msg := codec.Marshal(prop)
	x.refusedByAll(george, msg, "proposal")
	x.deliver(george, msg, "proposal")
	c = x.commit(dave, change{})
	x.deliver(dave, c.commit, "commit")
	x.agree(10)

	// Epoch 11: frank (ts-mls) proposes adding ivy (Go), which carol (Go) commits by reference.
	ivy := x.newPeer("ivy", true)
	if msg, err = x.h.Propose(x.ctx, x.client(frank), interop.AddProposal(ivy.kpMsg), false); err != nil {
		t.Fatal(err)
	}
	x.deliver(frank, msg, "proposal")
	c = x.commit(carol, change{})
	if c.welcome == nil {
		t.Fatal("committing frank's add proposal by reference produced no Welcome")
	}
	x.deliver(carol, c.commit, "commit")
	x.join(ivy, c.welcome, nil)
	x.agree(11)
	x.chat()

	// Epoch 12 and 13: an external PSK, injected by a Go commit and then by a ts-mls one; between them every Go
	// member is restored from its saved state, as after a restart.
	for _, p := range x.members {
		if !p.goSide {
			if err = x.h.PSK(x.ctx, x.client(p), pskID, pskSecret); err != nil {
				t.Fatal(err)
			}
		}
	}
	c = x.commit(erin, change{psk: true})
	x.deliver(erin, c.commit, "commit")
	x.agree(12)
	for _, p := range x.members {
		if p.goSide {
			x.reload(p)
		}
	}
	x.agree(12)
	c = x.commit(harriet, change{psk: true})
	x.refusedByAll(harriet, c.commit, "commit")
	x.deliver(harriet, c.commit, "commit")
	x.agree(13)
	x.chat()

	// A tampered application message is refused on both sides, and the genuine one still reads.
	for _, from := range []*peer{carol, dave} {
		text := []byte("tamper with me")
		msg := x.send(from, text)
		x.refusedByAll(from, msg, "application message")
		for _, to := range x.members {
			if to == from {
				continue
			}
			if kind, data, _, err := x.process(to, msg); err != nil || kind != "application" || !bytes.Equal(data, text) {
				t.Fatalf("%s could not read %s's genuine message after refusing tampered copies: %s %q %v", to, from, kind, data, err)
			}
		}
	}
	x.chat()
	var goN, tsN int
	for _, p := range x.members {
		if p.goSide {
			goN++
		} else {
			tsN++
		}
	}
	if goN < 1 || tsN < 1 || goN+tsN < 3 {
		t.Fatalf("the group ends with %d Go and %d ts-mls members", goN, tsN)
	}
	t.Logf("suite %d, Go creator: %d epochs, members %v agree after each", x.suite, x.epoch, x.members)
}

// TestExternalPubEncoding checks the harness's GroupInfo against the Go library both ways: the RFC's ExternalPub
// (which the harness writes for ts-mls) lets a Go client join externally, ts-mls 1.6.4's own bare key is refused,
// and ts-mls still joins from either encoding.
func TestExternalPubEncoding(t *testing.T) {
	t.Parallel()
	h := interop.StartT(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, _ := ciphersuite.Lookup(1)
	x := &mixed{t: t, ctx: ctx, h: h, s: s, suite: 1, prefix: "xp-"}
	alice := x.newPeer("alice", false)
	x.create(alice, []byte("external pub"))
	for _, bare := range []bool{false, true} {
		gi, _, err := h.GroupInfoWith(ctx, x.client(alice), interop.GroupInfoOptions{TSMLSExternalPub: bare})
		if err != nil {
			t.Fatal(err)
		}
		info := x.decode("GroupInfo", gi).GroupInfo
		data, ok := info.Extensions.Find(wire.ExtensionExternalPub)
		if !ok {
			t.Fatal("the GroupInfo has no external_pub")
		}
		if want := 32 + 1; bare == (len(data) == want) {
			t.Fatalf("external_pub data of %d bytes with the bare key %v", len(data), bare)
		}
		id, err := mlsgroup.NewIdentity(s, []byte("go"))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = mlsgroup.JoinExternal(mlsgroup.Config{}, info, id, mlsgroup.ExternalJoinOptions{})
		if bare && err == nil {
			t.Fatal("the Go library joined from a GroupInfo whose external_pub is the bare key")
		}
		if !bare && err != nil {
			t.Fatalf("the Go library could not join from the harness's GroupInfo: %v", err)
		}
		// ts-mls joins from both; each joiner's commit is left undelivered.
		if _, _, err = h.ExternalJoin(ctx, fmt.Sprintf("xp-ts-%v", bare), gi, nil, []byte("ts")); err != nil {
			t.Fatalf("ts-mls could not join from a GroupInfo (bare key %v): %v", bare, err)
		}
	}
}

// TestCompressedECDSARefused: in the ECDSA suites, a KeyPackage with ts-mls 1.6.4's own signature key (a compressed
// SEC1 point, where RFC 9420 §5.1.1 wants the uncompressed one) is refused by a Go committer with an error, and the
// same client's KeyPackage with the uncompressed key is accepted.
func TestCompressedECDSARefused(t *testing.T) {
	t.Parallel()
	h := interop.StartT(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, id := range []uint16{2, 5, 7} {
		s, _ := ciphersuite.Lookup(ciphersuite.ID(id))
		x := &mixed{t: t, ctx: ctx, h: h, s: s, suite: id, prefix: fmt.Sprintf("ec%d-", id)}
		alice := x.newPeer("alice", true)
		x.create(alice, []byte("ecdsa"))
		for _, compressed := range []bool{true, false} {
			kp, err := h.KeyPackageWith(ctx, fmt.Sprintf("ec%d-bob-%v", id, compressed), id, []byte("bob"), interop.KeyPackageOptions{CompressedECDSA: compressed})
			if err != nil {
				t.Fatal(err)
			}
			_, err = alice.g.Commit(mlsgroup.CommitOptions{Add: []*wire.KeyPackage{x.decode("KeyPackage", kp.Message).KeyPackage}})
			if compressed && err == nil {
				t.Fatalf("suite %d: a Go commit added a KeyPackage with a compressed ECDSA key", id)
			} else if compressed {
				t.Logf("suite %d, compressed key: %v", id, err)
			}
			if !compressed && err != nil {
				t.Fatalf("suite %d: a Go commit refused a KeyPackage with an uncompressed ECDSA key: %v", id, err)
			}
			alice.g.DiscardPendingCommit()
		}
	}
}

// outsiders: proposals from outside the group. A new member's own proposal to join (made with the Go library) is
// committed by ts-mls. External senders do not interoperate with ts-mls 1.6.4, so the test checks how each side
// refuses the other: ts-mls commits a GroupContextExtensions proposal without the path RFC 9420 §17.4 requires, which
// the Go members refuse; and ts-mls decodes an external_senders extension as one ExternalSender rather than the RFC's
// vector of them (§12.1.8.3), so it refuses the Go library's. Should a later ts-mls fix either, the test fails here
// and the external-sender case can be completed.
func outsiders(t *testing.T, x *mixed) {
	groupID := make([]byte, 16)
	_, _ = rand.Read(groupID)
	alice, bob, carol, dave := x.newPeer("alice", true), x.newPeer("bob", false), x.newPeer("carol", true), x.newPeer("dave", false)
	x.create(alice, groupID)
	c := x.commit(alice, change{add: []*peer{bob, carol, dave}})
	x.deliver(alice, c.commit, "commit")
	x.join(bob, c.welcome, nil)
	x.join(carol, c.welcome, nil)
	x.join(dave, c.welcome, nil)
	x.agree(1)

	// Epoch 2: erin (Go) proposes to join with her own KeyPackage; bob (ts-mls) commits it and she joins.
	erin := x.newPeer("erin", true)
	jp, err := mlsgroup.JoinProposal(x.s, groupID, x.epoch, erin.kp, erin.kpPriv.SigPriv)
	if err != nil {
		t.Fatal(err)
	}
	x.deliver(nil, codec.Marshal(jp), "proposal")
	c = x.commit(bob, change{})
	if c.welcome == nil {
		t.Fatal("committing erin's proposal to join produced no Welcome")
	}
	x.deliver(bob, c.commit, "commit")
	x.join(erin, c.welcome, nil)
	x.agree(2)
	x.chat()

	// A GroupContextExtensions commit installing an external sender, from each side; neither is taken by the other,
	// and the committers drop them.
	_, dsPub, err := x.s.GenerateSignatureKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	senders := codec.Marshal(&wire.ExternalSenders{{SignatureKey: dsPub, Credential: wire.BasicCredential([]byte("delivery service"))}})
	gce := interop.GroupContextExtensionsProposal(interop.Extension{Type: uint16(wire.ExtensionExternalSenders), Data: senders})
	res, err := x.h.Commit(x.ctx, x.client(bob), []interop.Proposal{gce}, interop.CommitOptions{Pending: true})
	if err != nil {
		t.Fatal(err)
	}
	if x.decode("GroupContextExtensions commit", res.Message).PublicMessage.Content.Commit.Path != nil {
		t.Fatal("ts-mls now sends a path with a GroupContextExtensions commit: complete this test")
	}
	for _, p := range []*peer{alice, carol, erin} {
		if _, _, _, err = x.process(p, res.Message); !errors.Is(err, mlsgroup.ErrInvalidCommit) {
			t.Fatalf("%s took ts-mls's GroupContextExtensions commit without a path: %v, want ErrInvalidCommit", p, err)
		}
	}
	if _, err = x.h.Discard(x.ctx, x.client(bob)); err != nil {
		t.Fatal(err)
	}
	exts := wire.Extensions{{Type: wire.ExtensionExternalSenders, Data: senders}}
	m, err := alice.g.Commit(mlsgroup.CommitOptions{Extensions: &exts})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*peer{bob, dave} {
		if _, _, _, err = x.process(p, codec.Marshal(m.Commit)); err == nil {
			t.Fatalf("%s (ts-mls 1.6.4) took the RFC's external_senders: complete this test", p)
		}
	}
	alice.g.DiscardPendingCommit()
	x.agree(2)
	x.chat()
}
