// Package pdu is the Linearized Matrix event model: PDUs and LPDUs, strict parsing, canonical form, redaction,
// content and reference hashes, event IDs, and signatures. It does no I/O.
package pdu

import "encoding/json"

// PDU is an LM event as it travels between servers. An LPDU is the same shape without AuthEvents, PrevEvents and
// Hashes.SHA256. There is no depth and no unsigned: neither exists in LM's event format.
type PDU struct {
	RoomID         string                       `json:"room_id"`
	Type           string                       `json:"type"`
	StateKey       *string                      `json:"state_key,omitempty"`
	Sender         string                       `json:"sender"`
	OriginServerTS int64                        `json:"origin_server_ts"`
	Content        json.RawMessage              `json:"content"`
	HubServer      string                       `json:"hub_server,omitempty"`
	Hashes         Hashes                       `json:"hashes"`
	Signatures     map[string]map[string]string `json:"signatures"`
	AuthEvents     []string                     `json:"auth_events,omitempty"`
	PrevEvents     []string                     `json:"prev_events,omitempty"`
}

// Hashes holds the PDU content hash and, for events that went through a hub, the LPDU content hash.
type Hashes struct {
	SHA256 string    `json:"sha256,omitempty"`
	LPDU   *LPDUHash `json:"lpdu,omitempty"`
}

// LPDUHash is hashes.lpdu.
type LPDUHash struct {
	SHA256 string `json:"sha256"`
}
