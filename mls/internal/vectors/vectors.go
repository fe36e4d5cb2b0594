// Package vectors loads the MLS working group's test vectors from
// mls/testdata/vectors for the mls packages' tests.
package vectors

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// Dir is the directory holding the vector files.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "vectors")
}

// Load decodes the JSON vector file name (e.g. "tree-math.json") into v.
func Load(name string, v any) error {
	b, err := os.ReadFile(filepath.Join(Dir(), name))
	if err != nil {
		return fmt.Errorf("reading vector file %s: %w", name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding vector file %s: %w", name, err)
	}
	return nil
}

// Hex is a byte string written in JSON as hex.
type Hex []byte

// UnmarshalJSON decodes a hex string; JSON null gives nil.
func (h *Hex) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*h = nil
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("decoding hex: %w", err)
	}
	*h = d
	return nil
}
