// Package protocol holds the wire types of the MIMI provider endpoints of
// draft-ietf-mimi-protocol-06 (§"MIMI Endpoints and Framing"): the directory document,
// and the TLS-presentation bodies of keyMaterial, update, submitMessage, notify and
// groupInfo, with strict decoding (through mls/codec, so that decoding then encoding
// reproduces the input) and the signatures the draft puts on them.
//
// Where the draft is ambiguous the choice is documented on the type. MLS messages are
// parsed with mls/wire, so a message mls/wire cannot parse (a SemiPrivateMessage, or a
// proposal type it does not know yet, such as AppDataUpdate) is refused here too.
package protocol
