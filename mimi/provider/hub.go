package provider

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/mimi/protocol"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/framing"
	"github.com/lmbridge/lmbridge/mls/group"
	"github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

const proposalRefLabel = "MLS 1.0 Proposal Reference"

// hub is the hub role: the rooms this provider owns.
type hub struct {
	p     *Provider
	mu    sync.Mutex
	rooms map[string]*hubRoom
}

// pendingProposal is a proposal accepted in the current epoch, waiting for a commit.
type pendingProposal struct {
	ref      []byte
	msg      wire.MLSMessage
	proposal wire.Proposal
	user     string
	time     uint64
}

// hubRoom is the hub's view of one room. Its PublicGroup is advanced only under mu and only by a message that is then
// persisted; if persisting fails the room is dropped from memory and replayed from the database on next use.
type hubRoom struct {
	mu        sync.Mutex
	uri       string
	pg        *group.PublicGroup
	groupInfo []byte
	seq       int64
	pending   []pendingProposal
	// view is what submit checks against, derived from pg once per epoch.
	view *hubView
	// batch is the application messages accepted and waiting for one transaction (group commit); committing says
	// a submitter is running those transactions, without mu; idle is signalled when it stops.
	batch      []*accepted
	committing bool
	idle       *sync.Cond
}

// accepted is an application message the hub accepted, to store and then answer.
type accepted struct {
	ts    uint64
	dests []string
	body  []byte
	done  chan error
}

func newHubRoom(uri string, pg *group.PublicGroup, groupInfo []byte) *hubRoom {
	r := &hubRoom{uri: uri, pg: pg, groupInfo: groupInfo}
	r.idle = sync.NewCond(&r.mu)
	return r
}

// lockIdle locks the room once no batch of messages is being stored: what changes the epoch comes after them.
func (r *hubRoom) lockIdle() {
	r.mu.Lock()
	for r.committing {
		r.idle.Wait()
	}
}

// hubView is a room's state and membership in one epoch.
type hubView struct {
	epoch   uint64
	state   *RoomState
	users   map[string]int
	domains []string // sorted
}

// current is the room's view at its epoch (r.mu held).
func (r *hubRoom) current() (*hubView, error) {
	if r.view != nil && r.view.epoch == r.pg.Epoch() {
		return r.view, nil
	}
	state, err := DecodeRoomState(r.pg.Context().Extensions)
	if err != nil {
		return nil, err
	}
	users, domains := clientsByUser(r.pg)
	r.view = &hubView{epoch: r.pg.Epoch(), state: state, users: users, domains: sortedKeys(domains)}
	return r.view, nil
}

func newHub(p *Provider) *hub { return &hub{p: p, rooms: map[string]*hubRoom{}} }

// externalSender is the hub's entry in the external_senders extension.
func (h *hub) externalSender() wire.ExternalSender {
	return wire.ExternalSender{SignatureKey: h.p.sigPub, Credential: wire.BasicCredential([]byte(ProviderURI(h.p.domain)))}
}

// create records a new room from its creator's first GroupInfo (with the ratchet tree). also runs in the same
// transaction.
func (h *hub) create(ctx context.Context, room string, gi *wire.GroupInfo, rt wire.RatchetTree, also func(context.Context) error) error {
	pg, err := group.NewPublicGroup(h.p.groupConfig(), gi, rt)
	if err != nil {
		return fmt.Errorf("following new room %s: %w", room, err)
	}
	if _, err := DecodeRoomState(pg.Context().Extensions); err != nil {
		return fmt.Errorf("creating room %s: %w", room, err)
	}
	err = h.p.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := h.p.db.Exec(ctx, insertHubRoomQuery, room, codec.Marshal(gi), codec.Marshal(&rt), int64(pg.Epoch()), int64(nowMillis())); err != nil {
			return fmt.Errorf("storing hub room %s: %w", room, err)
		}
		return also(ctx)
	})
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.rooms[room] = newHubRoom(room, pg, codec.Marshal(gi))
	h.mu.Unlock()
	return nil
}

// room returns the hub's view of a room, replaying it from the database if it is not in memory.
func (h *hub) room(ctx context.Context, uri string) (*hubRoom, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r := h.rooms[uri]; r != nil {
		return r, nil
	}
	var info, rtb, latest []byte
	err := h.p.db.QueryRow(ctx, getHubRoomQuery, uri).Scan(&info, &rtb, &latest)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s is not hubbed here", ErrUnknownRoom, uri)
	}
	if err != nil {
		return nil, fmt.Errorf("loading hub room %s: %w", uri, err)
	}
	var gi wire.GroupInfo
	var rt wire.RatchetTree
	if err := codec.Unmarshal(info, &gi); err != nil {
		return nil, fmt.Errorf("decoding stored group info of %s: %w", uri, err)
	}
	if err := codec.Unmarshal(rtb, &rt); err != nil {
		return nil, fmt.Errorf("decoding stored tree of %s: %w", uri, err)
	}
	pg, err := group.NewPublicGroup(h.p.groupConfig(), &gi, rt)
	if err != nil {
		return nil, fmt.Errorf("replaying %s: %w", uri, err)
	}
	r := newHubRoom(uri, pg, latest)
	rows, err := h.p.db.Query(ctx, hubLogQuery, uri)
	if err != nil {
		return nil, fmt.Errorf("replaying %s: %w", uri, err)
	}
	defer rows.Close()
	for rows.Next() {
		var msg []byte
		if err := rows.Scan(&r.seq, &msg); err != nil {
			return nil, fmt.Errorf("replaying %s: %w", uri, err)
		}
		var m wire.MLSMessage
		if err := codec.Unmarshal(msg, &m); err != nil {
			return nil, fmt.Errorf("replaying %s at %d: %w", uri, r.seq, err)
		}
		if _, err := r.pg.Process(&m); err != nil {
			return nil, fmt.Errorf("replaying %s at %d: %w", uri, r.seq, err)
		}
		if m.PublicMessage.Content.ContentType == wire.ContentCommit {
			r.pending = nil
		} else {
			_, user, _ := h.senderOf(r, m.PublicMessage)
			r.pending = append(r.pending, pendingProposal{ref: h.proposalRef(m.PublicMessage), msg: m, proposal: m.PublicMessage.Content.Proposal, user: user})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("replaying %s: %w", uri, err)
	}
	h.rooms[uri] = r
	return r, nil
}

func (h *hub) drop(uri string) {
	h.mu.Lock()
	delete(h.rooms, uri)
	h.mu.Unlock()
}

func (h *hub) proposalRef(pm *wire.PublicMessage) []byte {
	ac := framing.AuthenticatedContent{WireFormat: wire.WireFormatPublicMessage, Content: pm.Content, Auth: pm.Auth}
	return h.p.suite.RefHash(proposalRefLabel, codec.Marshal(&ac))
}

// senderOf is the client and user of a handshake message's sender, from the hub's tree (or, for an external
// commit, from its path's leaf).
func (h *hub) senderOf(r *hubRoom, pm *wire.PublicMessage) (client, user string, err error) {
	s := pm.Content.Sender
	switch s.Type {
	case wire.SenderMember:
		return clientOfLeaf(r.pg.Tree().Leaf(s.LeafIndex))
	case wire.SenderNewMemberCommit:
		if pm.Content.Commit == nil || pm.Content.Commit.Path == nil {
			return "", "", fmt.Errorf("%w: external commit without a path", ErrInvalidProposal)
		}
		return clientOfLeaf(&pm.Content.Commit.Path.LeafNode)
	}
	return "", "", notAllowed("sender type %d may not send to update", s.Type)
}

// clientsByUser counts the tree's clients per user, and lists the providers that have any.
func clientsByUser(pg *group.PublicGroup) (map[string]int, map[string]bool) {
	users, domains := map[string]int{}, map[string]bool{}
	pg.Tree().Members(func(_ treemath.LeafIndex, ln *wire.LeafNode) bool {
		if client, user, err := clientOfLeaf(ln); err == nil {
			users[user]++
			if d, err := DomainOf(client); err == nil {
				domains[d] = true
			}
		}
		return true
	})
	return users, domains
}

// resolveCommit works out what a commit does, before the PublicGroup applies it.
func (h *hub) resolveCommit(r *hubRoom, pm *wire.PublicMessage, committerUser string) (*commitChange, error) {
	before, err := DecodeRoomState(r.pg.Context().Extensions)
	if err != nil {
		return nil, err
	}
	remaining, _ := clientsByUser(r.pg)
	c := &commitChange{committer: committerUser, before: before, after: before, remaining: remaining,
		external: pm.Content.Sender.Type == wire.SenderNewMemberCommit}
	if c.external {
		client, _, _ := clientOfLeaf(&pm.Content.Commit.Path.LeafNode)
		c.added = append(c.added, client)
		remaining[committerUser]++
	}
	for i, por := range pm.Content.Commit.Proposals {
		prop, proposer := por.Proposal, committerUser
		if prop == nil {
			j := slices.IndexFunc(r.pending, func(p pendingProposal) bool { return bytes.Equal(p.ref, por.Reference) })
			if j < 0 {
				return nil, fmt.Errorf("%w: proposal %d: unknown reference", ErrInvalidProposal, i)
			}
			prop, proposer = r.pending[j].proposal, r.pending[j].user
		}
		switch p := prop.(type) {
		case *wire.Add:
			client, user, err := clientOfLeaf(&p.KeyPackage.LeafNode)
			if err != nil {
				return nil, notAllowed("added client: %v", err)
			}
			c.added = append(c.added, client)
			remaining[user]++
		case *wire.Remove:
			client, user, err := clientOfLeaf(r.pg.Tree().Leaf(p.Removed))
			if err != nil {
				return nil, fmt.Errorf("%w: proposal %d removes leaf %d: %w", ErrInvalidProposal, i, p.Removed, err)
			}
			c.removed = append(c.removed, removal{client: client, user: user, proposer: proposer})
			remaining[user]--
		case *wire.GroupContextExtensions:
			after, err := DecodeRoomState(p.Extensions)
			if err != nil {
				return nil, notAllowed("new room state: %v", err)
			}
			var senders wire.ExternalSenders
			if ok, err := p.Extensions.Decode(wire.ExtensionExternalSenders, &senders); err != nil || !ok ||
				!slices.ContainsFunc(senders, func(s wire.ExternalSender) bool { return bytes.Equal(s.SignatureKey, h.p.sigPub) }) {
				return nil, notAllowed("the external_senders extension must keep the hub")
			}
			c.after = after
		case *wire.Update, *wire.ExternalInit, *wire.PreSharedKey:
		default:
			c.otherProposals = append(c.otherProposals, fmt.Sprintf("%d", prop.ProposalType()))
		}
	}
	return c, nil
}

func updateRefused(code protocol.UpdateResponseCode, err error) *protocol.UpdateRoomResponse {
	return &protocol.UpdateRoomResponse{Code: code, ErrorDescription: err.Error()}
}

// update handles a HandshakeBundle from provider from. Refusals are answers (the draft's codes); errors are for
// requests that cannot be answered that way (unknown room, storage failure). also runs in the transaction that
// persists an accepted message, with its timestamp (the submitter's own clients apply it there).
func (h *hub) update(ctx context.Context, from, room string, req *protocol.UpdateRequest, also func(context.Context, uint64) error) (*protocol.UpdateRoomResponse, error) {
	r, err := h.room(ctx, room)
	if err != nil {
		return nil, err
	}
	r.lockIdle()
	defer r.mu.Unlock()
	pm := req.ProposalOrCommit.PublicMessage
	if !bytes.Equal(pm.Content.GroupID, []byte(room)) {
		return updateRefused(protocol.UpdateInvalidProposal, fmt.Errorf("%w: message for group %q", ErrInvalidProposal, pm.Content.GroupID)), nil
	}
	if pm.Content.Epoch != r.pg.Epoch() {
		return &protocol.UpdateRoomResponse{Code: protocol.UpdateWrongEpoch, CurrentEpoch: r.pg.Epoch(),
			ErrorDescription: fmt.Sprintf("message for epoch %d, room at %d", pm.Content.Epoch, r.pg.Epoch())}, nil
	}
	client, user, err := h.senderOf(r, pm)
	if err != nil {
		code := protocol.UpdateNotAllowed
		if errors.Is(err, ErrInvalidProposal) {
			code = protocol.UpdateInvalidProposal
		}
		return updateRefused(code, err), nil
	}
	if d, _ := DomainOf(client); d != from {
		return updateRefused(protocol.UpdateNotAllowed, notAllowed("%s may not speak for %s", from, client)), nil
	}
	_, domainsBefore := clientsByUser(r.pg)
	state, _ := DecodeRoomState(r.pg.Context().Extensions)
	msgs := []wire.MLSMessage{req.ProposalOrCommit}
	var added []string
	if pm.Content.ContentType == wire.ContentCommit {
		c, err := h.resolveCommit(r, pm, user)
		if err == nil {
			err = checkCommit(c)
		}
		if err != nil {
			code := protocol.UpdateNotAllowed
			if errors.Is(err, ErrInvalidProposal) {
				code = protocol.UpdateInvalidProposal
			}
			return updateRefused(code, err), nil
		}
		if len(c.added) > 0 && req.Welcome == nil && !c.external {
			return updateRefused(protocol.UpdateInvalidProposal, fmt.Errorf("%w: a commit that adds clients needs a Welcome", ErrInvalidProposal)), nil
		}
		if req.GroupInfoOption.GroupInfo == nil {
			return updateRefused(protocol.UpdateInvalidProposal, fmt.Errorf("%w: a commit needs the full GroupInfo of the new epoch", ErrInvalidProposal)), nil
		}
		added = c.added
	} else {
		msgs = append(msgs, req.MoreProposals...)
		for i := range msgs {
			mp := msgs[i].PublicMessage
			if mp.Content.Epoch != r.pg.Epoch() || !bytes.Equal(mp.Content.GroupID, []byte(room)) {
				return &protocol.UpdateRoomResponse{Code: protocol.UpdateWrongEpoch, CurrentEpoch: r.pg.Epoch(), ErrorDescription: "proposal for another epoch"}, nil
			}
			if mp.Content.Sender != pm.Content.Sender {
				return updateRefused(protocol.UpdateNotAllowed, notAllowed("moreProposals from another sender")), nil
			}
			switch p := mp.Content.Proposal.(type) {
			case *wire.Remove:
				_, target, err := clientOfLeaf(r.pg.Tree().Leaf(p.Removed))
				if err != nil {
					return &protocol.UpdateRoomResponse{Code: protocol.UpdateInvalidProposal, ErrorDescription: err.Error(), InvalidProposals: [][]byte{h.proposalRef(mp)}}, nil
				}
				if err := checkRemoveProposal(state, user, target); err != nil {
					return updateRefused(protocol.UpdateNotAllowed, err), nil
				}
			case *wire.Update:
			default:
				return updateRefused(protocol.UpdateNotAllowed, notAllowed("proposal type %d goes in a commit in this room", mp.Content.Proposal.ProposalType())), nil
			}
		}
	}
	// Past this point the view changes; any failure drops it so that it is replayed from what was stored.
	ok := false
	defer func() {
		if !ok {
			h.drop(room)
		}
	}()
	var accepted []pendingProposal
	for i := range msgs {
		if _, err := r.pg.Process(&msgs[i]); err != nil {
			resp := &protocol.UpdateRoomResponse{Code: protocol.UpdateInvalidProposal, ErrorDescription: err.Error()}
			if msgs[i].PublicMessage.Content.ContentType == wire.ContentProposal {
				resp.InvalidProposals = [][]byte{h.proposalRef(msgs[i].PublicMessage)}
			}
			if errors.Is(err, group.ErrNotMember) {
				resp.Code = protocol.UpdateNotAllowed
			}
			return resp, nil
		}
		if msgs[i].PublicMessage.Content.ContentType == wire.ContentProposal {
			accepted = append(accepted, pendingProposal{ref: h.proposalRef(msgs[i].PublicMessage), msg: msgs[i], proposal: msgs[i].PublicMessage.Content.Proposal, user: user})
		}
	}
	groupInfo := r.groupInfo
	if pm.Content.ContentType == wire.ContentCommit {
		gi := req.GroupInfoOption.GroupInfo
		if _, err := group.NewPublicGroup(h.p.groupConfig(), gi, r.pg.Tree().RatchetTree()); err != nil {
			return updateRefused(protocol.UpdateInvalidProposal, fmt.Errorf("%w: GroupInfo: %w", ErrInvalidProposal, err)), nil
		}
		if !bytes.Equal(codec.Marshal(&gi.GroupContext), codec.Marshal(r.pg.Context())) {
			return updateRefused(protocol.UpdateInvalidProposal, fmt.Errorf("%w: GroupInfo is not of the commit's epoch", ErrInvalidProposal)), nil
		}
		groupInfo = codec.Marshal(gi)
	}
	ts := nowMillis()
	// The providers that had clients before it get the message (those whose clients it removes, too); a provider
	// whose only clients it adds gets just the Welcome.
	dests := maps.Clone(domainsBefore)
	delete(dests, from)
	var welcomeDests map[string]bool
	if req.Welcome != nil {
		welcomeDests = map[string]bool{}
		for _, c := range added {
			if d, _ := DomainOf(c); d != from {
				welcomeDests[d] = true
			}
		}
	}
	seq := r.seq
	var queued []queuedRow
	err = h.p.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		queued = queued[:0]
		for i := range msgs {
			seq++
			if _, err := h.p.db.Exec(ctx, insertHubLogQuery, room, seq, int64(msgs[i].PublicMessage.Content.Epoch), codec.Marshal(&msgs[i]), int64(ts)); err != nil {
				return fmt.Errorf("logging accepted message: %w", err)
			}
		}
		if _, err := h.p.db.Exec(ctx, updateHubRoomQuery, room, int64(r.pg.Epoch()), groupInfo); err != nil {
			return fmt.Errorf("updating hub room: %w", err)
		}
		fm := protocol.FanoutMessage{Timestamp: ts, Message: req.ProposalOrCommit}
		if pm.Content.ContentType == wire.ContentProposal {
			fm.MoreProposals = req.MoreProposals
		}
		if err := h.queue(ctx, room, sortedKeys(dests), fm, &queued); err != nil {
			return err
		}
		if welcomeDests != nil {
			wm := protocol.FanoutMessage{Timestamp: ts, Message: wire.MLSMessage{Welcome: req.Welcome},
				RatchetTreeOption: &protocol.RatchetTreeOption{Representation: protocol.TreeFull, Tree: r.pg.Tree().RatchetTree()}}
			if err := h.queue(ctx, room, sortedKeys(welcomeDests), wm, &queued); err != nil {
				return err
			}
		}
		if also != nil {
			return also(ctx, ts)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("persisting accepted update in %s: %w", room, err)
	}
	ok = true
	r.seq, r.groupInfo = seq, groupInfo
	if pm.Content.ContentType == wire.ContentCommit {
		r.pending = nil
	} else {
		for i := range accepted {
			accepted[i].time = ts
		}
		r.pending = append(r.pending, accepted...)
	}
	h.p.fanout.enqueue(queued)
	zerolog.Ctx(ctx).Debug().Str("room", room).Str("from", from).Uint64("epoch", r.pg.Epoch()).Msg("Hub accepted update")
	return &protocol.UpdateRoomResponse{Code: protocol.UpdateSuccess, AcceptedTimestamp: ts}, nil
}

// queue adds one fan-out message for each destination, and lists the rows in queued (for the fan-out workers, once
// the transaction committed).
func (h *hub) queue(ctx context.Context, room string, dests []string, fm protocol.FanoutMessage, queued *[]queuedRow) error {
	if len(dests) == 0 {
		return nil
	}
	b, err := protocol.EncodeFanout([]protocol.FanoutMessage{fm})
	if err != nil {
		return err
	}
	return h.insertOutbox(ctx, room, dests, b, fm.Timestamp, queued)
}

func (h *hub) insertOutbox(ctx context.Context, room string, dests []string, body []byte, ts uint64, queued *[]queuedRow) error {
	for _, d := range dests {
		row := queuedRow{dest: d, outboxRow: outboxRow{room: room, fanout: body}}
		if err := h.p.db.QueryRow(ctx, insertOutboxQuery, d, room, body, int64(ts)).Scan(&row.seq); err != nil {
			return fmt.Errorf("queueing fan-out to %s: %w", d, err)
		}
		*queued = append(*queued, row)
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// submit handles an application message from provider from. Messages accepted while another submitter stores a
// batch are stored together in the next transaction (group commit); each is answered once its transaction
// committed, in acceptance order.
func (h *hub) submit(ctx context.Context, from, room string, req *protocol.SubmitMessageRequest) (*protocol.SubmitMessageResponse, error) {
	r, err := h.room(ctx, room)
	if err != nil {
		return nil, err
	}
	pm := req.AppMessage.PrivateMessage
	if !bytes.Equal(pm.GroupID, []byte(room)) {
		return nil, fmt.Errorf("%w: message for group %q", ErrBadRequest, pm.GroupID)
	}
	r.mu.Lock()
	if pm.Epoch != r.pg.Epoch() {
		r.mu.Unlock()
		return &protocol.SubmitMessageResponse{Code: protocol.SubmitEpochTooOld, CurrentEpoch: r.pg.Epoch()}, nil
	}
	d, err := ParseUser(req.SendingURI)
	if err != nil || d != from {
		r.mu.Unlock()
		return &protocol.SubmitMessageResponse{Code: protocol.SubmitNotAllowed}, nil
	}
	view, err := r.current()
	if err != nil {
		r.mu.Unlock()
		return nil, err
	}
	if err := checkSend(view.state, req.SendingURI, view.users[req.SendingURI]); err != nil {
		r.mu.Unlock()
		zerolog.Ctx(ctx).Debug().Err(err).Str("room", room).Msg("Hub refused message")
		return &protocol.SubmitMessageResponse{Code: protocol.SubmitNotAllowed}, nil
	}
	a := &accepted{ts: nowMillis(), dests: slices.DeleteFunc(slices.Clone(view.domains), func(d string) bool { return d == from }), done: make(chan error, 1)}
	if a.body, err = protocol.EncodeFanout([]protocol.FanoutMessage{{Timestamp: a.ts, Message: req.AppMessage}}); err != nil {
		r.mu.Unlock()
		return nil, err
	}
	r.batch = append(r.batch, a)
	if !r.committing {
		r.committing = true
		// The batch is stored for every submitter in it: not under this request's cancellation.
		h.storeBatches(context.WithoutCancel(ctx), r)
		r.committing = false
		r.idle.Broadcast()
	}
	r.mu.Unlock()
	if err := <-a.done; err != nil {
		return nil, fmt.Errorf("persisting accepted message in %s: %w", room, err)
	}
	return &protocol.SubmitMessageResponse{Code: protocol.SubmitAccepted, AcceptedTimestamp: a.ts}, nil
}

// storeBatches stores r.batch, one transaction per batch, until none is left (r.mu held, released meanwhile).
func (h *hub) storeBatches(ctx context.Context, r *hubRoom) {
	for len(r.batch) > 0 {
		batch := r.batch
		r.batch = nil
		r.mu.Unlock()
		var queued []queuedRow
		err := h.p.db.DoTxn(ctx, nil, func(ctx context.Context) error {
			queued = queued[:0]
			for _, a := range batch {
				if err := h.insertOutbox(ctx, r.uri, a.dests, a.body, a.ts, &queued); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			h.p.fanout.enqueue(queued)
		}
		for _, a := range batch {
			a.done <- err
		}
		r.mu.Lock()
	}
}

// mayAdd refuses (403, ErrNotAllowed) a key material request for a room hubbed here from a user the room's policy
// does not let add participants.
func (h *hub) mayAdd(ctx context.Context, room, user string) error {
	r, err := h.room(ctx, room)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	view, err := r.current()
	if err != nil {
		return err
	}
	if !view.state.Can(user, CanAddParticipant) {
		return &httpError{http.StatusForbidden, notAllowed("%s may not add participants to %s", user, room)}
	}
	return nil
}

// groupInfo answers a new client's request for the room's GroupInfo (to join by external commit): its user must be
// a participant that may add its own clients, and its provider must be the one asking.
func (h *hub) groupInfo(ctx context.Context, from, room string, req *protocol.GroupInfoRequest) (*protocol.GroupInfoResponse, error) {
	resp := &protocol.GroupInfoResponse{RoomID: []byte(room)}
	r, err := h.room(ctx, room)
	if errors.Is(err, ErrUnknownRoom) {
		resp.Status = protocol.GroupInfoNoSuchRoom
		return resp, nil
	} else if err != nil {
		return nil, err
	}
	if err := req.Verify(h.p.suite); err != nil {
		return nil, &httpError{http.StatusBadRequest, fmt.Errorf("%w: %w", ErrBadRequest, err)}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	user, err := UserOfClient(string(req.RequestingCredential.Identity))
	if err != nil || req.RequestingCredential.Type != wire.CredentialBasic {
		resp.Status = protocol.GroupInfoNotAuthorized
		return resp, nil
	}
	state, err := DecodeRoomState(r.pg.Context().Extensions)
	if err != nil {
		return nil, err
	}
	if d, _ := ParseUser(user); d != from || !state.Can(user, CanAddOwnClient) || uint16(req.CipherSuite) != uint16(h.p.suite.ID()) {
		resp.Status = protocol.GroupInfoNotAuthorized
		return resp, nil
	}
	var gi wire.GroupInfo
	if err := codec.Unmarshal(r.groupInfo, &gi); err != nil {
		return nil, fmt.Errorf("decoding stored group info: %w", err)
	}
	tbe := &protocol.GroupInfoRatchetTreeTBE{GroupInfo: gi,
		RatchetTreeOption: protocol.RatchetTreeOption{Representation: protocol.TreeFull, Tree: r.pg.Tree().RatchetTree()}}
	for _, p := range r.pending {
		tbe.PendingProposals = append(tbe.PendingProposals, protocol.PendingProposal{Proposal: p.msg, HubAcceptedTime: p.time})
	}
	resp.HubSender = h.externalSender()
	if err := resp.Seal(h.p.suite, req.GroupInfoPublicKey, tbe, h.p.sigPriv); err != nil {
		return nil, err
	}
	return resp, nil
}
