package interop

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Hex is bytes that travel to and from the harness as a hex string.
type Hex []byte

// MarshalJSON encodes the bytes as a hex string.
func (h Hex) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

// UnmarshalJSON decodes a hex string.
func (h *Hex) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a hex string: %w", err)
	}
	d, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("want a hex string: %w", err)
	}
	*h = d
	return nil
}

// Extension is an RFC 9420 extension (§13): its type number and its extension_data.
type Extension struct {
	Type uint16 `json:"type"`
	Data Hex    `json:"data"`
}

// Member is one leaf of a group's tree as a client sees it.
type Member struct {
	Leaf     uint32 `json:"leaf"`
	Identity Hex    `json:"identity"` // a basic credential's identity; empty for other credentials
}

// State is what a ts-mls client reports of its group: what both implementations must agree on after every epoch.
type State struct {
	Epoch                   uint64   `json:"epoch"`
	Suite                   uint16   `json:"suite"`
	GroupID                 Hex      `json:"groupId"`
	Leaf                    uint32   `json:"leaf"`
	EpochAuthenticator      Hex      `json:"epochAuthenticator"`
	TreeHash                Hex      `json:"treeHash"`
	ConfirmedTranscriptHash Hex      `json:"confirmedTranscriptHash"`
	Active                  string   `json:"active"` // "active", or e.g. "removedFromGroup"
	Members                 []Member `json:"members"`
	// Exporter is MLS-Exporter(label, context, length) when State was asked for one (see Export).
	Exporter Hex `json:"exporter,omitempty"`
}

// KeyPackage is a KeyPackage MLSMessage and its KeyPackageRef.
type KeyPackage struct {
	Message Hex `json:"keyPackage"`
	Ref     Hex `json:"ref"`
}

// KeyPackageOptions changes what a KeyPackage's leaf advertises.
type KeyPackageOptions struct {
	// Grease adds every GREASE value (RFC 9420 §13.5) to each capabilities list.
	Grease bool `json:"grease,omitempty"`
	// Extensions and Proposals are non-default extension and proposal types to list in capabilities.
	Extensions []uint16 `json:"capExtensions,omitempty"`
	Proposals  []uint16 `json:"capProposals,omitempty"`
	// CompressedECDSA keeps ts-mls 1.6.4's own signature key for the ECDSA suites (2, 5, 7): a compressed SEC1
	// point, where RFC 9420 §5.1.1 wants the uncompressed one that the harness gives by default.
	CompressedECDSA bool `json:"compressedEcdsa,omitempty"`
	// Lifetime bounds the KeyPackage's validity; nil keeps ts-mls's default, 0 to 2^63-1 seconds.
	Lifetime *Lifetime `json:"lifetime,omitempty"`
}

// Lifetime is a KeyPackage's validity period in Unix seconds (RFC 9420 §7.2).
type Lifetime struct {
	NotBefore int64 `json:"notBefore"`
	NotAfter  int64 `json:"notAfter"`
}

// Proposal is one proposal to make or commit. Make one with AddProposal, RemoveProposal, PSKProposal or
// GroupContextExtensionsProposal.
type Proposal struct {
	Type       string      `json:"type"`
	KeyPackage Hex         `json:"keyPackage,omitempty"`
	Leaf       *uint32     `json:"leaf,omitempty"`
	PSKID      Hex         `json:"pskId,omitempty"`
	Secret     Hex         `json:"secret,omitempty"`
	Nonce      Hex         `json:"nonce,omitempty"`
	Extensions []Extension `json:"extensions,omitempty"`
}

// AddProposal adds the member of a KeyPackage MLSMessage.
func AddProposal(keyPackage []byte) Proposal { return Proposal{Type: "add", KeyPackage: keyPackage} }

// RemoveProposal removes the member at a leaf.
func RemoveProposal(leaf uint32) Proposal { return Proposal{Type: "remove", Leaf: &leaf} }

// PSKProposal injects an external PSK. Every member must know it (see Harness.PSK); secret, when not nil, also gives
// it to the proposing client. The nonce is random.
func PSKProposal(id, secret []byte) Proposal { return Proposal{Type: "psk", PSKID: id, Secret: secret} }

// GroupContextExtensionsProposal replaces the group context's extensions.
func GroupContextExtensionsProposal(exts ...Extension) Proposal {
	return Proposal{Type: "gce", Extensions: append([]Extension{}, exts...)}
}

// CommitOptions changes how a commit is made.
type CommitOptions struct {
	// Private frames the commit as a PrivateMessage; by default it is a PublicMessage (what LM and MIMI require).
	Private bool `json:"private,omitempty"`
	// NoRatchetTree leaves the ratchet_tree extension out of the Welcome's GroupInfo: joiners then need the tree
	// (Commit.Tree) out of band.
	NoRatchetTree bool `json:"-"`
	// Pending keeps the committer in its current epoch, holding the new one until Merge (its commit was accepted)
	// or Discard (another commit won).
	Pending bool `json:"pending,omitempty"`
	// GroupInfo also returns a GroupInfo of the new epoch with external_pub and the ratchet tree.
	GroupInfo bool `json:"groupInfo,omitempty"`
	// AuthenticatedData is the commit's authenticated_data.
	AuthenticatedData Hex `json:"authenticatedData,omitempty"`
}

// Commit is what a commit produced.
type Commit struct {
	// Message is the commit MLSMessage (PublicMessage unless CommitOptions.Private).
	Message Hex `json:"commit"`
	// Welcome is the Welcome MLSMessage for added members; nil when none were added.
	Welcome Hex `json:"welcome,omitempty"`
	// Epoch is the new epoch.
	Epoch uint64 `json:"epoch"`
	// Tree is the new epoch's ratchet tree (RFC 9420 §12.4.3.3 encoding), for joiners given it out of band.
	Tree Hex `json:"tree"`
	// GroupInfo is the new epoch's GroupInfo MLSMessage when CommitOptions.GroupInfo asked for it.
	GroupInfo Hex `json:"groupInfo,omitempty"`
}

// Processed is what processing a message did.
type Processed struct {
	// Kind is "application", "commit" or "proposal".
	Kind string `json:"kind"`
	// Plaintext is an application message's content.
	Plaintext Hex `json:"plaintext,omitempty"`
	// Epoch is the client's epoch afterwards.
	Epoch uint64 `json:"epoch"`
	// Active is the client's membership afterwards ("active", or "removedFromGroup" when the commit removed it).
	Active string `json:"active,omitempty"`
	// PendingDiscarded is set when the client held a pending commit that this commit made stale.
	PendingDiscarded bool `json:"pendingDiscarded,omitempty"`
}

type clientReq struct {
	Client string `json:"client"`
}

// Ping checks that the harness answers and returns what it runs.
func (h *Harness) Ping(ctx context.Context) (map[string]string, error) {
	var res map[string]string
	if err := h.Call(ctx, "ping", nil, &res); err != nil {
		return nil, err
	}
	return res, nil
}

// KeyPackage makes a fresh KeyPackage for client (creating the client when new) with a basic credential holding
// identity, and returns the KeyPackage MLSMessage. The client keeps the private keys for Join, Create or
// ExternalJoin.
func (h *Harness) KeyPackage(ctx context.Context, client string, suite uint16, identity []byte) ([]byte, error) {
	kp, err := h.KeyPackageWith(ctx, client, suite, identity, KeyPackageOptions{})
	return kp.Message, err
}

// KeyPackageWith is KeyPackage with options, returning the KeyPackageRef too.
func (h *Harness) KeyPackageWith(ctx context.Context, client string, suite uint16, identity []byte, opts KeyPackageOptions) (KeyPackage, error) {
	req := struct {
		clientReq
		Suite    uint16 `json:"suite"`
		Identity Hex    `json:"identity"`
		KeyPackageOptions
	}{clientReq{client}, suite, identity, opts}
	var kp KeyPackage
	if err := h.Call(ctx, "keypackage", req, &kp); err != nil {
		return KeyPackage{}, fmt.Errorf("failed to make a KeyPackage for %s: %w", client, err)
	}
	return kp, nil
}

// Create makes client the creator of a new one-member group. The client uses its oldest unused KeyPackage of the
// suite, or makes one with identity.
func (h *Harness) Create(ctx context.Context, client string, suite uint16, groupID, identity []byte, exts ...Extension) (State, error) {
	req := struct {
		clientReq
		Suite      uint16      `json:"suite"`
		GroupID    Hex         `json:"groupId"`
		Identity   Hex         `json:"identity,omitempty"`
		Extensions []Extension `json:"extensions,omitempty"`
	}{clientReq{client}, suite, groupID, identity, exts}
	var st State
	if err := h.Call(ctx, "create", req, &st); err != nil {
		return State{}, fmt.Errorf("failed to create a group at %s: %w", client, err)
	}
	return st, nil
}

type commitReq struct {
	clientReq
	CommitOptions
	RatchetTree bool       `json:"ratchetTree"`
	Proposals   []Proposal `json:"proposals,omitempty"`
	KeyPackages []Hex      `json:"keyPackages,omitempty"`
}

// Add commits Add proposals for the KeyPackage MLSMessages and returns the commit and the Welcome.
func (h *Harness) Add(ctx context.Context, client string, keyPackages [][]byte, opts CommitOptions) (Commit, error) {
	req := commitReq{clientReq: clientReq{client}, CommitOptions: opts, RatchetTree: !opts.NoRatchetTree}
	for _, kp := range keyPackages {
		req.KeyPackages = append(req.KeyPackages, kp)
	}
	var c Commit
	if err := h.Call(ctx, "add", req, &c); err != nil {
		return Commit{}, fmt.Errorf("failed to commit adds at %s: %w", client, err)
	}
	return c, nil
}

// Commit commits the proposals given here and every proposal the client has received in this epoch (by
// reference). With no proposals at all it is an empty commit with a path, which updates the committer's leaf; ts-mls
// sends a path whenever the RFC requires one and none for an add-only commit.
func (h *Harness) Commit(ctx context.Context, client string, proposals []Proposal, opts CommitOptions) (Commit, error) {
	req := commitReq{clientReq: clientReq{client}, CommitOptions: opts, RatchetTree: !opts.NoRatchetTree, Proposals: proposals}
	var c Commit
	if err := h.Call(ctx, "commit", req, &c); err != nil {
		return Commit{}, fmt.Errorf("failed to commit at %s: %w", client, err)
	}
	return c, nil
}

// Propose makes a stand-alone proposal (a PublicMessage unless private) and returns its MLSMessage. The client keeps
// it for its next commit, as do the members that process it.
func (h *Harness) Propose(ctx context.Context, client string, p Proposal, private bool) ([]byte, error) {
	req := struct {
		clientReq
		Proposal Proposal `json:"proposal"`
		Private  bool     `json:"private,omitempty"`
	}{clientReq{client}, p, private}
	var res struct {
		Proposal Hex `json:"proposal"`
	}
	if err := h.Call(ctx, "propose", req, &res); err != nil {
		return nil, fmt.Errorf("failed to make a %s proposal at %s: %w", p.Type, client, err)
	}
	return res.Proposal, nil
}

// Merge moves client into the epoch of its pending commit.
func (h *Harness) Merge(ctx context.Context, client string) (State, error) {
	var st State
	if err := h.Call(ctx, "merge", clientReq{client}, &st); err != nil {
		return State{}, fmt.Errorf("failed to merge the pending commit of %s: %w", client, err)
	}
	return st, nil
}

// Discard drops client's pending commit; it stays in its current epoch.
func (h *Harness) Discard(ctx context.Context, client string) (State, error) {
	var st State
	if err := h.Call(ctx, "discard", clientReq{client}, &st); err != nil {
		return State{}, fmt.Errorf("failed to discard the pending commit of %s: %w", client, err)
	}
	return st, nil
}

// Join joins client to a group from a Welcome MLSMessage made for one of its KeyPackages. tree is the ratchet tree
// when the Welcome carries none (nil otherwise).
func (h *Harness) Join(ctx context.Context, client string, welcome, tree []byte) (State, error) {
	req := struct {
		clientReq
		Welcome Hex `json:"welcome"`
		Tree    Hex `json:"tree,omitempty"`
	}{clientReq{client}, welcome, tree}
	var st State
	if err := h.Call(ctx, "join", req, &st); err != nil {
		return State{}, fmt.Errorf("failed to join %s from a Welcome: %w", client, err)
	}
	return st, nil
}

// Process hands client an MLSMessage (PublicMessage or PrivateMessage): a commit moves it to the next epoch, a
// proposal is kept for a later commit, an application message is decrypted.
func (h *Harness) Process(ctx context.Context, client string, message []byte) (Processed, error) {
	req := struct {
		clientReq
		Message Hex `json:"message"`
	}{clientReq{client}, message}
	var p Processed
	if err := h.Call(ctx, "process", req, &p); err != nil {
		return Processed{}, fmt.Errorf("failed to process a message at %s: %w", client, err)
	}
	return p, nil
}

// Send encrypts an application message and returns its PrivateMessage MLSMessage.
func (h *Harness) Send(ctx context.Context, client string, plaintext []byte) ([]byte, error) {
	req := struct {
		clientReq
		Plaintext Hex `json:"plaintext"`
	}{clientReq{client}, plaintext}
	var res struct {
		Message Hex `json:"message"`
	}
	if err := h.Call(ctx, "send", req, &res); err != nil {
		return nil, fmt.Errorf("failed to send an application message from %s: %w", client, err)
	}
	return res.Message, nil
}

// GroupInfo returns a signed GroupInfo MLSMessage of client's current epoch with the external_pub extension, and
// the ratchet_tree extension unless withoutTree; tree is the ratchet tree either way.
func (h *Harness) GroupInfo(ctx context.Context, client string, withoutTree bool) (groupInfo, tree []byte, err error) {
	return h.GroupInfoWith(ctx, client, GroupInfoOptions{WithoutTree: withoutTree})
}

// GroupInfoOptions changes what a GroupInfo holds.
type GroupInfoOptions struct {
	// WithoutTree leaves out the ratchet_tree extension.
	WithoutTree bool
	// TSMLSExternalPub encodes external_pub as ts-mls 1.6.4 does, the bare HPKE public key, where RFC 9420
	// §12.4.3.2 wants an ExternalPub struct (the key as an opaque<V>) that the harness writes by default.
	TSMLSExternalPub bool
}

// GroupInfoWith is GroupInfo with options.
func (h *Harness) GroupInfoWith(ctx context.Context, client string, opts GroupInfoOptions) (groupInfo, tree []byte, err error) {
	req := struct {
		clientReq
		Tree             bool `json:"tree"`
		TSMLSExternalPub bool `json:"tsmlsExternalPub,omitempty"`
	}{clientReq{client}, !opts.WithoutTree, opts.TSMLSExternalPub}
	var res struct {
		GroupInfo Hex `json:"groupInfo"`
		Tree      Hex `json:"tree"`
	}
	if err = h.Call(ctx, "groupinfo", req, &res); err != nil {
		return nil, nil, fmt.Errorf("failed to make a GroupInfo at %s: %w", client, err)
	}
	return res.GroupInfo, res.Tree, nil
}

// Tree returns client's ratchet tree.
func (h *Harness) Tree(ctx context.Context, client string) ([]byte, error) {
	var res struct {
		Tree Hex `json:"tree"`
	}
	if err := h.Call(ctx, "tree", clientReq{client}, &res); err != nil {
		return nil, fmt.Errorf("failed to get the ratchet tree of %s: %w", client, err)
	}
	return res.Tree, nil
}

// ExternalJoin makes client join by an external commit (RFC 9420 §12.4.3.2) from a GroupInfo MLSMessage with
// external_pub; tree is needed when the GroupInfo has no ratchet_tree. The client uses its oldest unused KeyPackage
// of the group's suite, or makes one with identity. It returns the commit (a PublicMessage) for the members.
func (h *Harness) ExternalJoin(ctx context.Context, client string, groupInfo, tree, identity []byte) ([]byte, State, error) {
	req := struct {
		clientReq
		GroupInfo Hex `json:"groupInfo"`
		Tree      Hex `json:"tree,omitempty"`
		Identity  Hex `json:"identity,omitempty"`
	}{clientReq{client}, groupInfo, tree, identity}
	var res struct {
		Commit Hex `json:"commit"`
		State
	}
	if err := h.Call(ctx, "externaljoin", req, &res); err != nil {
		return nil, State{}, fmt.Errorf("failed to join %s by an external commit: %w", client, err)
	}
	return res.Commit, res.State, nil
}

// State returns client's view of its group.
func (h *Harness) State(ctx context.Context, client string) (State, error) {
	var st State
	if err := h.Call(ctx, "state", clientReq{client}, &st); err != nil {
		return State{}, fmt.Errorf("failed to get the state of %s: %w", client, err)
	}
	return st, nil
}

// Export returns client's state with State.Exporter set to MLS-Exporter(label, context, length) of its epoch.
func (h *Harness) Export(ctx context.Context, client, label string, context []byte, length int) (State, error) {
	type exporter struct {
		Label   string `json:"label"`
		Context Hex    `json:"context"`
		Length  int    `json:"length"`
	}
	req := struct {
		clientReq
		Exporter exporter `json:"exporter"`
	}{clientReq{client}, exporter{label, context, length}}
	var st State
	if err := h.Call(ctx, "state", req, &st); err != nil {
		return State{}, fmt.Errorf("failed to export a secret at %s: %w", client, err)
	}
	return st, nil
}

// PSK gives client an external PSK, for commits with a psk proposal that it makes or processes.
func (h *Harness) PSK(ctx context.Context, client string, id, secret []byte) error {
	req := struct {
		clientReq
		PSKID  Hex `json:"pskId"`
		Secret Hex `json:"secret"`
	}{clientReq{client}, id, secret}
	if err := h.Call(ctx, "psk", req, nil); err != nil {
		return fmt.Errorf("failed to give %s a PSK: %w", client, err)
	}
	return nil
}

// Drop forgets client and its group state.
func (h *Harness) Drop(ctx context.Context, client string) error {
	if err := h.Call(ctx, "drop", clientReq{client}, nil); err != nil {
		return fmt.Errorf("failed to drop %s: %w", client, err)
	}
	return nil
}
