package tree

import (
	"bytes"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	tm "github.com/lmbridge/lmbridge/mls/treemath"
)

// FuzzRatchetTree decodes a ratchet_tree extension as a joiner would and
// runs the joiner's checks: none may panic, and an accepted tree re-encodes
// to its input.
func FuzzRatchetTree(f *testing.F) {
	s, err := ciphersuite.Lookup(1)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := Decode(s, data)
		if err != nil {
			return
		}
		if got := tr.Encode(); !bytes.Equal(got, data) {
			t.Fatalf("re-encoded tree differs:\n in  %x\n out %x", data, got)
		}
		tr.Hash()
		_ = tr.Verify([]byte("group"))
		for x := uint32(0); x < tr.Width(); x++ {
			tr.Resolution(tm.NodeIndex(x))
		}
	})
}
