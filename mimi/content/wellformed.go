package content

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/x448/float16"
)

// maxCBORDepth bounds the nesting of arrays, maps and tags anywhere in an input, far above
// what the draft's own limits allow (4 NestedPart levels, 4 levels in extensions), so the
// checker's recursion stays shallow whatever a peer sends.
const maxCBORDepth = 16

// maxSafeInt is 2^53-1: -08 §6.2 requires integer map keys to be exact as a double.
const maxSafeInt = 1<<53 - 1

// CBOR major types.
const (
	majorUint   = 0
	majorNegInt = 1
	majorBytes  = 2
	majorText   = 3
	majorArray  = 4
	majorMap    = 5
	majorTag    = 6
	majorSimple = 7
)

// checkDeterministic verifies that data is exactly one well-formed CBOR data item in core
// deterministic encoding (RFC 8949 §4.2.1) within the data-model restrictions of
// draft-ietf-mimi-content-08 §6.2. Everything later in the decoder may then rely on
// definite lengths, shortest heads and sorted, unique map keys.
func checkDeterministic(data []byte) error {
	end, err := checkItem(data, 0, 1)
	if err != nil {
		return err
	}
	if end != len(data) {
		return fmt.Errorf("%w: %d bytes after offset %d", ErrTrailingData, len(data)-end, end)
	}
	return nil
}

// readHead parses the initial byte and argument at off and returns the major type, the
// argument, the additional information and the offset after the head.
func readHead(data []byte, off int) (major byte, arg uint64, ai byte, next int, err error) {
	if off >= len(data) {
		return 0, 0, 0, 0, fmt.Errorf("%w: unexpected end of input at offset %d", ErrMalformed, off)
	}
	ib := data[off]
	major, ai = ib>>5, ib&0x1f
	off++
	var n int
	switch {
	case ai < 24:
		return major, uint64(ai), ai, off, nil
	case ai == 24:
		n = 1
	case ai == 25:
		n = 2
	case ai == 26:
		n = 4
	case ai == 27:
		n = 8
	case ai == 31:
		if major == majorUint || major == majorNegInt || major == majorTag {
			return 0, 0, 0, 0, fmt.Errorf("%w: indefinite length on major type %d at offset %d", ErrMalformed, major, off-1)
		}
		return 0, 0, 0, 0, fmt.Errorf("%w: indefinite length or break at offset %d", ErrNotDeterministic, off-1)
	default:
		return 0, 0, 0, 0, fmt.Errorf("%w: reserved additional information %d at offset %d", ErrMalformed, ai, off-1)
	}
	if len(data)-off < n {
		return 0, 0, 0, 0, fmt.Errorf("%w: truncated head at offset %d", ErrMalformed, off-1)
	}
	b := data[off : off+n]
	switch n {
	case 1:
		arg = uint64(b[0])
	case 2:
		arg = uint64(binary.BigEndian.Uint16(b))
	case 4:
		arg = uint64(binary.BigEndian.Uint32(b))
	case 8:
		arg = binary.BigEndian.Uint64(b)
	}
	if major != majorSimple {
		// Shortest form: each wider head must carry a value the narrower one could not.
		if (n == 1 && arg < 24) || (n == 2 && arg <= 0xff) || (n == 4 && arg <= 0xffff) || (n == 8 && arg <= 0xffffffff) {
			return 0, 0, 0, 0, fmt.Errorf("%w: argument %d not in shortest form at offset %d", ErrNotDeterministic, arg, off-1)
		}
	}
	return major, arg, ai, off + n, nil
}

// checkItem checks the data item at off, at container depth depth, and returns its end.
func checkItem(data []byte, off, depth int) (int, error) {
	start := off
	major, arg, ai, off, err := readHead(data, off)
	if err != nil {
		return 0, err
	}
	remaining := uint64(len(data) - off)
	switch major {
	case majorUint, majorNegInt:
		return off, nil
	case majorBytes, majorText:
		if arg > remaining {
			return 0, fmt.Errorf("%w: string of %d bytes at offset %d overruns the input", ErrMalformed, arg, start)
		}
		end := off + int(arg)
		if major == majorText && !utf8.Valid(data[off:end]) {
			return 0, fmt.Errorf("%w: at offset %d", ErrInvalidUTF8, start)
		}
		return end, nil
	case majorArray:
		if depth > maxCBORDepth {
			return 0, fmt.Errorf("%w: more than %d nested containers at offset %d", ErrTooDeep, maxCBORDepth, start)
		}
		// Every element takes at least one byte; refuse impossible counts before looping.
		if arg > remaining {
			return 0, fmt.Errorf("%w: array of %d elements at offset %d overruns the input", ErrMalformed, arg, start)
		}
		for i := uint64(0); i < arg; i++ {
			if off, err = checkItem(data, off, depth+1); err != nil {
				return 0, err
			}
		}
		return off, nil
	case majorMap:
		if depth > maxCBORDepth {
			return 0, fmt.Errorf("%w: more than %d nested containers at offset %d", ErrTooDeep, maxCBORDepth, start)
		}
		if arg > remaining/2 {
			return 0, fmt.Errorf("%w: map of %d pairs at offset %d overruns the input", ErrMalformed, arg, start)
		}
		var prevKey []byte
		for i := uint64(0); i < arg; i++ {
			keyStart := off
			if err := checkMapKey(data, off); err != nil {
				return 0, err
			}
			if off, err = checkItem(data, off, depth+1); err != nil {
				return 0, err
			}
			key := data[keyStart:off]
			if prevKey != nil {
				switch c := bytes.Compare(prevKey, key); {
				case c == 0:
					return 0, fmt.Errorf("%w: at offset %d", ErrDuplicateKey, keyStart)
				case c > 0:
					return 0, fmt.Errorf("%w: map keys not in bytewise order at offset %d", ErrNotDeterministic, keyStart)
				}
			}
			prevKey = key
			if off, err = checkItem(data, off, depth+1); err != nil {
				return 0, err
			}
		}
		return off, nil
	case majorTag:
		if depth > maxCBORDepth {
			return 0, fmt.Errorf("%w: more than %d nested containers at offset %d", ErrTooDeep, maxCBORDepth, start)
		}
		contentStart := off
		if off, err = checkItem(data, off, depth+1); err != nil {
			return 0, err
		}
		if arg == 2 || arg == 3 {
			if err := checkBignum(data[contentStart:off], start); err != nil {
				return 0, err
			}
		}
		return off, nil
	default: // majorSimple
		return checkSimple(data, start, off, ai, arg)
	}
}

// checkMapKey enforces -08 §6.2: map keys are integers exact as a double, text or bytes.
func checkMapKey(data []byte, off int) error {
	major, arg, _, _, err := readHead(data, off)
	if err != nil {
		return err
	}
	switch major {
	case majorUint, majorNegInt:
		// A negative integer encodes -1-arg, so its magnitude is arg+1.
		if arg > maxSafeInt || (major == majorNegInt && arg >= maxSafeInt) {
			return fmt.Errorf("%w: integer key beyond ±(2^53-1) at offset %d", ErrBadMapKey, off)
		}
		return nil
	case majorText, majorBytes:
		return nil
	default:
		return fmt.Errorf("%w: key of major type %d at offset %d", ErrBadMapKey, major, off)
	}
}

// checkBignum enforces preferred serialization of bignums: a byte string without leading
// zeros that does not fit a plain integer.
func checkBignum(item []byte, off int) error {
	major, n, _, next, err := readHead(item, 0)
	if err != nil {
		return err
	}
	if major != majorBytes {
		return fmt.Errorf("%w: bignum tag content is not a byte string at offset %d", ErrMalformed, off)
	}
	b := item[next : next+int(n)]
	if len(b) <= 8 || b[0] == 0 {
		return fmt.Errorf("%w: bignum at offset %d fits an integer or has leading zeros", ErrNotDeterministic, off)
	}
	return nil
}

// checkSimple checks simple values and floats: RFC 8949 §3.3 forbids two-byte simple values
// below 32, and deterministic encoding wants the shortest float that keeps the value; -08
// §6.2 allows only the half-width quiet NaN.
func checkSimple(data []byte, start, off int, ai byte, arg uint64) (int, error) {
	switch ai {
	case 24:
		if arg < 32 {
			return 0, fmt.Errorf("%w: simple value %d in two bytes at offset %d", ErrMalformed, arg, start)
		}
	case 25:
		f := float16.Frombits(uint16(arg))
		if f.IsNaN() && arg != 0x7e00 {
			return 0, fmt.Errorf("%w: NaN other than 0xf97e00 at offset %d", ErrNotDeterministic, start)
		}
	case 26:
		f := math.Float32frombits(uint32(arg))
		if math.IsNaN(float64(f)) {
			return 0, fmt.Errorf("%w: NaN other than 0xf97e00 at offset %d", ErrNotDeterministic, start)
		}
		if float16.Fromfloat32(f).Float32() == f && math.Signbit(float64(float16.Fromfloat32(f).Float32())) == math.Signbit(float64(f)) {
			return 0, fmt.Errorf("%w: float32 at offset %d fits a float16", ErrNotDeterministic, start)
		}
	case 27:
		f := math.Float64frombits(arg)
		if math.IsNaN(f) {
			return 0, fmt.Errorf("%w: NaN other than 0xf97e00 at offset %d", ErrNotDeterministic, start)
		}
		if float64(float32(f)) == f && math.Signbit(float64(float32(f))) == math.Signbit(f) {
			return 0, fmt.Errorf("%w: float64 at offset %d fits a float32", ErrNotDeterministic, start)
		}
	}
	return off, nil
}

// containerDepth returns how many arrays, maps and tags nest in a checked item (0 for a
// scalar), for the -08 §6.3 limit on extensions.
func containerDepth(item []byte) int {
	d, _ := depthAt(item, 0)
	return d
}

func depthAt(data []byte, off int) (depth, next int) {
	major, arg, _, off, err := readHead(data, off)
	if err != nil {
		return 0, len(data)
	}
	switch major {
	case majorBytes, majorText:
		return 0, off + int(arg)
	case majorArray, majorMap:
		n := arg
		if major == majorMap {
			n *= 2
		}
		max := 0
		for i := uint64(0); i < n; i++ {
			var d int
			d, off = depthAt(data, off)
			if d > max {
				max = d
			}
		}
		return max + 1, off
	case majorTag:
		d, off := depthAt(data, off)
		return d + 1, off
	default:
		return 0, off
	}
}
