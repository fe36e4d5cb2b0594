package pdu

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// Unpadded base64 (§10): standard alphabet for hashes and signatures, URL-safe for event IDs.
var (
	b64    = base64.RawStdEncoding
	b64URL = base64.RawURLEncoding
)

func validUTF8(s string) bool { return utf8.ValidString(s) }

// scratchPool holds buffers for the canonical forms that are only hashed or signed and then dropped.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

func getScratch() *[]byte { return scratchPool.Get().(*[]byte) }

func putScratch(b *[]byte) {
	if cap(*b) > 4*MaxEventBytes {
		return
	}
	*b = (*b)[:0]
	scratchPool.Put(b)
}

// hashView returns the SHA-256 of one canonical view of p.
func (p *PDU) hashView(mode encodeMode) ([32]byte, error) {
	buf := getScratch()
	defer putScratch(buf)
	input, err := p.appendCanonical((*buf)[:0], mode)
	*buf = input
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(input), nil
}

// ReferenceHash is the SHA-256 of R(event) without signatures (§9.2).
func (p *PDU) ReferenceHash() ([]byte, error) {
	sum, err := p.hashView(modeReference)
	if err != nil {
		return nil, err
	}
	return sum[:], nil
}

// EventID is "$" + URL-safe unpadded base64 of the reference hash. On an LPDU it is the LPDU ID, the key a hub uses
// for it in failed_pdus (§12.5.1).
func (p *PDU) EventID() (string, error) {
	sum, err := p.ReferenceHash()
	if err != nil {
		return "", err
	}
	return eventIDFromHash(sum), nil
}

// LPDUID is the ID of the LPDU a PDU was completed from (its EventID on an LPDU).
func (p *PDU) LPDUID() (string, error) {
	sum, err := p.hashView(modeLPDUReference)
	if err != nil {
		return "", err
	}
	return eventIDFromHash(sum[:]), nil
}

func eventIDFromHash(sum []byte) string {
	buf := make([]byte, 1+b64URL.EncodedLen(len(sum)))
	buf[0] = '$'
	b64URL.Encode(buf[1:], sum)
	return string(buf)
}

// ComputeLPDUHash computes hashes.lpdu.sha256: the LPDU view without signatures and hashes (§9.1 step 1.1).
func (p *PDU) ComputeLPDUHash() (string, error) {
	sum, err := p.hashView(modeLPDUHash)
	if err != nil {
		return "", err
	}
	return b64.EncodeToString(sum[:]), nil
}

// FillLPDUHash sets hashes.lpdu, as the participant does before signing an LPDU. hub_server must already be set: it
// is covered by the hash.
func (p *PDU) FillLPDUHash() error {
	h, err := p.ComputeLPDUHash()
	if err != nil {
		return err
	}
	p.Hashes.LPDU = &LPDUHash{SHA256: h}
	return nil
}

// ComputeContentHash computes hashes.sha256. For an event with hashes.lpdu it is §9.1 step 1.2 (the event without
// signatures, with hashes reduced to {lpdu}); for a hub-local event without an LPDU it is Matrix's content hash (the
// event without signatures and hashes).
func (p *PDU) ComputeContentHash() (string, error) {
	mode := modeMatrixHash
	if p.Hashes.LPDU != nil {
		mode = modePDUHash
	}
	sum, err := p.hashView(mode)
	if err != nil {
		return "", err
	}
	return b64.EncodeToString(sum[:]), nil
}

// FillContentHash sets hashes.sha256, as the hub does when it completes an LPDU or makes a hub-local event.
// auth_events and prev_events must already be set.
func (p *PDU) FillContentHash() error {
	h, err := p.ComputeContentHash()
	if err != nil {
		return err
	}
	p.Hashes.SHA256 = h
	return nil
}

// CheckContentHashes verifies the content hashes present on p: hashes.lpdu on an LPDU; hashes.sha256 and, for an
// event that went through a hub, hashes.lpdu on a PDU. A mismatch or a missing hash is ErrContentHashMismatch.
func (p *PDU) CheckContentHashes() error {
	needLPDU := p.HubServer != "" || p.Hashes.LPDU != nil
	if needLPDU {
		if p.Hashes.LPDU == nil {
			return fmt.Errorf("%w: hashes.lpdu is missing", ErrContentHashMismatch)
		}
		want, err := p.ComputeLPDUHash()
		if err != nil {
			return err
		}
		if !sameBase64(p.Hashes.LPDU.SHA256, want) {
			return fmt.Errorf("%w: hashes.lpdu.sha256 is %s, computed %s", ErrContentHashMismatch,
				p.Hashes.LPDU.SHA256, want)
		}
	}
	if p.IsLPDU() {
		return nil
	}
	if p.Hashes.SHA256 == "" {
		return fmt.Errorf("%w: hashes.sha256 is missing", ErrContentHashMismatch)
	}
	want, err := p.ComputeContentHash()
	if err != nil {
		return err
	}
	if !sameBase64(p.Hashes.SHA256, want) {
		return fmt.Errorf("%w: hashes.sha256 is %s, computed %s", ErrContentHashMismatch, p.Hashes.SHA256, want)
	}
	return nil
}

// sameBase64 compares unpadded base64 with base64 that may carry padding, which §10 says to accept.
func sameBase64(got, want string) bool {
	return strings.TrimRight(got, "=") == want
}
