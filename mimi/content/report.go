package content

import (
	"fmt"
	"strconv"
)

// MessageStatus is a per-message delivery status of the draft-07 status report (since moved
// to draft-mahy-mimi-message-status); values 7 to 255 are unknown statuses.
type MessageStatus uint8

// The base statuses.
const (
	StatusUnread    MessageStatus = 0
	StatusDelivered MessageStatus = 1
	StatusRead      MessageStatus = 2
	StatusExpired   MessageStatus = 3
	StatusDeleted   MessageStatus = 4
	StatusHidden    MessageStatus = 5
	StatusError     MessageStatus = 6
)

var statusNames = [...]string{"unread", "delivered", "read", "expired", "deleted", "hidden", "error"}

func (s MessageStatus) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown(" + strconv.Itoa(int(s)) + ")"
}

// PerMessageStatus is one entry of a StatusReport.
type PerMessageStatus struct {
	MessageID MessageID
	Status    MessageStatus
}

// StatusReport is the draft-07 MessageStatusReport: [* [messageId, status]]. It is carried
// in a MIMI message body of its own media type, not in the mimiContent array.
type StatusReport []PerMessageStatus

// DecodeStatusReport parses an encoded StatusReport.
func DecodeStatusReport(data []byte) (StatusReport, error) {
	if err := checkDeterministic(data); err != nil {
		return nil, fmt.Errorf("decoding MIMI status report: %w", err)
	}
	entries, err := asArray(data, "report")
	if err != nil {
		return nil, fmt.Errorf("decoding MIMI status report: %w", err)
	}
	r := make(StatusReport, len(entries))
	for i, raw := range entries {
		path := fmt.Sprintf("report[%d]", i)
		f, err := asArray(raw, path, 2)
		if err != nil {
			return nil, fmt.Errorf("decoding MIMI status report: %w", err)
		}
		b, err := asBytes(f[0], path+".messageId")
		if err != nil {
			return nil, fmt.Errorf("decoding MIMI status report: %w", err)
		}
		if r[i].MessageID, err = MessageIDFromBytes(b); err != nil {
			return nil, fmt.Errorf("decoding MIMI status report: %w", fieldErr(path+".messageId", err))
		}
		st, err := asUint(f[1], path+".status", 255)
		if err != nil {
			return nil, fmt.Errorf("decoding MIMI status report: %w", err)
		}
		r[i].Status = MessageStatus(st)
	}
	return r, nil
}

// Encode writes the report in deterministic CBOR.
func (r StatusReport) Encode() ([]byte, error) {
	entries := make([]any, len(r))
	for i, e := range r {
		entries[i] = []any{e.MessageID[:], uint64(e.Status)}
	}
	b, err := marshal(entries)
	if err != nil {
		return nil, fmt.Errorf("encoding MIMI status report: %w", err)
	}
	return b, nil
}
