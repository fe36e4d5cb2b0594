package content

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// decMode and encMode are the CBOR modes of the package. Inputs have already passed
// checkDeterministic when decMode sees them; its limits are a second line of defence.
var (
	decMode cbor.DecMode
	encMode cbor.EncMode
)

func init() {
	var err error
	decMode, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		UTF8:             cbor.UTF8RejectInvalid,
		MaxNestedLevels:  maxCBORDepth + 1,
		MaxArrayElements: 65536,
		MaxMapPairs:      65536,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("content: CBOR decoding options: %v", err))
	}
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(fmt.Sprintf("content: CBOR encoding options: %v", err))
	}
}

var majorNames = [8]string{"unsigned integer", "negative integer", "byte string", "text string", "array", "map", "tag", "simple value or float"}

func describe(raw cbor.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case 0xf4, 0xf5:
		return "boolean"
	case 0xf6:
		return "null"
	}
	return majorNames[raw[0]>>5]
}

func wrongType(field string, raw cbor.RawMessage, want string) error {
	return fmt.Errorf("%s: %w: got %s, want %s", field, ErrWrongType, describe(raw), want)
}

func isNull(raw cbor.RawMessage) bool { return len(raw) == 1 && raw[0] == 0xf6 }

func major(raw cbor.RawMessage) int {
	if len(raw) == 0 {
		return -1
	}
	return int(raw[0] >> 5)
}

// asArray decodes an array whose length must be one of lengths (any length if none given).
func asArray(raw cbor.RawMessage, field string, lengths ...int) ([]cbor.RawMessage, error) {
	if major(raw) != majorArray {
		return nil, wrongType(field, raw, "array")
	}
	var elems []cbor.RawMessage
	if err := decMode.Unmarshal(raw, &elems); err != nil {
		return nil, fieldErr(field, fmt.Errorf("%w: %v", ErrMalformed, err))
	}
	if len(lengths) == 0 {
		return elems, nil
	}
	for _, n := range lengths {
		if len(elems) == n {
			return elems, nil
		}
	}
	return nil, fmt.Errorf("%s: %w: got %d, want %v", field, ErrArrayLength, len(elems), lengths)
}

func asBytes(raw cbor.RawMessage, field string) ([]byte, error) {
	if major(raw) != majorBytes {
		return nil, wrongType(field, raw, "byte string")
	}
	var b []byte
	if err := decMode.Unmarshal(raw, &b); err != nil {
		return nil, fieldErr(field, fmt.Errorf("%w: %v", ErrMalformed, err))
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

func asText(raw cbor.RawMessage, field string) (string, error) {
	if major(raw) != majorText {
		return "", wrongType(field, raw, "text string")
	}
	var s string
	if err := decMode.Unmarshal(raw, &s); err != nil {
		return "", fieldErr(field, fmt.Errorf("%w: %v", ErrMalformed, err))
	}
	return s, nil
}

// asUint decodes an unsigned integer no larger than max (the CDDL's "uint .size n").
func asUint(raw cbor.RawMessage, field string, max uint64) (uint64, error) {
	if major(raw) != majorUint {
		return 0, wrongType(field, raw, "unsigned integer")
	}
	var v uint64
	if err := decMode.Unmarshal(raw, &v); err != nil {
		return 0, fieldErr(field, fmt.Errorf("%w: %v", ErrMalformed, err))
	}
	if v > max {
		return 0, fmt.Errorf("%s: %w: %d exceeds %d", field, ErrOutOfRange, v, max)
	}
	return v, nil
}

func asBool(raw cbor.RawMessage, field string) (bool, error) {
	switch {
	case len(raw) == 1 && raw[0] == 0xf4:
		return false, nil
	case len(raw) == 1 && raw[0] == 0xf5:
		return true, nil
	}
	return false, wrongType(field, raw, "boolean")
}

// marshal encodes v deterministically; the values given to it are built by this package,
// so a failure is a programming error reported as such.
func marshal(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding CBOR: %w", err)
	}
	return b, nil
}
