package provider

import (
	"bytes"
	"fmt"
	"slices"
)

// removal is a client a commit removes, with the user who proposed its removal.
type removal struct {
	client, user, proposer string
}

// commitChange is what a commit would do to the room, resolved against the hub's view before it applies.
type commitChange struct {
	// committer is the user of the committing client; for an external commit, the joiner's.
	committer string
	external  bool
	before    *RoomState
	// after is the room state the commit sets (before when it has no GroupContextExtensions proposal).
	after   *RoomState
	added   []string // client URIs
	removed []removal
	// remaining counts each user's clients after the commit.
	remaining map[string]int
	// otherProposals names proposal types this provider does not let through (ReInit and the like).
	otherProposals []string
}

func notAllowed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNotAllowed, fmt.Sprintf(format, args...))
}

// checkCommit applies the room-policy draft's rules to a commit: who may add and remove participants and clients,
// change roles and metadata.
func checkCommit(c *commitChange) error {
	b, a := c.before, c.after
	if len(c.otherProposals) > 0 {
		return notAllowed("proposal types %v are not allowed in this room", c.otherProposals)
	}
	role := b.RoleOf(c.committer)
	if c.external {
		if !b.Can(c.committer, CanAddOwnClient) {
			return notAllowed("%s may not join a new client (role %d)", c.committer, role)
		}
	} else if role == RoleNone || role == RoleBanned {
		return notAllowed("%s is not a participant (role %d)", c.committer, role)
	}
	if !sameRoles(b.Roles, a.Roles) {
		return notAllowed("the roles list cannot be changed")
	}
	if !sameMetadata(&b.Metadata, &a.Metadata) && !b.Can(c.committer, CanChangeRoomName) {
		return notAllowed("%s may not change the room metadata", c.committer)
	}
	if c.external && !slices.Equal(b.Participants, a.Participants) {
		return notAllowed("an external commit may not change the participant list")
	}
	selfOnly := func(user string) bool {
		for _, r := range c.removed {
			if r.user == user && r.proposer != user {
				return false
			}
		}
		return true
	}
	for _, p := range a.Participants {
		from := b.RoleOf(p.User)
		switch {
		case from == RoleNone:
			if !b.MayChange(c.committer, CanAddParticipant, RoleNone, p.Role) {
				return notAllowed("%s may not add %s with role %d", c.committer, p.User, p.Role)
			}
		case from != p.Role:
			if p.User == c.committer || !b.MayChange(c.committer, CanChangeUserRole, from, p.Role) {
				return notAllowed("%s may not change the role of %s from %d to %d", c.committer, p.User, from, p.Role)
			}
		}
	}
	for _, p := range b.Participants {
		if a.RoleOf(p.User) != RoleNone {
			continue
		}
		if p.User == c.committer || selfOnly(p.User) && hasRemoval(c.removed, p.User) {
			if !b.MayChange(p.User, CanRemoveSelf, p.Role, RoleNone) {
				return notAllowed("%s may not leave", p.User)
			}
		} else if !b.MayChange(c.committer, CanRemoveParticipant, p.Role, RoleNone) {
			return notAllowed("%s may not remove %s", c.committer, p.User)
		}
		if c.remaining[p.User] > 0 {
			return notAllowed("%s leaves the participant list with %d clients still in the group", p.User, c.remaining[p.User])
		}
	}
	for _, p := range a.Participants {
		if p.Role == RoleBanned && c.remaining[p.User] > 0 {
			return notAllowed("banned user %s keeps clients in the group", p.User)
		}
	}
	for _, client := range c.added {
		user, err := UserOfClient(client)
		if err != nil {
			return notAllowed("added client: %v", err)
		}
		r := a.RoleOf(user)
		if r == RoleNone || r == RoleBanned {
			return notAllowed("client %s added for %s, who is not a participant (role %d)", client, user, r)
		}
		if b.RoleOf(user) == RoleNone {
			continue // added with its user, checked above
		}
		if user == c.committer {
			if !b.Can(user, CanAddOwnClient) {
				return notAllowed("%s may not add its own clients", user)
			}
		} else if !b.Can(c.committer, CanAddParticipant) {
			return notAllowed("%s may not add clients of %s", c.committer, user)
		}
	}
	for _, r := range c.removed {
		if a.RoleOf(r.user) == RoleNone || a.RoleOf(r.user) == RoleBanned {
			continue // goes with the user's removal, checked above
		}
		if r.proposer == r.user || (r.proposer == c.committer && r.user == c.committer) {
			if !b.Can(r.user, CanRemoveOwnClient) {
				return notAllowed("%s may not remove its own client %s", r.user, r.client)
			}
		} else if !b.Can(r.proposer, CanRemoveParticipant) {
			return notAllowed("%s may not remove client %s of %s", r.proposer, r.client, r.user)
		}
	}
	return nil
}

func hasRemoval(rs []removal, user string) bool {
	return slices.ContainsFunc(rs, func(r removal) bool { return r.user == user })
}

func sameRoles(a, b []Role) bool {
	s1, s2 := RoomState{Roles: a}, RoomState{Roles: b}
	return bytes.Equal(s1.encode(), s2.encode())
}

func sameMetadata(a, b *RoomMetadata) bool {
	s1, s2 := RoomState{Metadata: *a}, RoomState{Metadata: *b}
	return bytes.Equal(s1.encode(), s2.encode())
}

// checkRemoveProposal applies the rules to a stand-alone Remove proposal: a user may propose removing its own
// clients (leaving when they are all of them), an admin anyone's.
func checkRemoveProposal(s *RoomState, proposer, target string) error {
	if proposer == target {
		if s.Can(proposer, CanRemoveSelf) || s.Can(proposer, CanRemoveOwnClient) {
			return nil
		}
		return notAllowed("%s may not remove its own clients", proposer)
	}
	if !s.MayChange(proposer, CanRemoveParticipant, s.RoleOf(target), RoleNone) {
		return notAllowed("%s may not remove %s", proposer, target)
	}
	return nil
}

// checkSend is the policy of submitMessage: the sender is a participant allowed to send, with a client in the group.
func checkSend(s *RoomState, user string, clients int) error {
	if !s.Can(user, CanSendMessage) {
		return notAllowed("%s may not send messages (role %d)", user, s.RoleOf(user))
	}
	if clients == 0 {
		return notAllowed("%s has no client in the group", user)
	}
	return nil
}
