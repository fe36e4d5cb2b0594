package pdu

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/lmbridge/lmbridge/linearize/canonicaljson"
)

// encodeMode selects which view of an event appendCanonical writes. The views are the inputs of the draft's
// algorithms (§6, §8, §9), written straight from the struct so that no step re-parses or re-sorts JSON.
type encodeMode uint8

const (
	omitSignatures encodeMode = 1 << iota
	// hashesLPDUOnly reduces hashes to {"lpdu": …} (§9.1 step 1.2, and the LPDU view).
	hashesLPDUOnly
	// omitHashes removes hashes altogether (the LPDU content hash, the Matrix content hash).
	omitHashes
	// omitAuthPrev removes auth_events and prev_events (the LPDU view).
	omitAuthPrev
	// redact applies §8: content reduced to the type's allow-list, unknown top-level fields removed.
	redact
)

const (
	// modeReference is the reference hash input and the signing input: R(event) minus signatures.
	modeReference = omitSignatures | redact
	// modeLPDUReference is the same over the LPDU view: the participant's signing input and the LPDU ID input.
	modeLPDUReference = omitSignatures | redact | omitAuthPrev | hashesLPDUOnly
	// modeLPDUHash is the LPDU content hash input.
	modeLPDUHash = omitSignatures | omitHashes | omitAuthPrev
	// modePDUHash is the PDU content hash input for a completed LPDU (hashes reduced to {lpdu}).
	modePDUHash = omitSignatures | hashesLPDUOnly
	// modeMatrixHash is the Matrix content hash input for a hub-local event.
	modeMatrixHash = omitSignatures | omitHashes
)

// Canonical returns the event as canonical JSON: what goes on the wire. It never includes unsigned or event_id. An
// LPDU is written without auth_events and prev_events.
func (p *PDU) Canonical() ([]byte, error) {
	return p.appendCanonical(make([]byte, 0, 1024), 0)
}

// AppendCanonical appends Canonical's output to dst.
func (p *PDU) AppendCanonical(dst []byte) ([]byte, error) {
	return p.appendCanonical(dst, 0)
}

// CheckSize returns an error wrapping ErrEventTooLarge if the event's canonical JSON, signatures included, is more
// than MaxEventBytes (§3.5). Parse enforces it on the way in; SignLPDU and Complete on the way out, since translated
// content and added signatures can push an event over the limit.
func (p *PDU) CheckSize() error {
	buf := getScratch()
	defer putScratch(buf)
	out, err := p.appendCanonical((*buf)[:0], 0)
	*buf = out
	if err != nil {
		return err
	}
	if len(out) > MaxEventBytes {
		return &FormatError{Reason: fmt.Sprintf("is %d bytes of canonical JSON, more than 65536", len(out)), Err: ErrEventTooLarge}
	}
	return nil
}

// MarshalJSON writes the canonical form, so that a PDU inside a larger response (send_join, /send) is encoded
// correctly by encoding/json.
func (p PDU) MarshalJSON() ([]byte, error) {
	return p.appendCanonical(make([]byte, 0, 1024), 0)
}

// UnmarshalJSON parses strictly, as Parse does.
func (p *PDU) UnmarshalJSON(data []byte) error {
	parsed, err := Parse(data)
	if err != nil {
		return err
	}
	*p = *parsed
	return nil
}

// Known top-level keys in code point order; appendCanonical walks them in this order and merges Extra between them.
const (
	keyAuthEvents     = "auth_events"
	keyContent        = "content"
	keyHashes         = "hashes"
	keyHubServer      = "hub_server"
	keyOriginServerTS = "origin_server_ts"
	keyPrevEvents     = "prev_events"
	keyRoomID         = "room_id"
	keySender         = "sender"
	keySignatures     = "signatures"
	keyStateKey       = "state_key"
	keyType           = "type"
)

var knownKeys = [...]string{
	keyAuthEvents, keyContent, keyHashes, keyHubServer, keyOriginServerTS, keyPrevEvents, keyRoomID, keySender,
	keySignatures, keyStateKey, keyType,
}

type objectWriter struct {
	buf   []byte
	first bool
}

func (w *objectWriter) key(k string) {
	if w.first {
		w.first = false
	} else {
		w.buf = append(w.buf, ',')
	}
	w.buf = canonicaljson.AppendString(w.buf, k)
	w.buf = append(w.buf, ':')
}

func (p *PDU) appendCanonical(dst []byte, mode encodeMode) ([]byte, error) {
	w := objectWriter{buf: append(dst, '{'), first: true}
	var extraKeys []string
	if len(p.Extra) > 0 && mode&redact == 0 {
		extraKeys = make([]string, 0, len(p.Extra))
		for k := range p.Extra {
			extraKeys = append(extraKeys, k)
		}
		slices.Sort(extraKeys)
	}
	nextExtra := 0
	flushExtra := func(before string) error {
		for nextExtra < len(extraKeys) && (before == "" || extraKeys[nextExtra] < before) {
			k := extraKeys[nextExtra]
			nextExtra++
			w.key(k)
			var err error
			if w.buf, err = canonicaljson.AppendCanonical(w.buf, p.Extra[k]); err != nil {
				return &FormatError{Field: k, Reason: "is not canonical JSON", Err: ErrInvalidEvent, Cause: err}
			}
		}
		return nil
	}
	for _, k := range knownKeys {
		if err := flushExtra(k); err != nil {
			return dst, err
		}
		var err error
		switch k {
		case keyAuthEvents:
			if p.AuthEvents != nil && mode&omitAuthPrev == 0 {
				w.key(k)
				w.buf, err = appendStrings(w.buf, p.AuthEvents, k)
			}
		case keyContent:
			w.key(k)
			if mode&redact != 0 {
				w.buf, err = p.appendRedactedContent(w.buf)
			} else {
				w.buf, err = p.appendContent(w.buf)
			}
		case keyHashes:
			if mode&omitHashes == 0 {
				w.buf, err = p.appendHashes(&w, mode&hashesLPDUOnly != 0)
			}
		case keyHubServer:
			if p.HubServer != "" {
				w.key(k)
				w.buf, err = appendString(w.buf, p.HubServer, k)
			}
		case keyOriginServerTS:
			w.key(k)
			w.buf = strconv.AppendInt(w.buf, p.OriginServerTS, 10)
		case keyPrevEvents:
			if p.PrevEvents != nil && mode&omitAuthPrev == 0 {
				w.key(k)
				w.buf, err = appendStrings(w.buf, p.PrevEvents, k)
			}
		case keyRoomID:
			w.key(k)
			w.buf, err = appendString(w.buf, p.RoomID, k)
		case keySender:
			w.key(k)
			w.buf, err = appendString(w.buf, p.Sender, k)
		case keySignatures:
			if mode&omitSignatures == 0 {
				w.key(k)
				w.buf, err = appendSignatures(w.buf, p.Signatures)
			}
		case keyStateKey:
			if p.StateKey != nil {
				w.key(k)
				w.buf, err = appendString(w.buf, *p.StateKey, k)
			}
		case keyType:
			w.key(k)
			w.buf, err = appendString(w.buf, p.Type, k)
		}
		if err != nil {
			return dst, err
		}
	}
	if err := flushExtra(""); err != nil {
		return dst, err
	}
	return append(w.buf, '}'), nil
}

func (p *PDU) appendHashes(w *objectWriter, lpduOnly bool) ([]byte, error) {
	w.key(keyHashes)
	buf := append(w.buf, '{')
	if p.Hashes.LPDU != nil {
		buf = append(buf, `"lpdu":{"sha256":`...)
		var err error
		if buf, err = appendString(buf, p.Hashes.LPDU.SHA256, "hashes.lpdu.sha256"); err != nil {
			return buf, err
		}
		buf = append(buf, '}')
	}
	if !lpduOnly && p.Hashes.SHA256 != "" {
		if p.Hashes.LPDU != nil {
			buf = append(buf, ',')
		}
		buf = append(buf, `"sha256":`...)
		var err error
		if buf, err = appendString(buf, p.Hashes.SHA256, "hashes.sha256"); err != nil {
			return buf, err
		}
	}
	return append(buf, '}'), nil
}

func appendString(dst []byte, s, field string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			if !validUTF8(s[i:]) {
				return dst, formatErr(field, "is not valid UTF-8")
			}
			break
		}
	}
	return canonicaljson.AppendString(dst, s), nil
}

func appendStrings(dst []byte, list []string, field string) ([]byte, error) {
	dst = append(dst, '[')
	for i, s := range list {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendString(dst, s, field); err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}

func appendSignatures(dst []byte, sigs map[string]map[string]string) ([]byte, error) {
	dst = append(dst, '{')
	servers := sortedKeys(sigs)
	for i, server := range servers {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendString(dst, server, keySignatures); err != nil {
			return dst, err
		}
		dst = append(dst, ':', '{')
		keys := sortedKeys(sigs[server])
		for j, keyID := range keys {
			if j > 0 {
				dst = append(dst, ',')
			}
			if dst, err = appendString(dst, keyID, keySignatures); err != nil {
				return dst, err
			}
			dst = append(dst, ':')
			if dst, err = appendString(dst, sigs[server][keyID], keySignatures); err != nil {
				return dst, err
			}
		}
		dst = append(dst, '}')
	}
	return append(dst, '}'), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	if len(keys) > 1 {
		slices.Sort(keys)
	}
	return keys
}

// appendContent writes content. After Parse it is already canonical and is copied as it is; content that was set
// or replaced by hand is canonicalised. An empty Content is written as {}.
func (p *PDU) appendContent(dst []byte) ([]byte, error) {
	if len(p.Content) == 0 {
		return append(dst, '{', '}'), nil
	}
	if p.contentIsCanonical() {
		return append(dst, p.Content...), nil
	}
	v, err := parseContent(p.Content)
	if err != nil {
		return dst, err
	}
	return v.AppendTo(dst), nil
}

// contentIsCanonical reports whether Content is still the exact slice Parse (or SetContent) produced, by identity:
// a caller that assigns a new Content gets it canonicalised again.
func (p *PDU) contentIsCanonical() bool {
	return len(p.canonicalContent) > 0 && len(p.Content) == len(p.canonicalContent) &&
		&p.Content[0] == &p.canonicalContent[0]
}

func parseContent(content json.RawMessage) (canonicaljson.Value, error) {
	v, err := canonicaljson.Parse(content)
	if err != nil {
		return v, &FormatError{Field: keyContent, Reason: "is not canonical JSON", Err: ErrInvalidEvent, Cause: err}
	}
	if v.Kind != canonicaljson.Object {
		return v, formatErr(keyContent, "is not an object")
	}
	return v, nil
}

// SetContent sets Content to the canonical form of content (any value canonicaljson.Marshal accepts, or raw JSON
// as json.RawMessage), so that later encodings copy it without re-parsing.
func (p *PDU) SetContent(content any) error {
	raw, err := canonicaljson.Marshal(content)
	if err != nil {
		return &FormatError{Field: keyContent, Reason: "cannot be encoded", Err: ErrInvalidEvent, Cause: err}
	}
	if len(raw) == 0 || raw[0] != '{' {
		return formatErr(keyContent, "is not an object")
	}
	p.Content = raw
	p.canonicalContent = raw
	return nil
}
