package linearize

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// parseEvent parses a received LPDU or PDU strictly.
func parseEvent(raw json.RawMessage) (*pdu.PDU, error) {
	return pdu.Parse(raw)
}

// parseStored parses an event from our own database.
func parseStored(raw json.RawMessage) (*pdu.PDU, error) {
	return pdu.Parse(raw)
}

// eventID is the reference-hash ID: the event ID of a PDU, the LPDU ID of an LPDU.
func eventID(p *pdu.PDU) (string, error) {
	id, err := p.EventID()
	if err != nil {
		return "", fmt.Errorf("failed to compute event ID: %w", err)
	}
	return id, nil
}

// lpduIDOf is the ID of the LPDU a hub completed into p.
func lpduIDOf(p *pdu.PDU) (string, error) {
	return p.LPDUID()
}

// bestEffortID names an object we could not parse in failed_pdus: the hash of its bytes, since it has no reference
// hash. The sender cannot match it, but the log can.
func bestEffortID(raw json.RawMessage) string {
	sum := sha256.Sum256(raw)
	return "$" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// verifyLPDU checks an LPDU at the hub: the sender's signature and hashes.lpdu. A hash mismatch rejects it (spec §9
// item 12: there is nothing appended yet to redact).
func verifyLPDU(ctx context.Context, p *pdu.PDU, keys pdu.KeyLookup) error {
	if err := p.VerifySignatures(ctx, keys); err != nil {
		return err
	}
	return p.CheckContentHashes()
}

// verifyPDU checks a PDU from the hub (§5.1): both signatures (the hub's only when ownLPDU says the sender's is one
// we made); a content-hash mismatch leaves the redacted copy in place of the original.
func verifyPDU(ctx context.Context, p **pdu.PDU, keys pdu.KeyLookup, ownLPDU bool) (redacted bool, err error) {
	rcv, err := pdu.VerifyReceivedWith(ctx, keys, *p, pdu.VerifyOptions{SenderSignatureKnown: ownLPDU})
	if err != nil {
		return false, err
	}
	*p = rcv.Event
	return rcv.Redacted, nil
}
