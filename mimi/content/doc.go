// Package content implements the MIMI content format (draft-ietf-mimi-content-07 and the
// working group's HEAD, which is heading to -08): the CBOR message container carried as the
// application data of MLS PrivateMessages in a MIMI room, its message ID, the implied
// (derived) values, and the encryption and integrity check of external parts.
//
// Decoding is strict: the input must be one well-formed data item in CBOR core deterministic
// encoding (RFC 8949 §4.2.1, required by -08 §6.1) with exactly the shapes of the draft's
// CDDL, within its data-model and depth limits. A message that decodes re-encodes to the
// same bytes, which the message ID is computed over.
package content
