package federation

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lmbridge/lmbridge/linearize/canonicaljson"
	"github.com/lmbridge/lmbridge/linearize/sigverify"
)

// Signed JSON objects (the Matrix specification's "Signing JSON"): the signature covers the object's canonical JSON
// without its signatures and unsigned members, in the same encoder as X-Matrix.
var (
	ErrNotAnObject        = errors.New("signed JSON is not an object")
	ErrSignatureNotFound  = errors.New("signature not found")
	ErrSignatureMalformed = errors.New("signature is not unpadded base64 ed25519")
	ErrSignatureInvalid   = errors.New("signature does not verify")
)

// signedPart parses raw (numbers canonical JSON has no form for kept as written, as X-Matrix does) and returns the
// object without signatures and unsigned in canonical JSON, and the object's signatures member if it has one.
func signedPart(raw []byte) ([]byte, *canonicaljson.Value, error) {
	v, err := canonicaljson.ParseLoose(raw)
	if err != nil {
		return nil, nil, err
	} else if v.Kind != canonicaljson.Object {
		return nil, nil, ErrNotAnObject
	}
	sigs, _ := v.Get("signatures")
	kept := make([]canonicaljson.Member, 0, len(v.Members))
	for _, m := range v.Members {
		if m.Key != "signatures" && m.Key != "unsigned" {
			kept = append(kept, m)
		}
	}
	signed := canonicaljson.Value{Kind: canonicaljson.Object, Members: kept}
	return signed.Bytes(), sigs, nil
}

// signJSON returns key's signature, unpadded base64, over v as a signed JSON object.
func signJSON(key *SigningKey, v any) (string, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("failed to encode the object to sign: %w", err)
	}
	msg, _, err := signedPart(raw)
	if err != nil {
		return "", fmt.Errorf("failed to canonicalise the object to sign: %w", err)
	}
	return base64.RawStdEncoding.EncodeToString(key.SignCanonicalJSON(msg)), nil
}

// verifyJSON checks the signature of serverName's keyID, made with pub, on the signed JSON object raw.
func verifyJSON(serverName, keyID string, pub ed25519.PublicKey, raw []byte) error {
	msg, sigs, err := signedPart(raw)
	if err != nil {
		return err
	}
	var sig *canonicaljson.Value
	if sigs != nil {
		if byServer, ok := sigs.Get(serverName); ok {
			sig, _ = byServer.Get(keyID)
		}
	}
	if sig == nil || sig.Kind != canonicaljson.String {
		return ErrSignatureNotFound
	}
	b, err := base64.RawStdEncoding.DecodeString(sig.Str)
	if err != nil || len(b) != ed25519.SignatureSize {
		return ErrSignatureMalformed
	}
	if !sigverify.Verify(pub, msg, b) {
		return ErrSignatureInvalid
	}
	return nil
}
