package pdu

import (
	"encoding/json"
	"strings"

	"github.com/lmbridge/lmbridge/linearize/canonicaljson"
)

// Parse decodes an LPDU or PDU strictly (§3.5, §3.5.1). Required: room_id, type, sender, origin_server_ts (an
// integer), content (an object), hashes and signatures; auth_events and prev_events are required together (a PDU) or
// absent together (an LPDU, which must then carry hub_server and hashes.lpdu and no hashes.sha256). An event with
// hub_server must have hashes.lpdu and one without must not. type and state_key are at most 255 bytes, the whole
// event at most 65,536 bytes of canonical JSON; numbers are integers within ±(2^53−1) and strings valid UTF-8.
// unsigned and event_id are tolerated and dropped; other unknown top-level fields are kept in Extra.
//
// Errors are *FormatError values wrapping ErrInvalidEvent or ErrEventTooLarge.
func Parse(data []byte) (*PDU, error) {
	return parse(data, false)
}

// ParseTemplate decodes a partial event such as a make_join/make_leave/make_knock answer: the same field checks as
// Parse, but hashes, signatures, auth_events and prev_events may be missing. Use it only for templates, never for an
// event that is to be accepted.
func ParseTemplate(data []byte) (*PDU, error) {
	return parse(data, true)
}

func parse(data []byte, template bool) (*PDU, error) {
	if len(data) > 4*MaxEventBytes {
		// Whitespace could make a legal event longer than its canonical form, but not four times longer in
		// practice; refuse to parse megabytes only to learn they are too large.
		return nil, &FormatError{Reason: "is larger than 65536 bytes", Err: ErrEventTooLarge}
	}
	root, err := canonicaljson.Parse(data)
	if err != nil {
		return nil, &FormatError{Reason: "is not valid canonical JSON", Err: ErrInvalidEvent, Cause: err}
	}
	if root.Kind != canonicaljson.Object {
		return nil, formatErr("", "is not a JSON object")
	}
	p := &PDU{}
	size := 2 // {}
	seen := 0
	var haveHashes, haveSigs, haveAuth, havePrev, haveContent, haveTS bool
	for i := range root.Members {
		m := &root.Members[i]
		v := &m.Value
		switch m.Key {
		case "unsigned", "event_id":
			continue
		case keyRoomID:
			if p.RoomID, err = identifier(v, m.Key, '!'); err != nil {
				return nil, err
			}
		case keyType:
			if p.Type, err = boundedString(v, m.Key); err != nil {
				return nil, err
			}
			if p.Type == "" {
				return nil, formatErr(m.Key, "is empty")
			}
		case keyStateKey:
			sk, err := boundedString(v, m.Key)
			if err != nil {
				return nil, err
			}
			p.StateKey = &sk
		case keySender:
			if p.Sender, err = identifier(v, m.Key, '@'); err != nil {
				return nil, err
			}
		case keyOriginServerTS:
			if v.Kind != canonicaljson.Integer {
				return nil, formatErr(m.Key, "is not an integer")
			}
			p.OriginServerTS, haveTS = v.Int, true
		case keyContent:
			if v.Kind != canonicaljson.Object {
				return nil, formatErr(m.Key, "is not an object")
			}
			p.Content = v.Bytes()
			p.canonicalContent = p.Content
			haveContent = true
		case keyHubServer:
			if v.Kind != canonicaljson.String || !validServerName(v.Str) {
				return nil, formatErr(m.Key, "is not a server name")
			}
			p.HubServer = v.Str
		case keyHashes:
			if err := parseHashes(v, &p.Hashes); err != nil {
				return nil, err
			}
			haveHashes = true
		case keySignatures:
			if p.Signatures, err = parseSignatures(v); err != nil {
				return nil, err
			}
			haveSigs = true
		case keyAuthEvents:
			if p.AuthEvents, err = eventIDList(v, m.Key); err != nil {
				return nil, err
			}
			haveAuth = true
		case keyPrevEvents:
			if p.PrevEvents, err = eventIDList(v, m.Key); err != nil {
				return nil, err
			}
			havePrev = true
		default:
			if p.Extra == nil {
				p.Extra = make(map[string]json.RawMessage, 2)
			}
			p.Extra[m.Key] = v.Bytes()
		}
		if seen > 0 {
			size++ // comma
		}
		seen++
		size += canonicaljson.StringLen(m.Key) + 1 + v.EncodedLen()
	}
	if size > MaxEventBytes {
		return nil, &FormatError{Reason: "is larger than 65536 bytes of canonical JSON", Err: ErrEventTooLarge}
	}
	switch {
	case p.RoomID == "":
		return nil, formatErr(keyRoomID, "is missing")
	case p.Type == "":
		return nil, formatErr(keyType, "is missing")
	case p.Sender == "":
		return nil, formatErr(keySender, "is missing")
	case !haveTS:
		return nil, formatErr(keyOriginServerTS, "is missing")
	case !haveContent:
		return nil, formatErr(keyContent, "is missing")
	}
	if template {
		return p, nil
	}
	switch {
	case !haveHashes:
		return nil, formatErr(keyHashes, "is missing")
	case !haveSigs:
		return nil, formatErr(keySignatures, "is missing")
	case haveAuth != havePrev:
		if !haveAuth {
			return nil, formatErr(keyAuthEvents, "is missing (prev_events is present)")
		}
		return nil, formatErr(keyPrevEvents, "is missing (auth_events is present)")
	}
	if p.HubServer != "" && p.Hashes.LPDU == nil {
		return nil, formatErr("hashes.lpdu", "is missing on an event with hub_server")
	}
	if p.HubServer == "" && p.Hashes.LPDU != nil {
		return nil, formatErr("hashes.lpdu", "is present on an event without hub_server")
	}
	if !haveAuth {
		// An LPDU.
		if p.HubServer == "" {
			return nil, formatErr(keyAuthEvents, "is missing (and hub_server too, so this is no LPDU either)")
		}
		if p.Hashes.SHA256 != "" {
			return nil, formatErr("hashes.sha256", "is present on an LPDU")
		}
	} else if p.Hashes.SHA256 == "" {
		return nil, formatErr("hashes.sha256", "is missing")
	}
	return p, nil
}

func boundedString(v *canonicaljson.Value, field string) (string, error) {
	if v.Kind != canonicaljson.String {
		return "", formatErr(field, "is not a string")
	}
	if len(v.Str) > maxIdentifierBytes {
		return "", formatErr(field, "is longer than 255 bytes")
	}
	return v.Str, nil
}

// identifier checks a sigil-prefixed ID with a server part (room_id, sender).
func identifier(v *canonicaljson.Value, field string, sigil byte) (string, error) {
	s, err := boundedString(v, field)
	if err != nil {
		return "", err
	}
	if len(s) < 3 || s[0] != sigil {
		return "", formatErr(field, "does not start with "+string(sigil))
	}
	i := strings.IndexByte(s, ':')
	if i < 1 || !validServerName(s[i+1:]) {
		return "", formatErr(field, "has no valid server name")
	}
	return s, nil
}

// validServerName is a loose check of §3.1's grammar: non-empty, at most 255 bytes, printable ASCII without spaces
// or slashes. IP literals, which the draft forbids, are accepted because eigen's own test setup uses 127.0.0.1.
func validServerName(s string) bool {
	if s == "" || len(s) > maxIdentifierBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '/' || c == '\\' || c == '"' {
			return false
		}
	}
	return true
}

func eventIDList(v *canonicaljson.Value, field string) ([]string, error) {
	if v.Kind != canonicaljson.Array {
		return nil, formatErr(field, "is not an array")
	}
	out := make([]string, len(v.Items))
	for i := range v.Items {
		it := &v.Items[i]
		if it.Kind != canonicaljson.String || len(it.Str) < 2 || it.Str[0] != '$' || len(it.Str) > maxIdentifierBytes {
			return nil, formatErr(field, "holds something that is not an event ID")
		}
		out[i] = it.Str
	}
	return out, nil
}

func parseHashes(v *canonicaljson.Value, h *Hashes) error {
	if v.Kind != canonicaljson.Object {
		return formatErr(keyHashes, "is not an object")
	}
	for i := range v.Members {
		m := &v.Members[i]
		switch m.Key {
		case "sha256":
			if m.Value.Kind != canonicaljson.String || m.Value.Str == "" {
				return formatErr("hashes.sha256", "is not a base64 string")
			}
			h.SHA256 = m.Value.Str
		case "lpdu":
			sha, ok := m.Value.Get("sha256")
			if m.Value.Kind != canonicaljson.Object || len(m.Value.Members) != 1 || !ok ||
				sha.Kind != canonicaljson.String || sha.Str == "" {
				return formatErr("hashes.lpdu", `is not {"sha256": "<base64>"}`)
			}
			h.LPDU = &LPDUHash{SHA256: sha.Str}
		default:
			return formatErr(keyHashes, "holds an unknown algorithm")
		}
	}
	return nil
}

func parseSignatures(v *canonicaljson.Value) (map[string]map[string]string, error) {
	if v.Kind != canonicaljson.Object {
		return nil, formatErr(keySignatures, "is not an object")
	}
	out := make(map[string]map[string]string, len(v.Members))
	for i := range v.Members {
		server := &v.Members[i]
		if server.Value.Kind != canonicaljson.Object {
			return nil, formatErr(keySignatures, "holds a server entry that is not an object")
		}
		sigs := make(map[string]string, len(server.Value.Members))
		for j := range server.Value.Members {
			sig := &server.Value.Members[j]
			if sig.Value.Kind != canonicaljson.String {
				return nil, formatErr(keySignatures, "holds a signature that is not a string")
			}
			sigs[sig.Key] = sig.Value.Str
		}
		out[server.Key] = sigs
	}
	return out, nil
}
