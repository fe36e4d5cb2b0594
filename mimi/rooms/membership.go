package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/lmbridge/lmbridge/mimi/provider"
	"github.com/lmbridge/lmbridge/remote"
)

const (
	putIntentQuery    = `INSERT INTO mimi_rooms_intent (room_uri, user_uri, kind, actor) VALUES ($1, $2, $3, $4) ON CONFLICT (room_uri, user_uri, kind) DO UPDATE SET actor=excluded.actor`
	getIntentQuery    = `SELECT actor FROM mimi_rooms_intent WHERE room_uri=$1 AND user_uri=$2 AND kind=$3`
	deleteIntentQuery = `DELETE FROM mimi_rooms_intent WHERE room_uri=$1 AND user_uri=$2 AND kind=$3`
)

// The kinds of intent: this side added or removed a user.
const (
	intentAdd    = "add"
	intentRemove = "remove"
)

// NewRoom creates a room this provider hubs, with creator (one of ours) as its admin; of the initial state only the
// name is carried, as the room's metadata.
func (r *Rooms) NewRoom(ctx context.Context, creator remote.UserID, initial []remote.InitialState) (remote.RoomID, error) {
	user, err := UserURI(creator)
	if err != nil {
		return "", mapErr(err)
	}
	if err = r.ensureClient(ctx, user); err != nil {
		return "", err
	}
	var meta provider.RoomMetadata
	for _, st := range initial {
		if st.Type == "m.room.name" {
			if c, ok := st.Content.(map[string]any); ok {
				meta.Name, _ = c["name"].(string)
			}
		}
	}
	name, err := newRoomName()
	if err != nil {
		return "", err
	}
	room, err := r.p.CreateRoom(ctx, name, user, meta)
	if err != nil {
		return "", mapErr(fmt.Errorf("creating a MIMI room: %w", err))
	}
	return SeamRoom(room)
}

// SendRoomEvent is in send.go.

// JoinRoom joins one of our users to a room: a no-op when they are in it already, otherwise another of our users in
// the room adds them (MIMI has no joining by oneself).
func (r *Rooms) JoinRoom(ctx context.Context, req *remote.MembershipRequest) (remote.EventID, error) {
	return "", r.join(ctx, req.Room, req.TargetOrSender(), "")
}

// KnockRoom is not carried: MIMI has no knocks.
func (r *Rooms) KnockRoom(context.Context, *remote.MembershipRequest) error {
	return &remote.Mapped{Err: errors.New("MIMI rooms have no knocks"), Also: []error{remote.ErrUnsupported}}
}

// LeaveRoom takes req.Sender out of the room.
func (r *Rooms) LeaveRoom(ctx context.Context, req *remote.MembershipRequest) (remote.EventID, error) {
	room, user, err := roomAndUser(req.Room, req.TargetOrSender())
	if err != nil {
		return "", err
	}
	return "", r.withIntent(ctx, room, user, intentRemove, user, func() error { return r.p.Leave(ctx, room, user) })
}

// InviteToRoom adds req.Target (a user of any provider) to the room as req.Sender: MIMI's invite is an add.
func (r *Rooms) InviteToRoom(ctx context.Context, req *remote.MembershipRequest) (remote.EventID, error) {
	room, target, err := roomAndUser(req.Room, req.Target)
	if err != nil {
		return "", err
	}
	by, err := UserURI(req.Sender)
	if err != nil {
		return "", mapErr(err)
	}
	return "", r.add(ctx, room, by, target)
}

// SetMembership carries a member event: joins, leaves, kicks and bans (both removals), invites (adds).
func (r *Rooms) SetMembership(ctx context.Context, req *remote.MembershipRequest) (remote.EventID, error) {
	room, target, err := roomAndUser(req.Room, req.TargetOrSender())
	if err != nil {
		return "", err
	}
	by, err := UserURI(req.Sender)
	if err != nil {
		return "", mapErr(err)
	}
	switch req.Membership {
	case "join":
		return "", r.join(ctx, req.Room, req.TargetOrSender(), by)
	case "invite":
		return "", r.add(ctx, room, by, target)
	case "leave", "ban":
		if by == target {
			return "", r.withIntent(ctx, room, target, intentRemove, target, func() error { return r.p.Leave(ctx, room, target) })
		}
		return "", r.withIntent(ctx, room, target, intentRemove, by, func() error { return r.remove(ctx, room, by, target) })
	}
	return "", &remote.Mapped{Err: fmt.Errorf("MIMI rooms have no %q membership", req.Membership), Also: []error{remote.ErrUnsupported}}
}

func roomAndUser(roomID remote.RoomID, userID remote.UserID) (string, string, error) {
	room, err := RoomURI(roomID)
	if err != nil {
		return "", "", mapErr(err)
	}
	user, err := UserURI(userID)
	if err != nil {
		return "", "", mapErr(err)
	}
	return room, user, nil
}

// join adds one of our users unless they are a participant already; by (if set) is who acts, else any of our users
// in the room.
func (r *Rooms) join(ctx context.Context, roomID remote.RoomID, userID remote.UserID, by string) error {
	room, user, err := roomAndUser(roomID, userID)
	if err != nil {
		return err
	}
	if !r.isOurs(user) {
		return &remote.Mapped{Err: fmt.Errorf("%s is not a user of %s", user, r.domain), Also: []error{remote.ErrNotOurUser}}
	}
	state, err := r.p.RoomState(ctx, room)
	if err != nil {
		return mapErr(fmt.Errorf("joining %s: %w", room, err))
	}
	if state.RoleOf(user) != provider.RoleNone {
		return nil
	}
	if by == "" || by == user || state.RoleOf(by) == provider.RoleNone {
		by = r.localActor(state, user)
	}
	if by == "" {
		return &remote.Mapped{Err: fmt.Errorf("none of %s's users is in %s to add %s", r.domain, room, user),
			Also: []error{remote.ErrNotJoined}}
	}
	return r.add(ctx, room, by, user)
}

// localActor is a local participant other than not, admins first, or "".
func (r *Rooms) localActor(state *provider.RoomState, not string) string {
	ps := slices.Clone(state.Participants)
	slices.SortStableFunc(ps, func(a, b provider.Participant) int { return int(b.Role) - int(a.Role) })
	for _, p := range ps {
		if p.User != not && r.isOurs(p.User) && p.Role != provider.RoleBanned {
			return p.User
		}
	}
	return ""
}

// remove removes target as by or, when the room's policy does not let by remove others, as one of our admins in the
// room: the Matrix room's rules, which the homeserver checked, allowed the kick, and the bridge acts for the room as
// its bot does on Matrix.
func (r *Rooms) remove(ctx context.Context, room, by, target string) error {
	err := r.p.RemoveUser(ctx, room, by, target)
	if !errors.Is(err, provider.ErrNotAllowed) {
		return err
	}
	state, serr := r.p.RoomState(ctx, room)
	if serr != nil {
		return err
	}
	admin := r.localActor(state, target)
	if admin == "" || admin == by || state.RoleOf(admin) != provider.RoleAdmin {
		return err
	}
	return r.p.RemoveUser(ctx, room, admin, target)
}

// add adds target as by, registering target's client first when it is one of ours.
func (r *Rooms) add(ctx context.Context, room, by, target string) error {
	if r.isOurs(target) {
		if err := r.ensureClient(ctx, target); err != nil {
			return err
		}
	}
	return r.withIntent(ctx, room, target, intentAdd, by, func() error {
		return r.p.AddUser(ctx, room, by, target, provider.RoleParticipant)
	})
}

// withIntent records what this side is about to do to user, does it, and forgets the record if it failed.
func (r *Rooms) withIntent(ctx context.Context, room, user, kind, actor string, do func() error) error {
	if _, err := r.db.Exec(ctx, putIntentQuery, room, user, kind, actor); err != nil {
		return fmt.Errorf("recording a membership change: %w", err)
	}
	if err := do(); err != nil {
		_, _ = r.db.Exec(context.WithoutCancel(ctx), deleteIntentQuery, room, user, kind)
		return mapErr(err)
	}
	return nil
}

// takeIntent returns and forgets the actor of a recorded change, "" when none was recorded.
func (r *Rooms) takeIntent(ctx context.Context, room, user, kind string) (string, error) {
	var actor string
	err := r.db.QueryRow(ctx, getIntentQuery, room, user, kind).Scan(&actor)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	} else if err != nil {
		return "", err
	}
	_, err = r.db.Exec(ctx, deleteIntentQuery, room, user, kind)
	return actor, err
}

// hasIntent says whether a change is recorded, without forgetting it.
func (r *Rooms) hasIntent(ctx context.Context, room, user, kind string) (bool, error) {
	var actor string
	err := r.db.QueryRow(ctx, getIntentQuery, room, user, kind).Scan(&actor)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// RoomState is the participant list as member entries (all joined), and the room's name.
func (r *Rooms) RoomState(ctx context.Context, roomID remote.RoomID) ([]remote.StateEntry, error) {
	room, err := RoomURI(roomID)
	if err != nil {
		return nil, mapErr(err)
	}
	state, err := r.p.RoomState(ctx, room)
	if err != nil {
		return nil, mapErr(err)
	}
	var out []remote.StateEntry
	for _, p := range state.Participants {
		if p.Role == provider.RoleBanned {
			continue
		}
		u, err := SeamUser(p.User)
		if err != nil {
			continue
		}
		out = append(out, remote.StateEntry{Type: "m.room.member", StateKey: string(u), Membership: "join"})
	}
	if state.Metadata.Name != "" {
		out = append(out, remote.StateEntry{Type: "m.room.name"})
	}
	return out, nil
}

// RoomEvent finds nothing: MIMI rooms keep no events to look up.
func (r *Rooms) RoomEvent(context.Context, remote.EventID) (*remote.Event, error) { return nil, nil }

// DeliveryStatus is the fan-out state of the providers of the room's participants (when this provider hubs it).
func (r *Rooms) DeliveryStatus(ctx context.Context, roomID remote.RoomID) ([]remote.Delivery, error) {
	room, err := RoomURI(roomID)
	if err != nil {
		return nil, mapErr(err)
	}
	hub, _ := provider.ParseRoom(room)
	out := []remote.Delivery{}
	if hub != r.domain {
		return out, nil
	}
	state, err := r.p.RoomState(ctx, room)
	if err != nil {
		return nil, mapErr(err)
	}
	inRoom := map[string]bool{}
	for _, p := range state.Participants {
		if d, err := provider.DomainOf(p.User); err == nil && d != r.domain {
			inRoom[d] = true
		}
	}
	statuses, err := r.p.DeliveryStatus(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range statuses {
		if inRoom[s.Destination] {
			delete(inRoom, s.Destination)
			out = append(out, remote.Delivery{Server: remote.ServerName(s.Destination), Queued: s.Queued,
				RetryCount: s.Attempts, LastError: s.LastError})
		}
	}
	for d := range inRoom {
		out = append(out, remote.Delivery{Server: remote.ServerName(d)})
	}
	slices.SortFunc(out, func(a, b remote.Delivery) int {
		return strings.Compare(string(a.Server), string(b.Server))
	})
	return out, nil
}
