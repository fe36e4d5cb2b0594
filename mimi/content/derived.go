package content

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// extendedTimeTag is the RFC 9581 extended time tag a hub may use for its timestamp.
const extendedTimeTag = 1001

// Timestamp is the hub's accepted timestamp: milliseconds since the UNIX epoch, or an RFC
// 9581 extended time (tag 1001 around a map), kept as its encoding.
type Timestamp struct {
	Millis uint64
	// Extended, if set, is the whole tag-1001 item and Millis is ignored.
	Extended cbor.RawMessage
}

// DerivedValues are the values a receiver knows about a message without them being in it
// (the MessageDerivedValues of the implied-fields CDDL).
type DerivedValues struct {
	MessageID            MessageID
	HubAcceptedTimestamp Timestamp
	MLSGroupID           []byte
	SenderLeafIndex      uint32
	SenderClientURL      string
	SenderUserURL        string
	RoomURL              string
}

// DecodeDerivedValues parses an encoded MessageDerivedValues array.
func DecodeDerivedValues(data []byte) (*DerivedValues, error) {
	if err := checkDeterministic(data); err != nil {
		return nil, fmt.Errorf("decoding MIMI derived values: %w", err)
	}
	d, err := decodeDerived(data)
	if err != nil {
		return nil, fmt.Errorf("decoding MIMI derived values: %w", err)
	}
	return d, nil
}

func decodeDerived(data []byte) (*DerivedValues, error) {
	f, err := asArray(data, "derivedValues", 7)
	if err != nil {
		return nil, err
	}
	var d DerivedValues
	b, err := asBytes(f[0], "messageId")
	if err != nil {
		return nil, err
	}
	if d.MessageID, err = MessageIDFromBytes(b); err != nil {
		return nil, fieldErr("messageId", err)
	}
	switch major(f[1]) {
	case majorUint:
		if d.HubAcceptedTimestamp.Millis, err = asUint(f[1], "hubAcceptedTimestamp", 1<<64-1); err != nil {
			return nil, err
		}
	case majorTag:
		_, num, _, next, err := readHead(f[1], 0)
		if err != nil {
			return nil, fieldErr("hubAcceptedTimestamp", err)
		}
		if num != extendedTimeTag || major(f[1][next:]) != majorMap {
			return nil, fmt.Errorf("hubAcceptedTimestamp: %w: tag %d, want 1001 around a map", ErrWrongType, num)
		}
		d.HubAcceptedTimestamp.Extended = cbor.RawMessage(append([]byte(nil), f[1]...))
	default:
		return nil, wrongType("hubAcceptedTimestamp", f[1], "unsigned integer or tag 1001")
	}
	if d.MLSGroupID, err = asBytes(f[2], "mlsGroupId"); err != nil {
		return nil, err
	}
	leaf, err := asUint(f[3], "senderLeafIndex", 1<<32-1)
	if err != nil {
		return nil, err
	}
	d.SenderLeafIndex = uint32(leaf)
	if d.SenderClientURL, err = asText(f[4], "senderClientUrl"); err != nil {
		return nil, err
	}
	if d.SenderUserURL, err = asText(f[5], "senderUserUrl"); err != nil {
		return nil, err
	}
	if d.RoomURL, err = asText(f[6], "roomUrl"); err != nil {
		return nil, err
	}
	return &d, nil
}

// Encode writes the derived values in deterministic CBOR.
func (d *DerivedValues) Encode() ([]byte, error) {
	var ts any = d.HubAcceptedTimestamp.Millis
	if d.HubAcceptedTimestamp.Extended != nil {
		if err := checkDeterministic(d.HubAcceptedTimestamp.Extended); err != nil {
			return nil, fmt.Errorf("encoding MIMI derived values: hubAcceptedTimestamp: %w", err)
		}
		ts = d.HubAcceptedTimestamp.Extended
	}
	b, err := marshal([]any{d.MessageID[:], ts, nonNil(d.MLSGroupID), uint64(d.SenderLeafIndex), d.SenderClientURL, d.SenderUserURL, d.RoomURL})
	if err != nil {
		return nil, fmt.Errorf("encoding MIMI derived values: %w", err)
	}
	return b, nil
}
