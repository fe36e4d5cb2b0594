package federation

import (
	"encoding/json"
	"fmt"
)

// Transaction is the body of /send: LPDUs from participants, PDUs from the hub. EDUs are accepted and ignored.
type Transaction struct {
	PDUs []json.RawMessage `json:"pdus"`
	EDUs []json.RawMessage `json:"edus,omitempty"`
}

// SendResponse is /send's answer.
type SendResponse struct {
	FailedPDUs map[string]FailedPDU `json:"failed_pdus"`
}

// FailedPDU says why one received object was not accepted.
type FailedPDU struct {
	Error string `json:"error"`
}

// StateResponse is /state's answer.
type StateResponse struct {
	AuthChain []json.RawMessage `json:"auth_chain"`
	PDUs      []json.RawMessage `json:"pdus"`
}

// StateIDsResponse is /state_ids' answer; eigen's misspelt pdus_ids is read as pdu_ids too.
type StateIDsResponse struct {
	AuthChainIDs []string `json:"auth_chain_ids"`
	PDUIDs       []string `json:"pdu_ids"`
}

// BackfillResponse is /backfill's answer.
type BackfillResponse struct {
	PDUs []json.RawMessage `json:"pdus"`
}

// InviteRequest is /invite's body.
type InviteRequest struct {
	Event           json.RawMessage   `json:"event"`
	InviteRoomState []json.RawMessage `json:"invite_room_state,omitempty"`
	RoomVersion     string            `json:"room_version"`
}

// InviteResponse is /invite's answer. We emit the draft's "pdu" and Matrix's "event" both; either is accepted.
type InviteResponse struct {
	PDU   json.RawMessage `json:"pdu,omitempty"`
	Event json.RawMessage `json:"event,omitempty"`
}

// MakeMembershipResponse is the answer of make_join/make_leave/make_knock, in the {event, room_version} form that
// Matrix and eigen use; a bare partial LPDU is accepted from peers too.
type MakeMembershipResponse struct {
	Event       json.RawMessage `json:"event"`
	RoomVersion string          `json:"room_version"`
}

// SendJoinResponse is send_join's answer.
type SendJoinResponse struct {
	State     []json.RawMessage `json:"state"`
	AuthChain []json.RawMessage `json:"auth_chain"`
	Event     json.RawMessage   `json:"event"`
}

// SendKnockResponse is send_knock's answer; knock_room_state is Matrix's name for the same list.
type SendKnockResponse struct {
	StrippedState  []json.RawMessage `json:"stripped_state"`
	KnockRoomState []json.RawMessage `json:"knock_room_state,omitempty"`
}

// Error is a federation error with its HTTP status and Matrix errcode.
type Error struct {
	Status  int    `json:"-"`
	ErrCode string `json:"errcode"`
	Message string `json:"error,omitempty"`
	// RetryAfterMS goes with 429 M_LIMIT_EXCEEDED.
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.ErrCode, e.Message)
}

// Errorf makes an *Error.
func Errorf(status int, errcode, format string, args ...any) *Error {
	return &Error{Status: status, ErrCode: errcode, Message: fmt.Sprintf(format, args...)}
}

// Error codes of the draft (§12.2).
const (
	ErrCodeUnknown                 = "M_UNKNOWN"
	ErrCodeForbidden               = "M_FORBIDDEN"
	ErrCodeNotJSON                 = "M_NOT_JSON"
	ErrCodeBadJSON                 = "M_BAD_JSON"
	ErrCodeTooLarge                = "M_TOO_LARGE"
	ErrCodeUnrecognized            = "M_UNRECOGNIZED"
	ErrCodeNotFound                = "M_NOT_FOUND"
	ErrCodeWrongServer             = "M_WRONG_SERVER"
	ErrCodeBadState                = "M_BAD_STATE"
	ErrCodeIncompatibleRoomVersion = "M_INCOMPATIBLE_ROOM_VERSION"
	ErrCodeLimitExceeded           = "M_LIMIT_EXCEEDED"
)
