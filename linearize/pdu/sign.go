package pdu

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"

	"github.com/lmbridge/lmbridge/linearize/sigverify"
)

// SignLPDU adds the participant's signature: ed25519 over R(LPDU) without signatures (§6.1), stored under
// signatures[serverName][keyID]. Fill hashes.lpdu first (FillLPDUHash): the signature covers it.
func (p *PDU) SignLPDU(serverName, keyID string, key ed25519.PrivateKey) error {
	if !p.IsLPDU() {
		return fmt.Errorf("failed to sign LPDU: %w", ErrNotLPDU)
	}
	buf := getScratch()
	defer putScratch(buf)
	input, err := p.appendCanonical((*buf)[:0], modeLPDUReference)
	*buf = input
	if err != nil {
		return fmt.Errorf("failed to encode LPDU for signing: %w", err)
	}
	p.addSignature(serverName, keyID, ed25519.Sign(key, input))
	if err := p.CheckSize(); err != nil {
		delete(p.Signatures[serverName], keyID)
		return fmt.Errorf("failed to sign LPDU: %w", err)
	}
	return nil
}

// SignPDU adds a signature over R(PDU) without signatures: the hub's on a completed LPDU, the only one on a hub-local
// event, or an invitee's countersignature. Fill hashes.sha256 first (FillContentHash).
func (p *PDU) SignPDU(serverName, keyID string, key ed25519.PrivateKey) error {
	buf := getScratch()
	defer putScratch(buf)
	input, err := p.appendCanonical((*buf)[:0], modeReference)
	*buf = input
	if err != nil {
		return fmt.Errorf("failed to encode PDU for signing: %w", err)
	}
	p.addSignature(serverName, keyID, ed25519.Sign(key, input))
	return nil
}

func (p *PDU) addSignature(serverName, keyID string, sig []byte) {
	if p.Signatures == nil {
		p.Signatures = make(map[string]map[string]string, 2)
	}
	m := p.Signatures[serverName]
	if m == nil {
		m = make(map[string]string, 1)
		p.Signatures[serverName] = m
	}
	m[keyID] = b64.EncodeToString(sig)
}

// Complete turns an LPDU into a PDU as its hub (§5.2.1, §9.1 step 1.2, §6): it sets auth_events, prev_events =
// [prevEventID] (none when prevEventID is empty, which only m.room.create may be), the content hash and the hub's
// signature, and returns the new event ID. An event that ends up larger than MaxEventBytes is an error wrapping
// ErrEventTooLarge: reject it rather than append it. It also completes a hub-local event (no hub_server, no hashes.lpdu) made
// by the hub itself, which then carries the hub's signature only. The caller has verified the LPDU and run the auth
// rules already.
func (p *PDU) Complete(authEvents []string, prevEventID, hubServer, keyID string, key ed25519.PrivateKey) (string, error) {
	switch {
	case p.HubServer == "" && p.Hashes.LPDU == nil:
		// A hub-local event.
	case p.HubServer != hubServer:
		return "", fmt.Errorf("failed to complete event: %w: hub_server is %q, not %q", ErrWrongHub, p.HubServer, hubServer)
	case p.Hashes.LPDU == nil:
		return "", fmt.Errorf("failed to complete event: %w", ErrNotLPDU)
	}
	p.AuthEvents = append(make([]string, 0, len(authEvents)), authEvents...)
	if prevEventID == "" {
		p.PrevEvents = []string{}
	} else {
		p.PrevEvents = []string{prevEventID}
	}
	if err := p.FillContentHash(); err != nil {
		return "", fmt.Errorf("failed to compute content hash: %w", err)
	}
	// The hub's signing input is also the reference hash input: encode once, sign and hash the same bytes.
	buf := getScratch()
	defer putScratch(buf)
	input, err := p.appendCanonical((*buf)[:0], modeReference)
	*buf = input
	if err != nil {
		return "", fmt.Errorf("failed to encode PDU for signing: %w", err)
	}
	p.addSignature(hubServer, keyID, ed25519.Sign(key, input))
	sum := sha256.Sum256(input)
	if err := p.CheckSize(); err != nil {
		return "", fmt.Errorf("failed to complete event: %w", err)
	}
	return eventIDFromHash(sum[:]), nil
}

// VerifySignatures checks the signatures that count (§5.1, auth rules 1 and 2): the sender's server over the LPDU view
// when hub_server is set (over the event itself otherwise), and hub_server over the PDU. Signatures of any other
// server, such as an invitee's, are ignored. Every ed25519 key listed for a counted server must verify, and each
// counted server must have at least one. A failure wraps ErrBadSignature: drop the event.
func (p *PDU) VerifySignatures(ctx context.Context, keys KeyLookup) error {
	return p.verifySignatures(ctx, keys, false)
}

// VerifyOptions changes what VerifyReceivedWith checks.
type VerifyOptions struct {
	// SenderSignatureKnown says the caller has established that the sender's signature over the LPDU view is one it
	// made itself: the LPDU ID (the hash of that view) and the signature are equal to those of an LPDU it signed and
	// sent. Ed25519 signing is deterministic, so verifying it again would repeat a known result; only the hub's
	// signature is checked. It has no effect on an event without hub_server.
	SenderSignatureKnown bool
}

func (p *PDU) verifySignatures(ctx context.Context, keys KeyLookup, senderKnown bool) error {
	sender := p.SenderServer()
	if sender == "" {
		return fmt.Errorf("%w: sender %q has no server name", ErrBadSignature, p.Sender)
	}
	// Up to two servers' signatures over two views, checked together so that they share one inversion.
	var checks [2]serverInput
	n := 0
	view := func(mode encodeMode) ([]byte, error) {
		scratch := getScratch()
		input, err := p.appendCanonical((*scratch)[:0], mode)
		*scratch = input
		checks[n].scratch = scratch
		return input, err
	}
	defer func() {
		for _, c := range checks {
			if c.scratch != nil {
				putScratch(c.scratch)
			}
		}
	}()
	if p.HubServer != "" && (!senderKnown || p.IsLPDU()) {
		input, err := view(modeLPDUReference)
		if err != nil {
			return err
		}
		checks[n].server, checks[n].input = sender, input
		n++
	}
	if p.HubServer == "" || !p.IsLPDU() {
		input, err := view(modeReference)
		if err != nil {
			return err
		}
		checks[n].server, checks[n].input = p.HubServer, input
		if p.HubServer == "" {
			checks[n].server = sender
		}
		n++
	}
	return p.verifyServers(ctx, keys, checks[:n])
}

// serverInput is a server whose signatures count and the canonical view they sign.
type serverInput struct {
	server  string
	input   []byte
	scratch *[]byte
}

// verifyServers checks every ed25519 signature of each server over its view; each server must have at least one.
func (p *PDU) verifyServers(ctx context.Context, keys KeyLookup, checks []serverInput) error {
	type named struct{ server, keyID string }
	// Usually one key per server: room for the two servers without allocating.
	var itemsBuf [4]sigverify.Item
	var namesBuf [4]named
	items, names := itemsBuf[:0], namesBuf[:0]
	for _, c := range checks {
		found := 0
		for keyID, sigB64 := range p.Signatures[c.server] {
			if !strings.HasPrefix(keyID, "ed25519:") {
				continue
			}
			sig, err := b64.DecodeString(strings.TrimRight(sigB64, "="))
			if err != nil || len(sig) != ed25519.SignatureSize {
				return fmt.Errorf("%w: signature %s of %s is not valid base64 ed25519", ErrBadSignature, keyID, c.server)
			}
			pub, err := keys.VerifyKey(ctx, c.server, keyID)
			if err != nil {
				return fmt.Errorf("%w: failed to get key %s of %s: %w", ErrBadSignature, keyID, c.server, err)
			}
			if len(pub) != ed25519.PublicKeySize {
				return fmt.Errorf("%w: signature %s of %s does not verify", ErrBadSignature, keyID, c.server)
			}
			items = append(items, sigverify.Item{PublicKey: pub, Message: c.input, Signature: sig})
			names = append(names, named{c.server, keyID})
			found++
		}
		if found == 0 {
			return fmt.Errorf("%w: no ed25519 signature from %s", ErrBadSignature, c.server)
		}
	}
	var okBuf [4]bool
	ok := okBuf[:0]
	if len(items) > len(okBuf) {
		ok = make([]bool, 0, len(items))
	}
	ok = ok[:len(items)]
	sigverify.VerifyBatch(items, ok)
	for i, ok := range ok {
		if !ok {
			return fmt.Errorf("%w: signature %s of %s does not verify", ErrBadSignature, names[i].keyID, names[i].server)
		}
	}
	return nil
}

// Received is the outcome of VerifyReceived for an event that is kept.
type Received struct {
	// Event is the event to use from here on: the original, or its redacted copy when Redacted is set.
	Event *PDU
	// Redacted is set when a content hash did not match (§5.1): keep the redacted copy. For an LPDU at a hub the
	// draft is silent; lmbridge rejects it instead (spec §9 item 12), which the caller decides with this flag.
	Redacted bool
	// HashErr is the ErrContentHashMismatch error when Redacted is set.
	HashErr error
}

// VerifyReceived runs §5.1 on a parsed event: a bad or missing signature that counts is an error wrapping
// ErrBadSignature (drop the event); a bad content hash gives Redacted with the redacted copy. The auth rules come
// after this, in package auth.
func VerifyReceived(ctx context.Context, keys KeyLookup, p *PDU) (*Received, error) {
	return VerifyReceivedWith(ctx, keys, p, VerifyOptions{})
}

// VerifyReceivedWith is VerifyReceived with options.
func VerifyReceivedWith(ctx context.Context, keys KeyLookup, p *PDU, opts VerifyOptions) (*Received, error) {
	if err := p.verifySignatures(ctx, keys, opts.SenderSignatureKnown); err != nil {
		return nil, err
	}
	hashErr := p.CheckContentHashes()
	if hashErr == nil {
		return &Received{Event: p}, nil
	}
	if !errors.Is(hashErr, ErrContentHashMismatch) {
		return nil, hashErr
	}
	red, err := p.Redacted()
	if err != nil {
		return nil, err
	}
	return &Received{Event: red, Redacted: true, HashErr: hashErr}, nil
}
