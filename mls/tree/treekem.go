package tree

import (
	"bytes"
	"crypto/rand"
	"fmt"

	tm "github.com/lmbridge/lmbridge/mls/treemath"
	"github.com/lmbridge/lmbridge/mls/wire"
)

const updatePathLabel = "UpdatePathNode"

// Path is a committer's new path, merged into its tree by GeneratePath and
// waiting to be encrypted into an UpdatePath once the caller knows the
// provisional GroupContext (which holds the new tree hash).
type Path struct {
	tree    *Tree
	leaf    tm.LeafIndex
	nodes   []tm.NodeIndex
	copath  []tm.NodeIndex
	secrets [][]byte
	pubs    [][]byte

	// LeafNode is the committer's new, signed leaf node.
	LeafNode *wire.LeafNode
	// CommitSecret is the secret the path yields for the key schedule.
	CommitSecret []byte
	// Keys is the committer's private state for the tree after the commit.
	Keys *PrivateKeys
}

// GeneratePath refreshes the path of member l (RFC 9420 §7.4–7.5): it
// draws a fresh leaf key pair and path secrets, blanks l's direct path, sets
// the new keys on its filtered direct path with their parent hashes, and
// replaces l's leaf with leaf, completed (encryption key, source commit,
// parent hash) and signed with sigPriv in the group groupID. leaf carries
// what the caller chooses (signature key, credential, capabilities,
// extensions); it is not modified.
func (t *Tree) GeneratePath(l tm.LeafIndex, leaf *wire.LeafNode, sigPriv, groupID []byte) (*Path, error) {
	if err := t.checkMember(l); err != nil {
		return nil, fmt.Errorf("generating path: %w", err)
	}
	s := t.suite
	leafPriv, leafPub, err := s.GenerateKeyPair()
	if err != nil {
		return nil, fmt.Errorf("generating path: %w", err)
	}
	nodes, copath := t.FilteredDirectPath(l)
	p := &Path{tree: t, leaf: l, nodes: nodes, copath: copath,
		secrets: make([][]byte, len(nodes)), pubs: make([][]byte, len(nodes)),
		Keys: NewPrivateKeys(l, leafPriv)}
	secret := make([]byte, s.HashSize())
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("generating path secret: %w", err)
	}
	for i, x := range nodes {
		priv, pub, err := s.DeriveKeyPair(s.DeriveSecret(secret, "node"))
		if err != nil {
			return nil, fmt.Errorf("deriving key of node %d: %w", x, err)
		}
		p.secrets[i], p.pubs[i] = secret, pub
		p.Keys.Set(x, priv)
		secret = s.DeriveSecret(secret, "path")
	}
	p.CommitSecret = secret

	fields, leafHash := t.pathParentHashes(copath, p.pubs)
	ln := *leaf
	ln.EncryptionKey = leafPub
	ln.Source = wire.SourceCommit
	ln.Lifetime = wire.Lifetime{}
	ln.ParentHash = leafHash
	if err := ln.Sign(s, sigPriv, groupID, l); err != nil {
		return nil, fmt.Errorf("generating path: %w", err)
	}
	p.LeafNode = &ln
	t.applyPath(l, &ln, nodes, p.pubs, fields)
	return p, nil
}

// applyPath blanks l's direct path and sets its leaf and filtered direct
// path nodes.
func (t *Tree) applyPath(l tm.LeafIndex, leaf *wire.LeafNode, nodes []tm.NodeIndex, pubs, fields [][]byte) {
	t.blankDirectPath(l)
	for i, x := range nodes {
		t.nodes[x].parent = &wire.ParentNode{EncryptionKey: pubs[i], ParentHash: fields[i]}
	}
	t.setNode(l.Node(), leaf, nil)
}

// Encrypt encrypts each path secret to the resolution of its copath child,
// without the leaves in exclude (the members this commit adds), under the
// encoded provisional GroupContext groupContext, giving the commit's
// UpdatePath.
func (p *Path) Encrypt(groupContext []byte, exclude []tm.LeafIndex) (*wire.UpdatePath, error) {
	t := p.tree
	up := &wire.UpdatePath{LeafNode: *p.LeafNode, Nodes: make([]wire.UpdatePathNode, len(p.nodes))}
	var res []tm.NodeIndex
	for i := range p.nodes {
		res = t.appendResolution(res[:0], p.copath[i], exclude)
		cts := make([]wire.HPKECiphertext, len(res))
		for j, r := range res {
			kem, ct, err := t.suite.EncryptWithLabel(t.EncryptionKey(r), updatePathLabel, groupContext, p.secrets[i])
			if err != nil {
				return nil, fmt.Errorf("encrypting path secret of node %d to node %d: %w", p.nodes[i], r, err)
			}
			cts[j] = wire.HPKECiphertext{KEMOutput: kem, Ciphertext: ct}
		}
		up.Nodes[i] = wire.UpdatePathNode{EncryptionKey: p.pubs[i], EncryptedPathSecret: cts}
	}
	return up, nil
}

// SecretFor is the path secret a new member at leaf l needs in its
// GroupSecrets: that of the lowest node of the path above l. It returns nil
// if l is under none (or is the committer).
func (p *Path) SecretFor(l tm.LeafIndex) (tm.NodeIndex, []byte) {
	for i, x := range p.nodes {
		if tm.IsInSubtree(x, l.Node()) {
			return x, p.secrets[i]
		}
	}
	return 0, nil
}

// MergeUpdatePath checks the public part of the UpdatePath up sent by
// member sender and merges it into t (RFC 9420 §7.5): the number of nodes
// must match sender's filtered direct path, the leaf node must be a commit
// leaf signed in group groupID whose parent hash matches the path. t is
// unchanged if a check fails. Apply the commit's proposals first; for an
// external commit, Add the joiner's leaf node first and pass its index.
func (t *Tree) MergeUpdatePath(sender tm.LeafIndex, up *wire.UpdatePath, groupID []byte) error {
	if uint64(sender) >= uint64(t.NumLeaves()) {
		return fmt.Errorf("merging update path: %w: leaf %d", ErrLeafIndex, sender)
	}
	nodes, copath := t.FilteredDirectPath(sender)
	if len(up.Nodes) != len(nodes) {
		return fmt.Errorf("%w: %d nodes for a filtered direct path of %d", ErrUpdatePath, len(up.Nodes), len(nodes))
	}
	if up.LeafNode.Source != wire.SourceCommit {
		return fmt.Errorf("%w: update path leaf has source %d", ErrInvalidLeaf, up.LeafNode.Source)
	}
	pubs := make([][]byte, len(nodes))
	for i := range up.Nodes {
		pubs[i] = up.Nodes[i].EncryptionKey
	}
	fields, leafHash := t.pathParentHashes(copath, pubs)
	if !bytes.Equal(leafHash, up.LeafNode.ParentHash) {
		return fmt.Errorf("%w: update path leaf of %d", ErrParentHash, sender)
	}
	if err := up.LeafNode.Verify(t.suite, groupID, sender); err != nil {
		return fmt.Errorf("%w: update path leaf of %d: %w", ErrInvalidLeaf, sender, err)
	}
	leaf := up.LeafNode
	t.applyPath(sender, &leaf, nodes, pubs, fields)
	return nil
}

// DecryptPath decrypts the path secret that the UpdatePath up (already
// merged with MergeUpdatePath) sent by sender holds for the member whose
// keys are k, under the encoded provisional GroupContext groupContext;
// exclude lists the leaves the commit added. It derives and checks the keys
// of the path from there to the root, stores them in k, forgets k's keys
// the commit replaced, and returns the commit secret and the path secret
// decrypted (that of the lowest path node above k's leaf).
func (t *Tree) DecryptPath(k *PrivateKeys, sender tm.LeafIndex, up *wire.UpdatePath, exclude []tm.LeafIndex, groupContext []byte) (commitSecret, pathSecret []byte, err error) {
	if k.leaf == sender {
		return nil, nil, fmt.Errorf("%w: leaf %d cannot decrypt its own path", ErrUpdatePath, sender)
	}
	nodes, copath := t.FilteredDirectPath(sender)
	if len(up.Nodes) != len(nodes) {
		return nil, nil, fmt.Errorf("%w: %d nodes for a filtered direct path of %d", ErrUpdatePath, len(up.Nodes), len(nodes))
	}
	me := k.leaf.Node()
	i := 0
	for i < len(copath) && !tm.IsInSubtree(copath[i], me) {
		i++
	}
	if i == len(copath) {
		return nil, nil, fmt.Errorf("%w: leaf %d is under no node of the path", ErrUpdatePath, k.leaf)
	}
	res := t.appendResolution(nil, copath[i], exclude)
	cts := up.Nodes[i].EncryptedPathSecret
	if len(cts) != len(res) {
		return nil, nil, fmt.Errorf("%w: node %d has %d ciphertexts for a resolution of %d", ErrUpdatePath, nodes[i], len(cts), len(res))
	}
	for j, r := range res {
		priv := k.Get(r)
		if priv == nil {
			continue
		}
		pathSecret, err = t.suite.DecryptWithLabel(priv, updatePathLabel, groupContext, cts[j].KEMOutput, cts[j].Ciphertext)
		if err != nil {
			return nil, nil, fmt.Errorf("decrypting path secret of node %d: %w", nodes[i], err)
		}
		break
	}
	if pathSecret == nil {
		return nil, nil, fmt.Errorf("%w: node %d", ErrNoPrivateKey, copath[i])
	}
	commitSecret, err = k.derivePath(t, nodes[i:], pathSecret)
	if err != nil {
		return nil, nil, err
	}
	k.Prune(t)
	return commitSecret, pathSecret, nil
}
