package provider

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/lmbridge/lmbridge/mimi/protocol"
	"github.com/lmbridge/lmbridge/mls/group"
	"github.com/lmbridge/lmbridge/mls/tree"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// maxAttempts bounds the retries of an operation the hub refused for a wrong epoch.
const maxAttempts = 8

// errNothingToDo ends a commit attempt that has become unnecessary.
var errNothingToDo = errors.New("nothing to commit")

// CreateRoom creates a room hubbed by this provider, with creator (a local user with a registered client) as its
// admin, and returns the room's URI.
func (p *Provider) CreateRoom(ctx context.Context, name, creator string, meta RoomMetadata) (string, error) {
	room := RoomURI(p.domain, name)
	if _, err := ParseRoom(room); err != nil {
		return "", err
	}
	clients, err := p.clientsOf(ctx, creator)
	if err != nil || len(clients) == 0 {
		return "", fmt.Errorf("creating %s: %w: %s has no client here", room, ErrUnknownUser, creator)
	}
	id, _, err := p.identity(ctx, clients[0])
	if err != nil {
		return "", err
	}
	meta.RoomURI = room
	state := &RoomState{Roles: DefaultRoles(), Participants: []Participant{{creator, RoleAdmin}}, Metadata: meta}
	senders := wire.ExternalSenders{p.hub.externalSender()}
	exts := state.Extensions(wire.Extensions{wire.NewExtension(wire.ExtensionExternalSenders, &senders)})
	g, err := group.Create(p.groupConfig(), p.suite, []byte(room), id, exts)
	if err != nil {
		return "", fmt.Errorf("creating group for %s: %w", room, err)
	}
	gi, err := g.GroupInfo(false)
	if err != nil {
		return "", fmt.Errorf("creating %s: %w", room, err)
	}
	err = p.hub.create(ctx, room, gi, g.Tree().RatchetTree(), func(ctx context.Context) error {
		if err := p.saveGroup(ctx, clients[0], g); err != nil {
			return err
		}
		return p.membershipEvents(ctx, room, &RoomState{}, state, nowMillis())
	})
	if err != nil {
		return "", err
	}
	lock := p.roomLock(room)
	lock.Lock()
	lock.reset()
	lock.Unlock()
	p.kickInbox()
	return room, nil
}

// clientIn is a local user's first client with a group in the room.
func (p *Provider) clientIn(ctx context.Context, room, user string) (string, error) {
	lock := p.roomLock(room)
	lock.Lock()
	defer lock.Unlock()
	clients, err := lock.list(ctx, p, room)
	if err != nil {
		return "", err
	}
	for _, c := range clients {
		if u, _ := UserOfClient(c); u == user {
			return c, nil
		}
	}
	return "", fmt.Errorf("%w: %s in %s", ErrNotInRoom, user, room)
}

// sendUpdate posts a HandshakeBundle to the room's hub (in-process when it is this provider). also runs once the hub
// accepted it, in a transaction (the hub's own when the hub is here).
func (p *Provider) sendUpdate(ctx context.Context, room string, req *protocol.UpdateRequest, also func(context.Context, uint64) error) (*protocol.UpdateRoomResponse, error) {
	hubDomain, err := ParseRoom(room)
	if err != nil {
		return nil, err
	}
	if hubDomain == p.domain {
		return p.hub.update(ctx, p.domain, room, req, also)
	}
	resp, err := postToHub(ctx, p, hubDomain, room, "update", func(d *protocol.Directory) string { return d.Update },
		req, protocol.DecodeUpdateRoomResponse)
	if err != nil {
		return nil, err
	}
	if resp.Code == protocol.UpdateSuccess && also != nil {
		if p.afterAccept != nil {
			if err := p.afterAccept(); err != nil {
				return nil, err
			}
		}
		// The hub has it: from here a failure to store leaves this provider behind the room (see the package notes).
		if err := p.db.DoTxn(ctx, nil, func(ctx context.Context) error { return also(ctx, resp.AcceptedTimestamp) }); err != nil {
			return nil, fmt.Errorf("storing accepted update: %w", err)
		}
	}
	return resp, nil
}

// updateError turns a refusal into an error; wrongEpoch is reported as ErrWrongEpoch for the caller to retry.
func updateError(resp *protocol.UpdateRoomResponse) error {
	switch resp.Code {
	case protocol.UpdateSuccess:
		return nil
	case protocol.UpdateWrongEpoch:
		return fmt.Errorf("%w: hub at epoch %d: %s", ErrWrongEpoch, resp.CurrentEpoch, resp.ErrorDescription)
	case protocol.UpdateNotAllowed:
		return fmt.Errorf("%w: %s", ErrNotAllowed, resp.ErrorDescription)
	}
	return fmt.Errorf("%w: %s", ErrInvalidProposal, resp.ErrorDescription)
}

// waitEpoch waits until a local client reaches epoch (the hub's notify catching it up).
func (p *Provider) waitEpoch(ctx context.Context, room, client string, epoch uint64) error {
	deadline := time.Now().Add(p.cfg.CatchUp)
	for time.Now().Before(deadline) {
		g, err := p.loadGroup(ctx, room, client)
		if err != nil {
			return err
		}
		if g.Epoch() >= epoch {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return fmt.Errorf("%w: %s did not reach epoch %d in %s", ErrWrongEpoch, client, epoch, p.cfg.CatchUp)
}

// commitAs makes a commit from a local client with the options build returns, sends it to the hub and, once
// accepted, merges it and applies it to the other local clients. A wrongEpoch refusal waits for the hub's notify and
// builds the commit again.
func (p *Provider) commitAs(ctx context.Context, room, client string, build func(g *group.Group) (group.CommitOptions, error)) error {
	for attempt := 0; ; attempt++ {
		resp, err := p.commitOnce(ctx, room, client, build)
		if err != nil {
			if errors.Is(err, errNothingToDo) {
				return nil
			}
			return err
		}
		if resp.Code != protocol.UpdateWrongEpoch || attempt == maxAttempts {
			p.kickInbox()
			return updateError(resp)
		}
		if err := p.waitEpoch(ctx, room, client, resp.CurrentEpoch); err != nil {
			return err
		}
	}
}

func (p *Provider) commitOnce(ctx context.Context, room, client string, build func(g *group.Group) (group.CommitOptions, error)) (*protocol.UpdateRoomResponse, error) {
	lock := p.roomLock(room)
	lock.Lock()
	defer lock.Unlock()
	// Commits are rare: they work on the stored state and leave the cache to be read again.
	defer lock.reset()
	g, err := p.loadGroup(ctx, room, client)
	if err != nil {
		return nil, err
	}
	opts, err := build(g)
	if err != nil {
		return nil, err
	}
	opts.RatchetTreeInWelcome = true
	before, err := DecodeRoomState(g.Context().Extensions)
	if err != nil {
		return nil, err
	}
	res, err := g.Commit(opts)
	if err != nil {
		return nil, fmt.Errorf("committing in %s: %w", room, err)
	}
	// The new epoch's GroupInfo, for the hub to hand to joiners, from a copy merged ahead.
	ahead, err := group.UnmarshalState(g.MarshalState(), p.groupConfig())
	if err != nil {
		return nil, err
	}
	if err := ahead.MergePendingCommit(); err != nil {
		return nil, err
	}
	gi, err := ahead.GroupInfo(false)
	if err != nil {
		return nil, err
	}
	req := &protocol.UpdateRequest{ProposalOrCommit: *res.Commit, Welcome: res.Welcome,
		GroupInfoOption:   protocol.GroupInfoOption{Representation: protocol.GroupInfoFull, GroupInfo: gi},
		RatchetTreeOption: protocol.RatchetTreeOption{Representation: protocol.TreeFull, Tree: ahead.Tree().RatchetTree()}}
	return p.sendUpdate(ctx, room, req, func(ctx context.Context, ts uint64) error {
		if err := g.MergePendingCommit(); err != nil {
			return err
		}
		if err := p.saveGroup(ctx, client, g); err != nil {
			return err
		}
		after, err := DecodeRoomState(g.Context().Extensions)
		if err != nil {
			return err
		}
		if err := p.membershipEvents(ctx, room, before, after, ts); err != nil {
			return err
		}
		fm := &protocol.FanoutMessage{Timestamp: ts, Message: *res.Commit}
		if err := p.apply(ctx, room, fm, applyOptions{except: client, local: true, noMembership: true}); err != nil {
			return err
		}
		if res.Welcome != nil {
			wm := &protocol.FanoutMessage{Timestamp: ts, Message: wire.MLSMessage{Welcome: res.Welcome}}
			return p.applyWelcome(ctx, room, wm)
		}
		return nil
	})
}

// AddUser adds target (a user of any provider) to the room with role, as local user by: it fetches target's
// KeyPackages through keyMaterial and commits the participant-list change with an Add for each of its clients.
func (p *Provider) AddUser(ctx context.Context, room, by, target string, role uint32) error {
	client, err := p.clientIn(ctx, room, by)
	if err != nil {
		return err
	}
	kps, err := p.fetchKeyMaterial(ctx, room, by, client, target)
	if err != nil {
		return err
	}
	err = p.commitAs(ctx, room, client, func(g *group.Group) (group.CommitOptions, error) {
		state, err := DecodeRoomState(g.Context().Extensions)
		if err != nil {
			return group.CommitOptions{}, err
		}
		exts := state.WithParticipant(target, role).Extensions(g.Context().Extensions)
		return group.CommitOptions{Add: kps, Extensions: &exts}, nil
	})
	if err != nil {
		return fmt.Errorf("adding %s to %s: %w", target, room, err)
	}
	p.kickInbox()
	return nil
}

// leavesOf lists the leaves of a user's clients.
func leavesOf(g *group.Group, user string) []treemath.LeafIndex {
	var out []treemath.LeafIndex
	g.Members(func(l treemath.LeafIndex, ln *wire.LeafNode) bool {
		if _, u, err := clientOfLeaf(ln); err == nil && u == user {
			out = append(out, l)
		}
		return true
	})
	return out
}

// RemoveUser removes target and all its clients from the room, as local user by.
func (p *Provider) RemoveUser(ctx context.Context, room, by, target string) error {
	client, err := p.clientIn(ctx, room, by)
	if err != nil {
		return err
	}
	err = p.commitAs(ctx, room, client, func(g *group.Group) (group.CommitOptions, error) {
		state, err := DecodeRoomState(g.Context().Extensions)
		if err != nil {
			return group.CommitOptions{}, err
		}
		exts := state.WithParticipant(target, RoleNone).Extensions(g.Context().Extensions)
		return group.CommitOptions{Remove: leavesOf(g, target), Extensions: &exts}, nil
	})
	if err != nil {
		return fmt.Errorf("removing %s from %s: %w", target, room, err)
	}
	p.kickInbox()
	return nil
}

// Leave takes a local user out of the room: its client proposes removing all the user's clients, and the member
// with the lowest remaining leaf (whichever provider holds it) commits that with the participant-list change.
func (p *Provider) Leave(ctx context.Context, room, user string) error {
	client, err := p.clientIn(ctx, room, user)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		resp, err := p.leaveOnce(ctx, room, user, client)
		if err != nil {
			return fmt.Errorf("leaving %s: %w", room, err)
		}
		if resp.Code != protocol.UpdateWrongEpoch || attempt == maxAttempts {
			if err := updateError(resp); err != nil {
				return fmt.Errorf("leaving %s: %w", room, err)
			}
			p.kickInbox()
			p.maybeCommitPending(ctx, room)
			return nil
		}
		if err := p.waitEpoch(ctx, room, client, resp.CurrentEpoch); err != nil {
			return err
		}
	}
}

func (p *Provider) leaveOnce(ctx context.Context, room, user, client string) (*protocol.UpdateRoomResponse, error) {
	lock := p.roomLock(room)
	lock.Lock()
	defer lock.Unlock()
	defer lock.reset()
	g, err := p.loadGroup(ctx, room, client)
	if err != nil {
		return nil, err
	}
	var msgs []wire.MLSMessage
	for _, l := range leavesOf(g, user) {
		m, err := g.ProposeRemove(l, false)
		if err != nil {
			return nil, fmt.Errorf("proposing removal of leaf %d: %w", l, err)
		}
		msgs = append(msgs, *m)
	}
	req := &protocol.UpdateRequest{ProposalOrCommit: msgs[0], MoreProposals: msgs[1:]}
	return p.sendUpdate(ctx, room, req, func(ctx context.Context, ts uint64) error {
		if err := p.saveGroup(ctx, client, g); err != nil {
			return err
		}
		for i := range msgs {
			fm := &protocol.FanoutMessage{Timestamp: ts, Message: msgs[i]}
			if err := p.apply(ctx, room, fm, applyOptions{except: client, local: true}); err != nil {
				return err
			}
		}
		return nil
	})
}

// commitPending commits the cached proposals from a local client, removing from the participant list every user
// whose clients are all removed.
func (p *Provider) commitPending(ctx context.Context, room, client string) error {
	return p.commitAs(ctx, room, client, func(g *group.Group) (group.CommitOptions, error) {
		cached := g.CachedProposals()
		if len(cached) == 0 {
			return group.CommitOptions{}, errNothingToDo
		}
		state, err := DecodeRoomState(g.Context().Extensions)
		if err != nil {
			return group.CommitOptions{}, err
		}
		removed := map[treemath.LeafIndex]bool{}
		for _, c := range cached {
			if r, ok := c.Proposal.(*wire.Remove); ok {
				removed[r.Removed] = true
			}
		}
		next := state
		for _, pt := range state.Participants {
			leaves := leavesOf(g, pt.User)
			if len(leaves) > 0 && !slices.ContainsFunc(leaves, func(l treemath.LeafIndex) bool { return !removed[l] }) {
				next = next.WithParticipant(pt.User, RoleNone)
			}
		}
		var opts group.CommitOptions
		if len(next.Participants) != len(state.Participants) {
			exts := next.Extensions(g.Context().Extensions)
			opts.Extensions = &exts
		}
		return opts, nil
	})
}

// Send sends MIMI content (mimi/content message bytes) to the room as a local user, end-to-end encrypted in a
// PrivateMessage from the user's client. It returns the hub's acceptance time once the hub has stored it.
func (p *Provider) Send(ctx context.Context, room, user string, content []byte) (time.Time, error) {
	client, err := p.clientIn(ctx, room, user)
	if err != nil {
		return time.Time{}, err
	}
	for attempt := 0; ; attempt++ {
		resp, err := p.sendOnce(ctx, room, user, client, content)
		if err != nil {
			return time.Time{}, fmt.Errorf("sending to %s: %w", room, err)
		}
		switch resp.Code {
		case protocol.SubmitAccepted:
			return time.UnixMilli(int64(resp.AcceptedTimestamp)), nil
		case protocol.SubmitNotAllowed:
			return time.Time{}, fmt.Errorf("sending to %s: %w", room, ErrNotAllowed)
		}
		if attempt == maxAttempts {
			return time.Time{}, fmt.Errorf("sending to %s: %w: hub at epoch %d", room, ErrWrongEpoch, resp.CurrentEpoch)
		}
		if err := p.waitEpoch(ctx, room, client, resp.CurrentEpoch); err != nil {
			return time.Time{}, err
		}
	}
}

func (p *Provider) sendOnce(ctx context.Context, room, user, client string, content []byte) (*protocol.SubmitMessageResponse, error) {
	m, err := p.protect(ctx, room, client, content)
	if err != nil {
		return nil, err
	}
	req := &protocol.SubmitMessageRequest{AppMessage: *m, SendingURI: user}
	hubDomain, err := ParseRoom(room)
	if err != nil {
		return nil, err
	}
	if hubDomain == p.domain {
		return p.hub.submit(ctx, p.domain, room, req)
	}
	return postToHub(ctx, p, hubDomain, room, "submitMessage", func(d *protocol.Directory) string { return d.SubmitMessage },
		req, protocol.DecodeSubmitMessageResponse)
}

// postToHub sends req to the endpoint named name (found in the directory by endpoint) of room's hub on another
// provider, and decodes its answer: a status other than 200 is the peer's refusal, an answer that does not decode
// ErrUnreachable.
func postToHub[Resp any](ctx context.Context, p *Provider, hubDomain, room, name string, endpoint func(*protocol.Directory) string,
	req interface{ Encode() ([]byte, error) }, decode func([]byte) (Resp, error)) (Resp, error) {
	var none Resp
	body, err := req.Encode()
	if err != nil {
		return none, err
	}
	status, b, _, err := p.peers.post(ctx, hubDomain, endpoint, map[string]string{"roomId": room}, body)
	if err != nil {
		return none, err
	}
	if status != http.StatusOK {
		return none, peerError(name, status, b)
	}
	resp, err := decode(b)
	if err != nil {
		return none, fmt.Errorf("%w: %s response: %w", ErrUnreachable, name, err)
	}
	return resp, nil
}

// AddDevice joins a new client (registered with RegisterUser) of a local user who is already in the room, by
// external commit from the GroupInfo the hub hands out through groupInfo.
func (p *Provider) AddDevice(ctx context.Context, room, client string) error {
	return p.externalJoin(ctx, room, client, false)
}

// externalJoin joins client by external commit; with resync the client is one whose state fell behind the room (a
// commit of its own that the hub accepted but this provider failed to store), and the commit replaces its old leaf.
func (p *Provider) externalJoin(ctx context.Context, room, client string, resync bool) error {
	id, _, err := p.identity(ctx, client)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		resp, err := p.externalJoinOnce(ctx, room, client, id, resync)
		if err != nil {
			return fmt.Errorf("joining %s to %s: %w", client, room, err)
		}
		if resp.Code != protocol.UpdateWrongEpoch || attempt == maxAttempts {
			p.kickInbox()
			if err := updateError(resp); err != nil {
				return fmt.Errorf("joining %s to %s: %w", client, room, err)
			}
			return nil
		}
	}
}

func (p *Provider) fetchGroupInfo(ctx context.Context, room string, id *group.Identity) (*protocol.GroupInfoRatchetTreeTBE, error) {
	priv, pub, err := p.suite.GenerateKeyPair()
	if err != nil {
		return nil, err
	}
	req := &protocol.GroupInfoRequest{CipherSuite: uint16(p.suite.ID()), RequestingSignatureKey: id.SigPub,
		RequestingCredential: id.Credential, GroupInfoPublicKey: pub}
	if err := req.Sign(p.suite, id.SigPriv); err != nil {
		return nil, err
	}
	hubDomain, err := ParseRoom(room)
	if err != nil {
		return nil, err
	}
	var resp *protocol.GroupInfoResponse
	if hubDomain == p.domain {
		if resp, err = p.hub.groupInfo(ctx, p.domain, room, req); err != nil {
			return nil, err
		}
	} else if resp, err = postToHub(ctx, p, hubDomain, room, "groupInfo", func(d *protocol.Directory) string { return d.GroupInfo },
		req, protocol.DecodeGroupInfoResponse); err != nil {
		return nil, err
	}
	switch resp.Status {
	case protocol.GroupInfoNoSuchRoom:
		return nil, fmt.Errorf("%w: %s", ErrUnknownRoom, room)
	case protocol.GroupInfoNotAuthorized:
		return nil, fmt.Errorf("%w: the hub refused the GroupInfo", ErrNotAllowed)
	}
	tbe, err := resp.Open(p.suite, priv)
	if err != nil {
		return nil, err
	}
	// The response is signed by the key it names; that key must be the room's hub, an external sender of the group.
	var senders wire.ExternalSenders
	if ok, err := tbe.GroupInfo.GroupContext.Extensions.Decode(wire.ExtensionExternalSenders, &senders); err != nil || !ok ||
		!slices.ContainsFunc(senders, func(s wire.ExternalSender) bool { return bytes.Equal(s.SignatureKey, resp.HubSender.SignatureKey) }) {
		return nil, fmt.Errorf("%w: groupInfo response not signed by an external sender of the room", ErrNotAllowed)
	}
	if string(tbe.GroupInfo.GroupContext.GroupID) != room {
		return nil, fmt.Errorf("%w: GroupInfo of group %q", ErrBadRequest, tbe.GroupInfo.GroupContext.GroupID)
	}
	return tbe, nil
}

func (p *Provider) externalJoinOnce(ctx context.Context, room, client string, id *group.Identity, resync bool) (*protocol.UpdateRoomResponse, error) {
	tbe, err := p.fetchGroupInfo(ctx, room, id)
	if err != nil {
		return nil, err
	}
	lock := p.roomLock(room)
	lock.Lock()
	defer lock.Unlock()
	defer lock.reset()
	opts := group.ExternalJoinOptions{RatchetTree: tbe.RatchetTreeOption.Tree}
	if resync {
		t, err := tree.FromRatchetTree(p.suite, tbe.RatchetTreeOption.Tree)
		if err != nil {
			return nil, fmt.Errorf("reading the room's tree: %w", err)
		}
		t.Members(func(l treemath.LeafIndex, ln *wire.LeafNode) bool {
			if c, _, err := clientOfLeaf(ln); err == nil && c == client {
				opts.Resync = &l
				return false
			}
			return true
		})
		if opts.Resync == nil {
			return nil, fmt.Errorf("%w: %s is no longer in %s", ErrNotInRoom, client, room)
		}
	}
	g, commit, err := group.JoinExternal(p.groupConfig(), &tbe.GroupInfo, id, opts)
	if err != nil {
		return nil, fmt.Errorf("external join: %w", err)
	}
	gi, err := g.GroupInfo(false)
	if err != nil {
		return nil, err
	}
	req := &protocol.UpdateRequest{ProposalOrCommit: *commit,
		GroupInfoOption:   protocol.GroupInfoOption{Representation: protocol.GroupInfoFull, GroupInfo: gi},
		RatchetTreeOption: protocol.RatchetTreeOption{Representation: protocol.TreeFull, Tree: g.Tree().RatchetTree()}}
	return p.sendUpdate(ctx, room, req, func(ctx context.Context, ts uint64) error {
		if err := p.saveGroup(ctx, client, g); err != nil {
			return err
		}
		fm := &protocol.FanoutMessage{Timestamp: ts, Message: *commit}
		return p.apply(ctx, room, fm, applyOptions{except: client, local: true})
	})
}

// RoomState is the room's state as a local user's client sees it.
func (p *Provider) RoomState(ctx context.Context, room string) (*RoomState, error) {
	clients, err := p.roomClients(ctx, room)
	if err != nil {
		return nil, err
	}
	if len(clients) == 0 {
		return nil, fmt.Errorf("%w: no local client in %s", ErrUnknownRoom, room)
	}
	g, err := p.loadGroup(ctx, room, clients[0])
	if err != nil {
		return nil, err
	}
	return DecodeRoomState(g.Context().Extensions)
}

// Epoch is the MLS epoch a local client is at in the room.
func (p *Provider) Epoch(ctx context.Context, room, client string) (uint64, error) {
	g, err := p.loadGroup(ctx, room, client)
	if err != nil {
		return 0, err
	}
	return g.Epoch(), nil
}

// protect encrypts content from a local client and stores the advanced ratchet before the ciphertext leaves, so no
// key is used twice. The room is locked only for that: the hub's answer is not waited for under the lock, so notify
// bodies for the room are applied meanwhile.
func (p *Provider) protect(ctx context.Context, room, client string, content []byte) (*wire.MLSMessage, error) {
	lock := p.roomLock(room)
	lock.Lock()
	defer lock.Unlock()
	g, err := lock.group(ctx, p, room, client)
	if err != nil {
		return nil, err
	}
	m, err := g.Protect(content, nil)
	if err != nil {
		lock.reset()
		return nil, fmt.Errorf("encrypting: %w", err)
	}
	if err := p.saveGroup(ctx, client, g); err != nil {
		lock.reset()
		return nil, err
	}
	return m, nil
}
