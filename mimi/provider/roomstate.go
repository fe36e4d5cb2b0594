package provider

import (
	"fmt"
	"slices"

	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// ExtensionAppDataDictionary is the app_data_dictionary GroupContext extension of draft-ietf-mls-extensions (its
// suggested codepoint; the draft is not an RFC yet).
const ExtensionAppDataDictionary wire.ExtensionType = 0x0006

// Component IDs of the room state (draft-ietf-mimi-protocol-06 §IANA, draft-ietf-mimi-room-policy-03 suggested values).
const (
	ComponentParticipantList uint16 = 0x0022
	ComponentRoomMetadata    uint16 = 0x0023
	ComponentRolesList       uint16 = 0x0025
)

// Capability is a role capability of draft-ietf-mimi-room-policy-03 §"Role Capabilities".
type Capability uint16

// The capabilities the room flows check.
const (
	CanAddParticipant    Capability = 0x0000
	CanRemoveParticipant Capability = 0x0001
	CanAddOwnClient      Capability = 0x0002
	CanRemoveOwnClient   Capability = 0x0003
	CanRemoveSelf        Capability = 0x0006
	CanChangeUserRole    Capability = 0x000f
	CanSendMessage       Capability = 0x0100
	CanReceiveMessage    Capability = 0x0101
	CanChangeRoomName    Capability = 0x0300
)

// Role indexes of DefaultRoles. 0 means "not in the participant list"; 1 is always "banned".
const (
	RoleNone        uint32 = 0
	RoleBanned      uint32 = 1
	RoleParticipant uint32 = 2
	RoleObserver    uint32 = 3
	RoleAdmin       uint32 = 4
)

// RoleChange is a SingleSourceRoleChangeTargets: the holder may move a user from From to any of Targets.
type RoleChange struct {
	From    uint32
	Targets []uint32
}

// Role is one entry of the roles_list component.
type Role struct {
	Index           uint32
	Name            string
	Description     string
	Capabilities    []Capability
	MinParticipants uint32
	MaxParticipants *uint32
	MinActive       uint32
	MaxActive       *uint32
	Changes         []RoleChange
}

// Participant is a UserRolePair of the participant list.
type Participant struct {
	User string
	Role uint32
}

// RichDescription is a room description in one language and media type.
type RichDescription struct {
	MediaType, Language, Content string
}

// RoomMetadata is the room_metadata component.
type RoomMetadata struct {
	RoomURI      string
	Name         string
	Descriptions []RichDescription
	Avatar       string
	Subject      string
	Mood         string
}

// RoomState is the room's state as the GroupContext carries it.
type RoomState struct {
	Roles        []Role
	Participants []Participant
	Metadata     RoomMetadata
}

// DefaultRoles is the policy of rooms this package creates: participants may invite others as participants, send
// and leave; observers only read and leave; admins may do everything, including removing others; banned users
// nothing.
func DefaultRoles() []Role {
	member := []Capability{CanAddOwnClient, CanRemoveOwnClient, CanRemoveSelf, CanSendMessage, CanReceiveMessage}
	return []Role{
		{Index: RoleBanned, Name: "banned"},
		{Index: RoleParticipant, Name: "participant", Capabilities: append([]Capability{CanAddParticipant}, member...),
			Changes: []RoleChange{{From: RoleNone, Targets: []uint32{RoleParticipant}}, {From: RoleParticipant, Targets: []uint32{RoleNone}}}},
		{Index: RoleObserver, Name: "observer", Capabilities: []Capability{CanAddOwnClient, CanRemoveOwnClient, CanRemoveSelf, CanReceiveMessage},
			Changes: []RoleChange{{From: RoleObserver, Targets: []uint32{RoleNone}}}},
		{Index: RoleAdmin, Name: "admin", Capabilities: append([]Capability{CanAddParticipant, CanRemoveParticipant, CanChangeUserRole, CanChangeRoomName}, member...),
			Changes: []RoleChange{
				{From: RoleNone, Targets: []uint32{RoleParticipant, RoleObserver, RoleAdmin, RoleBanned}},
				{From: RoleBanned, Targets: []uint32{RoleNone, RoleParticipant, RoleObserver}},
				{From: RoleParticipant, Targets: []uint32{RoleNone, RoleBanned, RoleObserver, RoleAdmin}},
				{From: RoleObserver, Targets: []uint32{RoleNone, RoleBanned, RoleParticipant, RoleAdmin}},
				{From: RoleAdmin, Targets: []uint32{RoleNone}},
			}},
	}
}

// RoleOf is user's role index, RoleNone if it is not listed.
func (s *RoomState) RoleOf(user string) uint32 {
	for _, p := range s.Participants {
		if p.User == user {
			return p.Role
		}
	}
	return RoleNone
}

func (s *RoomState) role(index uint32) *Role {
	for i := range s.Roles {
		if s.Roles[i].Index == index {
			return &s.Roles[i]
		}
	}
	return nil
}

// Can reports whether user's role holds c.
func (s *RoomState) Can(user string, c Capability) bool {
	r := s.role(s.RoleOf(user))
	return r != nil && slices.Contains(r.Capabilities, c)
}

// MayChange reports whether user's role holds c and authorises moving someone from role from to role to.
func (s *RoomState) MayChange(user string, c Capability, from, to uint32) bool {
	r := s.role(s.RoleOf(user))
	if r == nil || !slices.Contains(r.Capabilities, c) {
		return false
	}
	for _, ch := range r.Changes {
		if ch.From == from && slices.Contains(ch.Targets, to) {
			return true
		}
	}
	return false
}

// Clone is a deep copy, to derive a new state from.
func (s *RoomState) Clone() *RoomState {
	out := &RoomState{Roles: slices.Clone(s.Roles), Participants: slices.Clone(s.Participants), Metadata: s.Metadata}
	out.Metadata.Descriptions = slices.Clone(s.Metadata.Descriptions)
	return out
}

// WithParticipant is s with user set to role (RoleNone removes it).
func (s *RoomState) WithParticipant(user string, role uint32) *RoomState {
	out := s.Clone()
	out.Participants = slices.DeleteFunc(out.Participants, func(p Participant) bool { return p.User == user })
	if role != RoleNone {
		if i := slices.IndexFunc(s.Participants, func(p Participant) bool { return p.User == user }); i >= 0 {
			// A role change keeps the user's place in the list.
			out.Participants = slices.Insert(out.Participants, i, Participant{user, role})
		} else {
			out.Participants = append(out.Participants, Participant{user, role})
		}
	}
	return out
}

// Extensions is exts with the app_data_dictionary extension replaced by s.
func (s *RoomState) Extensions(exts wire.Extensions) wire.Extensions {
	out := slices.DeleteFunc(slices.Clone(exts), func(e wire.Extension) bool { return e.Type == ExtensionAppDataDictionary })
	return append(out, wire.Extension{Type: ExtensionAppDataDictionary, Data: s.encode()})
}

func (s *RoomState) encode() []byte {
	var w codec.Writer
	// AppDataDictionary: ComponentData component_data<V>, sorted by component ID.
	w.Vector(func(w *codec.Writer) {
		component(w, ComponentParticipantList, func(w *codec.Writer) {
			w.Vector(func(w *codec.Writer) {
				for _, p := range s.Participants {
					w.Opaque([]byte(p.User))
					w.Uint32(p.Role)
				}
			})
		})
		component(w, ComponentRoomMetadata, func(w *codec.Writer) {
			m := &s.Metadata
			w.Opaque([]byte(m.RoomURI))
			w.Opaque([]byte(m.Name))
			w.Vector(func(w *codec.Writer) {
				for _, d := range m.Descriptions {
					w.Opaque([]byte(d.MediaType))
					w.Opaque([]byte(d.Language))
					w.Opaque([]byte(d.Content))
				}
			})
			w.Opaque([]byte(m.Avatar))
			w.Opaque([]byte(m.Subject))
			w.Opaque([]byte(m.Mood))
		})
		component(w, ComponentRolesList, func(w *codec.Writer) {
			w.Vector(func(w *codec.Writer) {
				for _, r := range s.Roles {
					w.Uint32(r.Index)
					w.Opaque([]byte(r.Name))
					w.Opaque([]byte(r.Description))
					w.Vector(func(w *codec.Writer) {
						for _, c := range r.Capabilities {
							w.Uint16(uint16(c))
						}
					})
					w.Uint32(r.MinParticipants)
					optUint32(w, r.MaxParticipants)
					w.Uint32(r.MinActive)
					optUint32(w, r.MaxActive)
					w.Vector(func(w *codec.Writer) {
						for _, ch := range r.Changes {
							w.Uint32(ch.From)
							w.Vector(func(w *codec.Writer) {
								for _, t := range ch.Targets {
									w.Uint32(t)
								}
							})
						}
					})
				}
			})
		})
	})
	return w.Bytes()
}

func component(w *codec.Writer, id uint16, data func(*codec.Writer)) {
	w.Uint16(id)
	var inner codec.Writer
	data(&inner)
	w.Opaque(inner.Bytes())
}

func optUint32(w *codec.Writer, v *uint32) {
	w.Optional(v != nil, func(w *codec.Writer) { w.Uint32(*v) })
}

// DecodeRoomState reads the room state from GroupContext extensions. Every component must be present and strictly
// encoded.
func DecodeRoomState(exts wire.Extensions) (*RoomState, error) {
	data, ok := exts.Find(ExtensionAppDataDictionary)
	if !ok {
		return nil, fmt.Errorf("%w: no app_data_dictionary extension", ErrBadRoomState)
	}
	comps := map[uint16][]byte{}
	r := codec.NewReader(data)
	last := -1
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() && r.Err() == nil {
			id := r.Uint16()
			body := r.Opaque()
			if r.Err() == nil && int(id) <= last {
				r.Fail(fmt.Errorf("%w: components not in ascending order", ErrBadRoomState))
			}
			last = int(id)
			comps[id] = body
		}
	})
	if err := r.Finish(); err != nil {
		return nil, fmt.Errorf("%w: app_data_dictionary: %w", ErrBadRoomState, err)
	}
	s := &RoomState{}
	for _, c := range []struct {
		id   uint16
		name string
		read func(*codec.Reader)
	}{
		{ComponentParticipantList, "participant_list", s.readParticipants},
		{ComponentRoomMetadata, "room_metadata", s.readMetadata},
		{ComponentRolesList, "roles_list", s.readRoles},
	} {
		body, ok := comps[c.id]
		if !ok {
			return nil, fmt.Errorf("%w: no %s component", ErrBadRoomState, c.name)
		}
		r := codec.NewReader(body)
		c.read(r)
		if err := r.Finish(); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadRoomState, c.name, err)
		}
	}
	seen := map[string]bool{}
	for _, p := range s.Participants {
		if p.User == "" || seen[p.User] || p.Role == RoleNone || s.role(p.Role) == nil {
			return nil, fmt.Errorf("%w: participant %q with role %d listed twice, empty or with an undefined role", ErrBadRoomState, p.User, p.Role)
		}
		seen[p.User] = true
	}
	return s, nil
}

func str(r *codec.Reader) string { return string(r.Opaque()) }

func (s *RoomState) readParticipants(r *codec.Reader) {
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() && r.Err() == nil {
			s.Participants = append(s.Participants, Participant{User: str(r), Role: r.Uint32()})
		}
	})
}

func (s *RoomState) readMetadata(r *codec.Reader) {
	m := &s.Metadata
	m.RoomURI, m.Name = str(r), str(r)
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() && r.Err() == nil {
			m.Descriptions = append(m.Descriptions, RichDescription{MediaType: str(r), Language: str(r), Content: str(r)})
		}
	})
	m.Avatar, m.Subject, m.Mood = str(r), str(r), str(r)
}

func readOptUint32(r *codec.Reader) *uint32 {
	if !r.Optional() {
		return nil
	}
	v := r.Uint32()
	return &v
}

func (s *RoomState) readRoles(r *codec.Reader) {
	r.Vector(func(r *codec.Reader) {
		for !r.Empty() && r.Err() == nil {
			var role Role
			role.Index = r.Uint32()
			role.Name, role.Description = str(r), str(r)
			r.Vector(func(r *codec.Reader) {
				for !r.Empty() && r.Err() == nil {
					role.Capabilities = append(role.Capabilities, Capability(r.Uint16()))
				}
			})
			role.MinParticipants = r.Uint32()
			role.MaxParticipants = readOptUint32(r)
			role.MinActive = r.Uint32()
			role.MaxActive = readOptUint32(r)
			r.Vector(func(r *codec.Reader) {
				for !r.Empty() && r.Err() == nil {
					ch := RoleChange{From: r.Uint32()}
					r.Vector(func(r *codec.Reader) {
						for !r.Empty() && r.Err() == nil {
							ch.Targets = append(ch.Targets, r.Uint32())
						}
					})
					role.Changes = append(role.Changes, ch)
				}
			})
			s.Roles = append(s.Roles, role)
		}
	})
}
