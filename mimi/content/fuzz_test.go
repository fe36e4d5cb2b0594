package content

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var writeCorpus = flag.Bool("write-corpus", false, "rewrite testdata/fuzz/FuzzDecode from the examples")

// FuzzDecode feeds arbitrary bytes to every decoder of the package: none may panic, and
// whatever one accepts must re-encode to exactly the input (the property message IDs rely
// on). Seeds: every example (testdata/fuzz/FuzzDecode).
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if m, err := Decode(data); err == nil {
			re, err := m.Encode()
			if err != nil {
				t.Fatalf("accepted message does not encode: %v", err)
			}
			if !bytes.Equal(re, data) {
				t.Fatalf("accepted message re-encodes differently:\n in  %x\n out %x", data, re)
			}
			if _, err := ComputeMessageID(IDSchemeLengthPrefixed, "s", "r", data); err != nil {
				t.Fatalf("accepted message has no ID: %v", err)
			}
		}
		if d, err := DecodeDerivedValues(data); err == nil {
			if re, err := d.Encode(); err != nil || !bytes.Equal(re, data) {
				t.Fatalf("accepted derived values re-encode to %x, %v", re, err)
			}
		}
		if r, err := DecodeStatusReport(data); err == nil {
			if re, err := r.Encode(); err != nil || !bytes.Equal(re, data) {
				t.Fatalf("accepted report re-encodes to %x, %v", re, err)
			}
		}
	})
}

func corpusFile(data []byte) string {
	return "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
}

// TestFuzzCorpus keeps the checked-in seed corpus equal to the examples (rewrite it with
// go test -run TestFuzzCorpus -args -write-corpus).
func TestFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	want := map[string]string{}
	for _, folder := range exampleFolders {
		for _, ex := range loadExamples(t, folder.dir) {
			want[filepath.Base(folder.dir)+"-"+ex.name] = corpusFile(ex.cbor)
		}
	}
	if *writeCorpus {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range want {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, e := range entries {
		w, ok := want[e.Name()]
		if !ok {
			continue // corpus entries added by fuzzing runs are welcome
		}
		got, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != w {
			t.Errorf("%s differs from its example", e.Name())
		}
		seen++
	}
	if seen != len(want) {
		t.Errorf("corpus has %d of %d examples", seen, len(want))
	}
}
