// Package wire defines the structs of RFC 9420 (MLS) and their TLS
// presentation-language encodings: credentials, capabilities, extensions,
// leaf nodes, key packages, ratchet tree nodes, update paths, proposals,
// commits, the group context, GroupInfo, Welcome, and the MLSMessage
// envelope with its PublicMessage and PrivateMessage bodies.
//
// Every type T has MarshalMLS(*codec.Writer) and UnmarshalMLS(*codec.Reader),
// so codec.Marshal and codec.Unmarshal encode and decode it. Decoding is
// strict: an unknown enum value where the RFC gives the enum a select (a
// credential, node, proposal, sender, content or PSK type, a leaf node
// source, a wire format) is an error, as is anything codec rejects, so a
// decoded value re-encodes to the bytes it came from. Decoded byte slices
// alias the input.
//
// The signed structs (LeafNode, KeyPackage, GroupInfo) carry Sign and Verify
// methods over their to-be-signed encodings. This package checks syntax and
// signatures only; the rules of a group (capabilities, uniqueness, tree
// shape, key schedule) live in the packages that hold group state.
package wire
