// Package mls is the root of an implementation of the Messaging Layer
// Security protocol, RFC 9420, for ciphersuites 1 to 7. The code lives in
// subpackages, each for one concern:
//
//   - codec: the TLS presentation language, strictly decoded
//   - ciphersuite: the suites' primitives with MLS labels (HPKE from circl)
//   - treemath: array-based binary tree arithmetic
//   - wire: every RFC 9420 struct and its encoding
//   - tree: the ratchet tree, its hashes and checks, and TreeKEM
//   - keyschedule: epoch secrets, PSKs, exporter, external init
//   - secrettree: per-epoch message keys with an out-of-order window
//   - framing: signing, tagging, encrypting and hashing messages
//   - group: the state machine a client (group.Group) or a delivery service
//     (group.PublicGroup) uses
//
// Most applications need only group, wire and ciphersuite. The test vectors
// of the MLS working group (testdata/vectors) pass for every suite they
// cover.
package mls
