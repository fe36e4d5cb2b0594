package provider

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/mimi/protocol"
	"github.com/lmbridge/lmbridge/mls/group"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// receiveNotify applies a notify body from the room's hub: each FanoutMessage not seen before is applied to the
// local clients, and the new MLS states, the events for the application and the message's digest are stored in one
// transaction, so that an error (answered with a non-201, which the hub retries) leaves nothing half-applied.
func (p *Provider) receiveNotify(ctx context.Context, from, room string, body []byte) error {
	hubDomain, err := ParseRoom(room)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if hubDomain != from {
		return &httpError{403, fmt.Errorf("%w: %s does not hub %s", ErrPeerAuth, from, room)}
	}
	msgs, raw, err := protocol.DecodeFanoutRaw(body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	handshake := false
	for i := range msgs {
		if err := checkFanoutRoom(room, &msgs[i]); err != nil {
			return err
		}
		handshake = handshake || msgs[i].Message.PrivateMessage == nil
	}
	lock := p.roomLock(room)
	lock.Lock()
	defer lock.Unlock()
	err = p.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		// The clients' groups come from the room's cache and are stored once at the end of the body.
		set := newGroupSet(p, room, lock)
		for i := range msgs {
			// The digest goes in first: a repeat (answered 201, applied once) changes no row.
			digest := sha256.Sum256(raw[i])
			res, err := p.db.Exec(ctx, insertReceivedQuery, from, digest[:], int64(nowMillis()))
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				continue
			}
			if err := p.apply(ctx, room, &msgs[i], applyOptions{set: set}); err != nil {
				return err
			}
		}
		return set.flush(ctx)
	})
	// What failed may have changed cached groups; handshake messages may change the room's clients.
	if err != nil || handshake {
		lock.reset()
	}
	if err != nil {
		return fmt.Errorf("applying notify for %s: %w", room, err)
	}
	p.kickInbox()
	// Only a proposal can leave something for this provider to commit.
	if slices.ContainsFunc(msgs, func(m protocol.FanoutMessage) bool {
		return m.Message.PublicMessage != nil && m.Message.PublicMessage.Content.ContentType == wire.ContentProposal
	}) {
		p.maybeCommitPending(ctx, room)
	}
	return nil
}

// checkFanoutRoom refuses a fan-out message for another group.
func checkFanoutRoom(room string, fm *protocol.FanoutMessage) error {
	var gid []byte
	switch m := &fm.Message; {
	case m.PublicMessage != nil:
		gid = m.PublicMessage.Content.GroupID
	case m.PrivateMessage != nil:
		gid = m.PrivateMessage.GroupID
	case m.Welcome != nil:
		return nil // its group is inside the encrypted GroupInfo; checked on join
	}
	if string(gid) != room {
		return fmt.Errorf("%w: fan-out message for group %q in notify for %s", ErrBadRequest, gid, room)
	}
	return nil
}

type applyOptions struct {
	// except is a local client the message is from (it has applied it already).
	except string
	// local marks a message from this provider: no OnMessage for it.
	local bool
	// noMembership leaves membership events to the caller.
	noMembership bool
	// set holds the groups across several messages; nil stores them after this one.
	set *groupSet
}

// groupSet is the local clients' groups in a room (from the room's cache) that one transaction changes, stored by
// flush in it, so that a notify body of many messages encodes each group once.
type groupSet struct {
	p     *Provider
	room  string
	lr    *localRoom
	dirty map[string]bool
	// failed marks a client that could not process a message: its cached group may be half-changed.
	failed bool
}

// newGroupSet is the set of a room whose lock the caller holds.
func newGroupSet(p *Provider, room string, lr *localRoom) *groupSet {
	return &groupSet{p: p, room: room, lr: lr, dirty: map[string]bool{}}
}

func (s *groupSet) list(ctx context.Context) ([]string, error) { return s.lr.list(ctx, s.p, s.room) }

func (s *groupSet) get(ctx context.Context, client string) (*group.Group, error) {
	return s.lr.group(ctx, s.p, s.room, client)
}

// remove forgets a client removed from the group, and its stored state.
func (s *groupSet) remove(ctx context.Context, client string) error {
	s.lr.clients = slices.DeleteFunc(slices.Clone(s.lr.clients), func(c string) bool { return c == client })
	delete(s.lr.groups, client)
	delete(s.dirty, client)
	_, err := s.p.db.Exec(ctx, deleteGroupQuery, s.room, client)
	return err
}

// flush stores the changed groups.
func (s *groupSet) flush(ctx context.Context) error {
	for c := range s.dirty {
		if err := s.p.saveGroup(ctx, c, s.lr.groups[c]); err != nil {
			return err
		}
	}
	s.dirty = map[string]bool{}
	if s.failed {
		s.failed = false
		s.lr.reset()
	}
	return nil
}

// apply applies one fan-out message to every local client in the room (in the caller's transaction).
func (p *Provider) apply(ctx context.Context, room string, fm *protocol.FanoutMessage, opts applyOptions) (err error) {
	set := opts.set
	if set == nil {
		set = newGroupSet(p, room, p.roomLock(room))
		defer func() {
			if err == nil {
				err = set.flush(ctx)
			}
		}()
	}
	if fm.Message.Welcome != nil {
		if err := set.flush(ctx); err != nil {
			return err
		}
		// The Welcome may add local clients to the room.
		set.lr.reset()
		return p.applyWelcome(ctx, room, fm)
	}
	log := zerolog.Ctx(ctx).With().Str("room", room).Logger()
	clients, err := set.list(ctx)
	if err != nil {
		return err
	}
	var before, after *RoomState
	delivered := false
	for _, client := range clients {
		if client == opts.except {
			continue
		}
		g, err := set.get(ctx, client)
		if err != nil {
			return err
		}
		var prior *RoomState
		if fm.Message.PublicMessage != nil {
			prior, _ = DecodeRoomState(g.Context().Extensions)
		}
		res, err := g.Process(&fm.Message)
		if err != nil {
			// The hub checked what it accepted; a client that cannot follow (an old epoch's duplicate, say) must not
			// block the room's queue. One that is behind the room re-joins.
			log.Warn().Err(err).Str("client", client).Msg("Local client could not process fan-out message")
			set.failed = true
			if messageEpoch(&fm.Message) > g.Epoch() {
				p.resyncLater(room, client)
			}
			continue
		}
		switch res.Kind {
		case group.KindCommit:
			if before == nil {
				before = prior
				if !res.Removed {
					after, _ = DecodeRoomState(g.Context().Extensions)
				}
			}
			if res.Removed {
				if err := set.remove(ctx, client); err != nil {
					return err
				}
				if err := p.leftIfLast(ctx, room, client, fm.Timestamp); err != nil {
					return err
				}
				continue
			}
		case group.KindApplication:
			if !delivered && !opts.local {
				delivered = true
				_, sender, err := clientOfLeaf(g.Tree().Leaf(res.Sender.LeafIndex))
				if err != nil {
					log.Warn().Err(err).Msg("Message from an unidentifiable leaf")
				} else if err := p.queueEvent(ctx, room, "message", sender, res.ApplicationData, fm.Timestamp); err != nil {
					return err
				}
			}
		}
		set.dirty[client] = true
	}
	if before != nil && after == nil {
		// Every local client that followed the commit was removed; the state after is in the commit itself.
		after = stateFromCommit(fm, before)
	}
	if before != nil && after != nil && !opts.noMembership {
		return p.membershipEvents(ctx, room, before, after, fm.Timestamp)
	}
	return nil
}

// stateFromCommit reads the room state a commit sets, from its GroupContextExtensions proposal by value.
func stateFromCommit(fm *protocol.FanoutMessage, before *RoomState) *RoomState {
	if pm := fm.Message.PublicMessage; pm != nil && pm.Content.Commit != nil {
		for _, por := range pm.Content.Commit.Proposals {
			if gce, ok := por.Proposal.(*wire.GroupContextExtensions); ok {
				if s, err := DecodeRoomState(gce.Extensions); err == nil {
					return s
				}
			}
		}
	}
	return before
}

// leftIfLast queues LocalLeft when client was its user's last client in the room.
func (p *Provider) leftIfLast(ctx context.Context, room, client string, ts uint64) error {
	user, err := UserOfClient(client)
	if err != nil {
		return err
	}
	clients, err := p.roomClients(ctx, room)
	if err != nil {
		return err
	}
	for _, c := range clients {
		if u, _ := UserOfClient(c); u == user {
			return nil
		}
	}
	return p.queueEvent(ctx, room, LocalLeft, user, nil, ts)
}

// membershipEvents queues the participant-list differences between two room states.
func (p *Provider) membershipEvents(ctx context.Context, room string, before, after *RoomState, ts uint64) error {
	for _, a := range after.Participants {
		switch r := before.RoleOf(a.User); {
		case r == RoleNone:
			if err := p.queueEvent(ctx, room, MemberAdded, a.User, roleBytes(a.Role), ts); err != nil {
				return err
			}
		case r != a.Role:
			if err := p.queueEvent(ctx, room, MemberRole, a.User, roleBytes(a.Role), ts); err != nil {
				return err
			}
		}
	}
	for _, b := range before.Participants {
		if after.RoleOf(b.User) == RoleNone {
			if err := p.queueEvent(ctx, room, MemberRemoved, b.User, roleBytes(RoleNone), ts); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyWelcome joins the local clients whose KeyPackages a Welcome names.
func (p *Provider) applyWelcome(ctx context.Context, room string, fm *protocol.FanoutMessage) error {
	w := fm.Message.Welcome
	var rt wire.RatchetTree
	if fm.RatchetTreeOption != nil && fm.RatchetTreeOption.Representation == protocol.TreeFull {
		rt = fm.RatchetTreeOption.Tree
	}
	for _, s := range w.Secrets {
		client, kp, priv, err := p.keyPackage(ctx, s.NewMember)
		if errors.Is(err, sql.ErrNoRows) {
			continue // another provider's client
		} else if err != nil {
			return err
		}
		g, err := group.Join(p.groupConfig(), w, kp, priv, group.JoinOptions{RatchetTree: rt})
		if err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Str("client", client).Msg("Could not join from Welcome")
			continue
		}
		if string(g.GroupID()) != room {
			return fmt.Errorf("%w: Welcome for %q in notify for %s", ErrBadRequest, g.GroupID(), room)
		}
		user, _ := UserOfClient(client)
		clients, err := p.roomClients(ctx, room)
		if err != nil {
			return err
		}
		first := !slices.ContainsFunc(clients, func(c string) bool { u, _ := UserOfClient(c); return u == user })
		if err := p.saveGroup(ctx, client, g); err != nil {
			return err
		}
		if _, err := p.db.Exec(ctx, deleteKeyPkgQuery, s.NewMember); err != nil {
			return err
		}
		if err := p.refillKeyPackages(ctx, client); err != nil {
			return err
		}
		if first {
			if err := p.queueEvent(ctx, room, LocalJoined, user, nil, fm.Timestamp); err != nil {
				return err
			}
		}
	}
	return nil
}

// maybeCommitPending commits the room's pending proposals (a leaver's Removes) when this provider holds the client
// that should: the member with the lowest leaf that none of them removes. Exactly one provider's client is that
// member, so the proposals are committed once; if it loses a race the hub's wrongEpoch sends it round again.
func (p *Provider) maybeCommitPending(ctx context.Context, room string) {
	clients, err := p.roomClients(ctx, room)
	if err != nil || len(clients) == 0 {
		return
	}
	g, err := p.loadGroup(ctx, room, clients[0])
	if err != nil {
		return
	}
	cached := g.CachedProposals()
	removed := map[treemath.LeafIndex]bool{}
	for _, c := range cached {
		if r, ok := c.Proposal.(*wire.Remove); ok {
			removed[r.Removed] = true
		}
	}
	if len(removed) == 0 {
		return
	}
	var committer string
	g.Tree().Members(func(l treemath.LeafIndex, ln *wire.LeafNode) bool {
		if removed[l] {
			return true
		}
		committer, _, _ = clientOfLeaf(ln)
		return false
	})
	if !slices.Contains(clients, committer) || p.ctx == nil || p.ctx.Err() != nil {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := p.commitPending(p.ctx, room, committer); err != nil && p.ctx.Err() == nil {
			zerolog.Ctx(ctx).Warn().Err(err).Str("room", room).Msg("Committing pending proposals failed")
		}
	}()
}

func messageEpoch(m *wire.MLSMessage) uint64 {
	switch {
	case m.PublicMessage != nil:
		return m.PublicMessage.Content.Epoch
	case m.PrivateMessage != nil:
		return m.PrivateMessage.Epoch
	}
	return 0
}

// resyncLater re-joins a local client that fell behind the room (see externalJoin), once the current work is done.
func (p *Provider) resyncLater(room, client string) {
	if p.ctx == nil || p.ctx.Err() != nil {
		return
	}
	if _, busy := p.resyncing.LoadOrStore(room+" "+client, true); busy {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer p.resyncing.Delete(room + " " + client)
		ctx := p.ctx
		if err := p.externalJoin(ctx, room, client, true); err != nil && ctx.Err() == nil {
			zerolog.Ctx(ctx).Warn().Err(err).Str("room", room).Str("client", client).Msg("Re-joining a client that fell behind failed")
		}
	}()
}
