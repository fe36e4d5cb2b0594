package wire

import (
	"bytes"
	"testing"

	"github.com/lmbridge/lmbridge/mls/codec"
)

// roundTrip decodes data into v and, if that succeeds, checks that v
// re-encodes to data: strict decoding admits one encoding per value.
func roundTrip(t *testing.T, data []byte, v value) {
	if err := codec.Unmarshal(data, v); err != nil {
		return
	}
	if got := codec.Marshal(v); !bytes.Equal(got, data) {
		t.Fatalf("decoded and re-encoded to different bytes:\n in  %x\n out %x", data, got)
	}
}

func FuzzMLSMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, new(MLSMessage)) })
}

func FuzzKeyPackage(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, new(KeyPackage)) })
}

func FuzzWelcome(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, new(Welcome)) })
}

func FuzzGroupInfo(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, new(GroupInfo)) })
}

func FuzzCommit(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, new(Commit)) })
}
