package linearize

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lmbridge/lmbridge/linearize/auth"
	"github.com/lmbridge/lmbridge/linearize/pdu"
	"github.com/lmbridge/lmbridge/linearize/store"
	"github.com/lmbridge/lmbridge/remote"
)

// ErrForbidden wraps every refusal by the auth rules; the wrapped *auth error names the rule.
var ErrForbidden = errors.New("refused by the room's auth rules")

// ErrNotOurUser means the engine was asked to act for a user of another server.
var ErrNotOurUser = errors.New("user does not belong to this server")

// InitialState is a state event CreateRoom sends after the room's base events; it may replace power levels, join
// rules or history visibility, and add name, topic and the like.
type InitialState = remote.InitialState

// CreateRoom creates an LM room with us as hub (§11: the hub is the create sender's server), as eigen does: create,
// the creator's join, power levels (creator 100, invite 50), join rules "invite", history visibility "shared", then
// the initial state (which may replace any of those). It returns the room ID.
func (e *Engine) CreateRoom(ctx context.Context, creator string, initial []InitialState) (string, error) {
	if pdu.ServerName(creator) != e.serverName {
		return "", fmt.Errorf("%w: %s", ErrNotOurUser, creator)
	}
	var local [18]byte
	if _, err := rand.Read(local[:]); err != nil {
		return "", fmt.Errorf("failed to make room ID: %w", err)
	}
	roomID := "!" + base64.RawURLEncoding.EncodeToString(local[:]) + ":" + e.serverName
	return roomID, e.createRoom(ctx, roomID, creator, initial)
}

// createRoom creates a room under a given ID (CreateRoom mints one; tests reuse IDs from recorded exchanges).
func (e *Engine) createRoom(ctx context.Context, roomID, creator string, initial []InitialState) error {
	if pdu.ServerName(creator) != e.serverName {
		return fmt.Errorf("%w: %s", ErrNotOurUser, creator)
	}
	base := []InitialState{
		{Type: "m.room.create", Content: map[string]any{"room_version": e.cfg.RoomVersion}},
		{Type: "m.room.member", StateKey: creator, Content: map[string]any{"membership": "join"}},
		{Type: "m.room.power_levels", Content: map[string]any{
			"ban": 50, "kick": 50, "invite": 50, "redact": 50, "events_default": 0, "state_default": 50,
			"users_default": 0, "users": map[string]any{creator: 100},
			"events": map[string]any{
				"m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.encryption": 100,
				"m.room.server_acl": 100, "m.room.tombstone": 100,
			},
		}},
		{Type: "m.room.join_rules", Content: map[string]any{"join_rule": "invite"}},
		{Type: "m.room.history_visibility", Content: map[string]any{"history_visibility": "shared"}},
	}
	override := make(map[auth.Key]InitialState)
	var extra []InitialState
	for _, st := range initial {
		k := auth.Key{Type: st.Type, StateKey: st.StateKey}
		if k.Type == "m.room.power_levels" || k.Type == "m.room.join_rules" || k.Type == "m.room.history_visibility" {
			override[k] = st
		} else if k.Type != "m.room.create" {
			extra = append(extra, st)
		}
	}
	for i, st := range base {
		if o, ok := override[auth.Key{Type: st.Type, StateKey: st.StateKey}]; ok {
			base[i] = o
		}
	}

	e.writeLock.Lock()
	defer e.writeLock.Unlock()
	info := &RoomInfo{RoomID: roomID, RoomVersion: e.cfg.RoomVersion, HubServer: e.serverName, Role: RoleHub, Status: store.StatusActive}
	rs := newRoomState(info)
	var items []appendItem
	ts := e.now().UnixMilli()
	for _, st := range append(base, extra...) {
		p := &pdu.PDU{RoomID: roomID, Type: st.Type, StateKey: pdu.StringPtr(st.StateKey), Sender: creator, OriginServerTS: ts}
		if err := p.SetContent(st.Content); err != nil {
			return fmt.Errorf("failed to encode %s content: %w", st.Type, err)
		}
		it, err := e.buildLocal(p, rs)
		if err != nil {
			return fmt.Errorf("failed to make %s event: %w", st.Type, err)
		}
		if err = rs.apply(it.p, it.eventID, rs.headIdx+1); err != nil {
			return err
		}
		items = append(items, *it)
	}
	e.rooms[roomID] = newRoomState(info)
	err := e.commitBatch(ctx, batch{items: items, pre: func(ctx context.Context) error {
		return e.store.PutRoom(ctx, info, ts)
	}})
	if err != nil {
		delete(e.rooms, roomID)
		return fmt.Errorf("failed to create room: %w", err)
	}
	return nil
}

// buildLocal completes a hub-local event (no hub_server, no LPDU) against rs and auth-checks it.
func (e *Engine) buildLocal(p *pdu.PDU, rs *roomState) (*appendItem, error) {
	p.AuthEvents = selectAuthEvents(p, rs)
	if err := checkAuth(p, rs); err != nil {
		return nil, err
	}
	if _, err := p.Complete(p.AuthEvents, rs.headID(), e.serverName, string(e.key.ID), e.key.Priv); err != nil {
		return nil, err
	}
	return e.makeItem(rs.info.RoomID, p)
}

// signAsHub adds the content hash and our signature to a PDU whose auth and prev events are set.
func (e *Engine) signAsHub(p *pdu.PDU) error {
	prev := ""
	if len(p.PrevEvents) > 0 {
		prev = p.PrevEvents[0]
	}
	_, err := p.Complete(p.AuthEvents, prev, e.serverName, string(e.key.ID), e.key.Priv)
	return err
}

// SendEvent sends an event as one of our users. In a room we are hub of, it is a hub-local PDU, auth-checked (a
// refusal wraps ErrForbidden and names the rule), appended and fanned out; the event ID is returned. In a room another
// hub owns, it is an LPDU queued for the hub: the returned ID is the LPDU ID, which the echo's Event.LPDUID carries,
// and a refusal by the hub reaches Listener.OnLPDUFailed. ts is origin_server_ts (zero means now).
func (e *Engine) SendEvent(ctx context.Context, roomID, sender, evtType string, stateKey *string, content any, ts time.Time) (string, error) {
	return e.SendEventKeyed(ctx, roomID, sender, evtType, stateKey, content, ts, "")
}

// SendEventKeyed is SendEvent with an idempotency key (the bridge passes the ID of the event it is bridging): the key
// is stored with the log row or the queued LPDU, in the same database transaction, and a later call with the same
// room and key sends nothing and returns the first call's event or LPDU ID, whatever its other arguments. So a caller
// that crashed after the send but before recording its result can simply send again. An empty key means no key.
func (e *Engine) SendEventKeyed(ctx context.Context, roomID, sender, evtType string, stateKey *string, content any, ts time.Time, key string) (string, error) {
	return e.SendEventKeyedWith(ctx, roomID, sender, evtType, stateKey, content, ts, key, nil)
}

// SendEventKeyedWith is SendEventKeyed that also runs with inside the database transaction that appends the event or
// queues the LPDU, once its ID is known and before the commit: the caller's own rows (the bridge's mapping of the
// event it bridged) commit with the send or not at all, for a commit fewer per send. ctx carries the transaction, so
// queries through a dbutil.Database that is a Child of the engine's join it. with's error rolls the send back and is
// the call's error; concurrent calls queued together are unaffected. When key was used before, nothing is sent and
// with runs in a transaction of its own with the first call's ID. with must not call the engine. A nil with is
// SendEventKeyed.
func (e *Engine) SendEventKeyedWith(ctx context.Context, roomID, sender, evtType string, stateKey *string, content any, ts time.Time, key string, with func(ctx context.Context, eventID string) error) (string, error) {
	if pdu.ServerName(sender) != e.serverName {
		return "", fmt.Errorf("%w: %s", ErrNotOurUser, sender)
	}
	if ts.IsZero() {
		ts = e.now()
	}
	p := &pdu.PDU{RoomID: roomID, Type: evtType, StateKey: stateKey, Sender: sender, OriginServerTS: ts.UnixMilli()}
	if err := p.SetContent(content); err != nil {
		return "", fmt.Errorf("failed to encode content: %w", err)
	}
	req := &sendRequest{ctx: ctx, p: p, key: key, with: with}
	e.sendQueueLock.Lock()
	e.sendQueue = append(e.sendQueue, req)
	e.sendQueueLock.Unlock()
	e.writeLock.Lock()
	// Whoever holds writeLock next takes every queued request, ours included unless a holder before took it; either
	// way it has been handled when we have the lock.
	e.sendQueueLock.Lock()
	reqs := e.sendQueue
	e.sendQueue = nil
	e.sendQueueLock.Unlock()
	if len(reqs) > 0 {
		e.sendQueued(reqs)
	}
	e.writeLock.Unlock()
	return req.id, req.err
}

// sendOne sends one event under writeLock; LPDUs return errGroupLPDU with their wire form in req, for the caller to
// commit with the others of its group.
func (e *Engine) sendOne(req *sendRequest, inGroup map[sendKeyRef]*sendRequest) error {
	ctx, p, key, roomID := req.ctx, req.p, req.key, req.p.RoomID
	if key != "" {
		// Under writeLock, so that two sends with one key cannot both miss.
		if prev, ok := inGroup[sendKeyRef{roomID, key}]; ok {
			req.sameAs = prev
			return nil
		}
		if prev, err := e.store.SentWithKey(ctx, roomID, key); err != nil {
			return err
		} else if prev != "" {
			req.id = prev
			if req.with != nil {
				return e.store.Write(ctx, func(ctx context.Context) error { return req.with(ctx, prev) })
			}
			return nil
		}
	}
	rs, err := e.loadRoom(ctx, roomID)
	if err != nil {
		return err
	} else if rs == nil {
		return fmt.Errorf("%w %s", ErrUnknownRoom, roomID)
	}
	if rs.info.Role == RoleHub {
		it, err := e.buildLocal(p, rs.clone())
		if err != nil {
			return err
		}
		it.own = true
		err = e.commitBatch(ctx, batch{items: []appendItem{*it}, pre: func(ctx context.Context) error {
			if key != "" {
				if err := e.store.PutSendKey(ctx, roomID, key, it.eventID, e.now().UnixMilli()); err != nil {
					return err
				}
			}
			if req.with != nil {
				return req.with(ctx, it.eventID)
			}
			return nil
		}})
		if err != nil {
			return fmt.Errorf("failed to append event: %w", err)
		}
		req.id = it.eventID
		return nil
	}
	if p.Type != auth.TypeMember && !rs.isJoined(e.serverName) {
		return fmt.Errorf("%w %s", ErrNotJoined, roomID)
	}
	lpduID, raw, err := e.makeLPDU(p, rs.info.HubServer)
	if err != nil {
		return err
	}
	req.id, req.hub, req.lpdu = lpduID, rs.info.HubServer, raw
	if key != "" {
		inGroup[sendKeyRef{roomID, key}] = req
	}
	return errGroupLPDU
}

// makeLPDU fills hub_server, hashes.lpdu and our signature, and returns the LPDU ID and wire form.
func (e *Engine) makeLPDU(p *pdu.PDU, hub string) (string, json.RawMessage, error) {
	p.HubServer = hub
	p.AuthEvents, p.PrevEvents = nil, nil
	p.Hashes = pdu.Hashes{}
	p.Signatures = nil
	if err := p.FillLPDUHash(); err != nil {
		return "", nil, fmt.Errorf("failed to hash LPDU: %w", err)
	}
	if err := p.SignLPDU(e.serverName, string(e.key.ID), e.key.Priv); err != nil {
		return "", nil, err
	}
	id, err := p.EventID()
	if err != nil {
		return "", nil, fmt.Errorf("failed to compute LPDU ID: %w", err)
	}
	raw, err := p.Canonical()
	if err != nil {
		return "", nil, fmt.Errorf("failed to encode LPDU: %w", err)
	} else if len(raw) > pdu.MaxEventBytes {
		// The hub adds auth and prev events and its signature: leave room for them.
		return "", nil, fmt.Errorf("%w: %d bytes, the limit is %d", pdu.ErrEventTooLarge, len(raw), pdu.MaxEventBytes)
	}
	return id, raw, nil
}

func memberContent(membership, reason string) map[string]any {
	c := map[string]any{"membership": membership}
	if reason != "" {
		c["reason"] = reason
	}
	return c
}

// Kick removes target from the room as sender.
func (e *Engine) Kick(ctx context.Context, roomID, sender, target, reason string) (string, error) {
	return e.SendEvent(ctx, roomID, sender, "m.room.member", pdu.StringPtr(target), memberContent("leave", reason), time.Time{})
}

// Ban bans target from the room as sender.
func (e *Engine) Ban(ctx context.Context, roomID, sender, target, reason string) (string, error) {
	return e.SendEvent(ctx, roomID, sender, "m.room.member", pdu.StringPtr(target), memberContent("ban", reason), time.Time{})
}

// Unban lifts a ban (a leave sent by someone else).
func (e *Engine) Unban(ctx context.Context, roomID, sender, target string) (string, error) {
	return e.SendEvent(ctx, roomID, sender, "m.room.member", pdu.StringPtr(target), memberContent("leave", ""), time.Time{})
}
