package pdu

import (
	"slices"

	"github.com/lmbridge/lmbridge/linearize/canonicaljson"
)

// Redacted returns a copy of p redacted per §8 of the draft: content reduced to the type's allow-list, top-level
// fields outside the LM schema removed. Hashes, signatures, hub_server, auth_events and prev_events stay, so the
// redacted copy keeps its event ID and its signatures still verify. The draft's list is narrower than room version
// 11 (see lmRedaction); both LM room versions share it.
func (p *PDU) Redacted() (*PDU, error) {
	content, err := p.appendRedactedContent(nil)
	if err != nil {
		return nil, err
	}
	r := p.Clone()
	r.Extra = nil
	r.Content = content
	r.canonicalContent = content
	return r, nil
}

// LPDUView returns the LPDU a PDU was completed from: no auth_events or prev_events, and hashes reduced to lpdu. The
// sender's server signed this view (§5.1); on an LPDU it is a copy of the LPDU itself.
func (p *PDU) LPDUView() *PDU {
	v := p.Clone()
	v.AuthEvents = nil
	v.PrevEvents = nil
	v.Hashes.SHA256 = ""
	return v
}

// appendRedactedContent writes the content that survives redaction. Types with nothing to keep (every message) cost
// nothing: they are {} without looking at the content.
func (p *PDU) appendRedactedContent(dst []byte) ([]byte, error) {
	keep, ok := lmRedaction[p.Type]
	if !ok {
		return append(dst, '{', '}'), nil
	}
	if keep == nil {
		return p.appendContent(dst)
	}
	if len(p.Content) == 0 {
		return append(dst, '{', '}'), nil
	}
	v, err := parseContent(p.Content)
	if err != nil {
		return dst, err
	}
	dst = append(dst, '{')
	first := true
	for i := range v.Members {
		m := &v.Members[i]
		if !slices.Contains(keep, m.Key) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = canonicaljson.AppendString(dst, m.Key)
		dst = append(dst, ':')
		dst = m.Value.AppendTo(dst)
	}
	return append(dst, '}'), nil
}
