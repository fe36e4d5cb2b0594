package pdu

import (
	"errors"
	"fmt"
	"slices"
)

// Room version identifiers this package implements.
const (
	// RoomVersionLM02 is the unstable identifier that eigen-server and the Synapse prototype speak.
	RoomVersionLM02 = "org.matrix.i-d.ralston-mimi-linearized-matrix.02"
	// RoomVersionI1 is the draft's normative identifier. The algorithms are the same as RoomVersionLM02's.
	RoomVersionI1 = "I.1"
)

// ErrUnknownRoomVersion is returned by LookupRoomVersion for an identifier not in the table. The federation layer
// answers it with M_INCOMPATIBLE_ROOM_VERSION.
var ErrUnknownRoomVersion = errors.New("unknown room version")

// Protocol names the family of algorithms a room version belongs to, so that a protocol other than Linearized Matrix
// (the MIMI WG's draft-ietf-mimi-protocol, say) can add versions beside LM's without pretending to be LM.
type Protocol string

// ProtocolLinearizedMatrix is draft-ralston-mimi-linearized-matrix: hub-and-spoke, LPDUs, this package's event format.
const ProtocolLinearizedMatrix Protocol = "linearized-matrix"

// RoomVersion describes what a room version identifier means. Values in the table are shared: do not modify them.
type RoomVersion struct {
	// ID is the identifier as it appears in m.room.create's content.room_version and in ?ver= parameters.
	ID string
	// Protocol is the algorithm family.
	Protocol Protocol
	// Unstable marks identifiers meant for testing, as the draft calls RoomVersionLM02.
	Unstable bool
	// MaxEventBytes is the largest event, in canonical JSON with signatures, that the version allows.
	MaxEventBytes int
	// RedactionKeepsContent lists, per event type, the content keys that redaction keeps. A type mapped to nil keeps
	// all content (m.room.create); a type that is absent keeps none.
	RedactionKeepsContent map[string][]string
}

// lmRedaction is §8 of draft-ralston-mimi-linearized-matrix-04. It is narrower than room version 11: m.room.member
// keeps only membership, m.room.join_rules only join_rule, and m.room.redaction keeps nothing.
var lmRedaction = map[string][]string{
	"m.room.create":             nil,
	"m.room.member":             {"membership"},
	"m.room.join_rules":         {"join_rule"},
	"m.room.history_visibility": {"history_visibility"},
	"m.room.power_levels": {
		"ban", "events", "events_default", "invite", "kick", "redact", "state_default", "users", "users_default",
	},
}

var roomVersions = map[string]*RoomVersion{
	RoomVersionLM02: {
		ID:                    RoomVersionLM02,
		Protocol:              ProtocolLinearizedMatrix,
		Unstable:              true,
		MaxEventBytes:         MaxEventBytes,
		RedactionKeepsContent: lmRedaction,
	},
	RoomVersionI1: {
		ID:                    RoomVersionI1,
		Protocol:              ProtocolLinearizedMatrix,
		MaxEventBytes:         MaxEventBytes,
		RedactionKeepsContent: lmRedaction,
	},
}

// LookupRoomVersion returns the room version with the given identifier, or an error wrapping ErrUnknownRoomVersion.
func LookupRoomVersion(id string) (*RoomVersion, error) {
	if rv, ok := roomVersions[id]; ok {
		return rv, nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownRoomVersion, id)
}

// RoomVersions returns every supported room version, sorted by identifier, e.g. for make_join's ?ver= negotiation.
func RoomVersions() []*RoomVersion {
	out := make([]*RoomVersion, 0, len(roomVersions))
	for _, rv := range roomVersions {
		out = append(out, rv)
	}
	slices.SortFunc(out, func(a, b *RoomVersion) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}
