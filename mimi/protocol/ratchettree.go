package protocol

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// RatchetTreeRepresentation says how a RatchetTreeOption conveys the tree
// (draft-mahy-mls-ratchet-tree-options-03 §3).
type RatchetTreeRepresentation uint8

// The representations.
const (
	TreeFull                RatchetTreeRepresentation = 1
	TreeHTTPSURI            RatchetTreeRepresentation = 2
	TreeOutOfBand           RatchetTreeRepresentation = 3
	TreeDistributionService RatchetTreeRepresentation = 4
)

// RatchetTreeOption conveys the ratchet tree of a Welcome or GroupInfo.
type RatchetTreeOption struct {
	Representation RatchetTreeRepresentation
	Tree           wire.RatchetTree // TreeFull
	URL            []byte           // TreeHTTPSURI
	TreeSignature  []byte           // TreeHTTPSURI, TreeOutOfBand
}

// MarshalMLS implements codec.Marshaler.
func (o *RatchetTreeOption) MarshalMLS(w *codec.Writer) {
	w.Uint8(uint8(o.Representation))
	switch o.Representation {
	case TreeFull:
		o.Tree.MarshalMLS(w)
	case TreeHTTPSURI:
		w.Opaque(o.URL)
		w.Opaque(o.TreeSignature)
	case TreeOutOfBand:
		w.Opaque(o.TreeSignature)
	}
}

// UnmarshalMLS implements codec.Unmarshaler.
func (o *RatchetTreeOption) UnmarshalMLS(r *codec.Reader) {
	o.Representation = RatchetTreeRepresentation(r.Uint8())
	switch o.Representation {
	case TreeFull:
		o.Tree.UnmarshalMLS(r)
	case TreeHTTPSURI:
		o.URL = r.Opaque()
		o.TreeSignature = r.Opaque()
	case TreeOutOfBand:
		o.TreeSignature = r.Opaque()
	case TreeDistributionService:
	default:
		if r.Err() == nil {
			r.Fail(fmt.Errorf("%w: ratchet tree representation %d", ErrUnknownCode, o.Representation))
		}
	}
}

// RatchetTreePresence says how the ratchet_tree extension changed between epochs.
type RatchetTreePresence uint8

// The presence values.
const (
	NoRatchetTree      RatchetTreePresence = 0
	RatchetTreePresent RatchetTreePresence = 1
	RatchetTreeRemoved RatchetTreePresence = 2
	RatchetTreeAdded   RatchetTreePresence = 3
)

// PartialGroupInfo is what a hub that follows the handshake cannot rebuild of a GroupInfo
// (draft-mahy-mls-ratchet-tree-options-03 §4).
type PartialGroupInfo struct {
	RatchetTreePresence RatchetTreePresence
	Extensions          wire.Extensions
	Signature           []byte
}

// MarshalMLS implements codec.Marshaler.
func (p *PartialGroupInfo) MarshalMLS(w *codec.Writer) {
	w.Uint8(uint8(p.RatchetTreePresence))
	p.Extensions.MarshalMLS(w)
	w.Opaque(p.Signature)
}

// UnmarshalMLS implements codec.Unmarshaler.
func (p *PartialGroupInfo) UnmarshalMLS(r *codec.Reader) {
	p.RatchetTreePresence = RatchetTreePresence(readCode(r, "ratchet tree presence", uint8(RatchetTreeAdded)))
	p.Extensions.UnmarshalMLS(r)
	p.Signature = r.Opaque()
}

// GroupInfoRepresentation says whether a GroupInfoOption is full or partial.
type GroupInfoRepresentation uint8

// The representations.
const (
	GroupInfoFull    GroupInfoRepresentation = 1
	GroupInfoPartial GroupInfoRepresentation = 2
)

// GroupInfoOption is a GroupInfo or a PartialGroupInfo.
type GroupInfoOption struct {
	Representation GroupInfoRepresentation
	GroupInfo      *wire.GroupInfo
	Partial        *PartialGroupInfo
}

// MarshalMLS implements codec.Marshaler.
func (g *GroupInfoOption) MarshalMLS(w *codec.Writer) {
	w.Uint8(uint8(g.Representation))
	switch g.Representation {
	case GroupInfoFull:
		if g.GroupInfo != nil {
			g.GroupInfo.MarshalMLS(w)
		}
	case GroupInfoPartial:
		if g.Partial != nil {
			g.Partial.MarshalMLS(w)
		}
	}
}

// UnmarshalMLS implements codec.Unmarshaler.
func (g *GroupInfoOption) UnmarshalMLS(r *codec.Reader) {
	g.Representation = GroupInfoRepresentation(r.Uint8())
	switch g.Representation {
	case GroupInfoFull:
		g.GroupInfo = new(wire.GroupInfo)
		g.GroupInfo.UnmarshalMLS(r)
	case GroupInfoPartial:
		g.Partial = new(PartialGroupInfo)
		g.Partial.UnmarshalMLS(r)
	default:
		if r.Err() == nil {
			r.Fail(fmt.Errorf("%w: group info representation %d", ErrUnknownCode, g.Representation))
		}
	}
}
