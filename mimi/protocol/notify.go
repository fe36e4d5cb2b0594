package protocol

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// FanoutMessage is one event the hub sends to a follower with POST /notify/{roomId}. The
// draft selects on "message.wire_format" with cases named after content types; read here
// as: a PrivateMessage (application) may carry a Frank, a Welcome carries a
// RatchetTreeOption, a PublicMessage proposal carries moreProposals and a PublicMessage
// commit carries the hub's stapled externalProposals.
type FanoutMessage struct {
	Timestamp         uint64
	Message           wire.MLSMessage
	Frank             *Frank             // PrivateMessage, optional
	RatchetTreeOption *RatchetTreeOption // Welcome
	MoreProposals     []wire.MLSMessage  // PublicMessage proposal
	ExternalProposals []wire.MLSMessage  // PublicMessage commit
}

// MarshalMLS implements codec.Marshaler.
func (f *FanoutMessage) MarshalMLS(w *codec.Writer) {
	w.Uint64(f.Timestamp)
	f.Message.MarshalMLS(w)
	switch {
	case f.Message.PrivateMessage != nil:
		w.Optional(f.Frank != nil, func(w *codec.Writer) { f.Frank.MarshalMLS(w) })
	case f.Message.Welcome != nil:
		if f.RatchetTreeOption != nil {
			f.RatchetTreeOption.MarshalMLS(w)
		}
	case handshakeKind(&f.Message) == wire.ContentProposal:
		writeMessages(w, f.MoreProposals)
	case handshakeKind(&f.Message) == wire.ContentCommit:
		writeMessages(w, f.ExternalProposals)
	}
}

// UnmarshalMLS implements codec.Unmarshaler.
func (f *FanoutMessage) UnmarshalMLS(r *codec.Reader) {
	f.Timestamp = r.Uint64()
	f.Message.UnmarshalMLS(r)
	if r.Err() != nil {
		return
	}
	switch {
	case f.Message.PrivateMessage != nil:
		if r.Optional() {
			f.Frank = new(Frank)
			f.Frank.UnmarshalMLS(r)
		}
	case f.Message.Welcome != nil:
		f.RatchetTreeOption = new(RatchetTreeOption)
		f.RatchetTreeOption.UnmarshalMLS(r)
	case handshakeKind(&f.Message) == wire.ContentProposal:
		f.MoreProposals = readMessages(r)
	case handshakeKind(&f.Message) == wire.ContentCommit:
		f.ExternalProposals = readMessages(r)
	default:
		r.Fail(fmt.Errorf("%w: fanout of wire format %d", ErrWrongMessage, f.Message.WireFormat()))
	}
}

// EncodeFanout encodes messages concatenated, as one notify body.
func EncodeFanout(msgs []FanoutMessage) ([]byte, error) {
	var w codec.Writer
	for i := range msgs {
		b, err := encode("fanout message", &msgs[i])
		if err != nil {
			return nil, fmt.Errorf("fanout message %d: %w", i, err)
		}
		w.Raw(b)
	}
	return w.Bytes(), nil
}

// DecodeFanout parses a notify body: one or more concatenated FanoutMessages.
func DecodeFanout(b []byte) ([]FanoutMessage, error) {
	out, _, err := DecodeFanoutRaw(b)
	return out, err
}

// DecodeFanoutRaw is DecodeFanout that also returns each message's bytes as they are in b (sub-slices of it), so
// that a follower can recognise a repeated message by its digest without encoding it again.
func DecodeFanoutRaw(b []byte) ([]FanoutMessage, [][]byte, error) {
	r := codec.NewReader(b)
	var out []FanoutMessage
	var raw [][]byte
	for !r.Empty() {
		start := len(b) - r.Len()
		var f FanoutMessage
		f.UnmarshalMLS(r)
		out = append(out, f)
		raw = append(raw, b[start:len(b)-r.Len()])
	}
	if err := r.Finish(); err != nil {
		return nil, nil, fmt.Errorf("decoding notify body (message %d): %w", len(out)-1, err)
	}
	if len(out) == 0 {
		return nil, nil, fmt.Errorf("decoding notify body: %w: empty", ErrWrongMessage)
	}
	return out, raw, nil
}
