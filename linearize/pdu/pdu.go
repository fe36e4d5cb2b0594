// Package pdu is the Linearized Matrix event model: PDUs and LPDUs, strict parsing, canonical form, redaction,
// content and reference hashes, event IDs, and signatures. It does no I/O: verification takes a KeyLookup.
package pdu

import (
	"encoding/json"
	"strings"
)

// PDU is an LM event as it travels between servers. An LPDU is the same shape without AuthEvents, PrevEvents and
// Hashes.SHA256. There is no depth and no unsigned: neither exists in LM's event format (unsigned and event_id are
// dropped by Parse and never written).
//
// AuthEvents and PrevEvents distinguish absent (nil, an LPDU) from empty (a non-nil empty slice, written as [] as
// eigen does for m.room.create). Content always holds canonical JSON after Parse; code that builds a PDU by hand may
// put any JSON object there, and every encoding canonicalises it.
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
	// Extra holds top-level fields this package does not know (for example depth on a DAG-style PDU), as canonical
	// JSON. They are covered by the content hash and removed by redaction, as in Matrix.
	Extra map[string]json.RawMessage `json:"-"`

	// canonicalContent is the Content slice that Parse or SetContent produced; see contentIsCanonical.
	canonicalContent []byte
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

// IsLPDU reports whether p is an LPDU: a participant's event that a hub has not completed yet. It has hub_server and
// hashes.lpdu, and neither auth_events, prev_events nor hashes.sha256.
func (p *PDU) IsLPDU() bool {
	return p.AuthEvents == nil && p.PrevEvents == nil && p.Hashes.SHA256 == "" && p.HubServer != "" &&
		p.Hashes.LPDU != nil
}

// IsState reports whether p is a state event (it has a state_key, possibly empty).
func (p *PDU) IsState() bool { return p.StateKey != nil }

// StateKeyValue returns the state key, or "" for a non-state event.
func (p *PDU) StateKeyValue() string {
	if p.StateKey == nil {
		return ""
	}
	return *p.StateKey
}

// SenderServer is the server name of the sender: the part of the user ID after the first colon.
func (p *PDU) SenderServer() string { return ServerName(p.Sender) }

// ServerName returns the server part of a Matrix identifier (@user:server, !room:server): everything after the first
// colon, which keeps a port. It returns "" if there is no colon.
func ServerName(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		return id[i+1:]
	}
	return ""
}

// StringPtr returns a pointer to s, for PDU.StateKey.
func StringPtr(s string) *string { return &s }

// Clone returns a deep copy of p, so that a caller can change the copy (add a signature, complete it) while p is
// shared.
func (p *PDU) Clone() *PDU {
	c := *p
	if p.StateKey != nil {
		c.StateKey = StringPtr(*p.StateKey)
	}
	if p.Hashes.LPDU != nil {
		h := *p.Hashes.LPDU
		c.Hashes.LPDU = &h
	}
	if p.Signatures != nil {
		c.Signatures = make(map[string]map[string]string, len(p.Signatures))
		for server, sigs := range p.Signatures {
			m := make(map[string]string, len(sigs))
			for k, v := range sigs {
				m[k] = v
			}
			c.Signatures[server] = m
		}
	}
	if p.AuthEvents != nil {
		c.AuthEvents = append(make([]string, 0, len(p.AuthEvents)), p.AuthEvents...)
	}
	if p.PrevEvents != nil {
		c.PrevEvents = append(make([]string, 0, len(p.PrevEvents)), p.PrevEvents...)
	}
	if p.Extra != nil {
		c.Extra = make(map[string]json.RawMessage, len(p.Extra))
		for k, v := range p.Extra {
			c.Extra[k] = v
		}
	}
	return &c
}
