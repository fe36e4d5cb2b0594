package content

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// exampleFolders are the two upstream revisions of the examples and the message ID framing
// each one's IDs were computed with (testdata/README.md).
var exampleFolders = []struct {
	dir    string
	scheme IDScheme
	other  IDScheme
}{
	{"testdata/draft-07", IDSchemeDraft07, IDSchemeLengthPrefixed},
	{"testdata/head-961ea5a", IDSchemeLengthPrefixed, IDSchemeDraft07},
}

// nonMessages are the examples that are not mimiContent arrays.
var nonMessages = map[string]string{
	"implied-original": "derived",
	"report":           "report",
}

// staleCBOR lists the examples whose .cbor does not match their .edn upstream, and
// stalePretty those whose .pretty dump still shows message IDs of an earlier revision;
// everything else must match exactly (testdata/README.md).
var (
	staleCBOR   = map[string]bool{"testdata/head-961ea5a/implied-original": true}
	stalePretty = map[string]bool{
		"testdata/draft-07/delete": true, "testdata/draft-07/edit": true,
		"testdata/draft-07/implied-original": true, "testdata/draft-07/mention": true,
		"testdata/draft-07/mention-html": true, "testdata/draft-07/reaction": true,
		"testdata/draft-07/reply": true, "testdata/draft-07/report": true,
		"testdata/draft-07/unlike": true,
	}
)

// maskIDs blanks every embedded message ID (bytes(32) starting with the SHA-256 octet), so
// that a stale dump can be checked to differ in nothing else.
func maskIDs(b []byte) []byte {
	out := bytes.Clone(b)
	for i := 0; i+35 <= len(out); i++ {
		if out[i] == 0x58 && out[i+1] == 0x20 && out[i+2] == HashIDSHA256 {
			clear(out[i+3 : i+35])
			i += 34
		}
	}
	return out
}

type example struct {
	name       string
	cbor       []byte
	edn        string
	pretty     string
	expectedID *MessageID
}

func loadExamples(t *testing.T, dir string) []example {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.cbor"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no examples in %s: %v", dir, err)
	}
	sort.Strings(paths)
	var out []example
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".cbor")
		ex := example{name: name}
		ex.cbor = mustRead(t, p)
		ex.edn = string(mustRead(t, filepath.Join(dir, name+".edn")))
		ex.pretty = string(mustRead(t, filepath.Join(dir, name+".pretty")))
		id, ok, err := headerMessageID(ex.edn)
		if err != nil {
			t.Fatalf("%s/%s: header message ID: %v", dir, name, err)
		}
		if ok {
			ex.expectedID = &id
		}
		out = append(out, ex)
	}
	return out
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestExamples decodes every example, re-encodes it byte for byte, checks the bytes
// against the .edn and .pretty files, and recomputes the message ID given in the header.
func TestExamples(t *testing.T) {
	for _, folder := range exampleFolders {
		examples := loadExamples(t, folder.dir)
		var roundTrips, idsChecked int
		for _, ex := range examples {
			t.Run(filepath.Base(folder.dir)+"/"+ex.name, func(t *testing.T) {
				key := folder.dir + "/" + ex.name

				// The annotated hex dump is the same bytes.
				pretty, err := prettyBytes(ex.pretty)
				if err != nil {
					t.Fatal(err)
				}
				if match := bytes.Equal(pretty, ex.cbor); match == stalePretty[key] {
					t.Errorf(".pretty matches .cbor: %v, expected %v", match, !stalePretty[key])
				}
				if !bytes.Equal(maskIDs(pretty), maskIDs(ex.cbor)) {
					t.Errorf(".pretty differs from .cbor in more than message IDs")
				}

				// The .edn, encoded independently of this package's types, is the same bytes.
				v, err := parseEDN(ex.edn)
				if err != nil {
					t.Fatalf("parsing .edn: %v", err)
				}
				fromEDN, err := encMode.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				if match := bytes.Equal(fromEDN, ex.cbor); match == staleCBOR[key] {
					t.Errorf(".edn matches .cbor: %v, expected %v\n edn:  %x\n cbor: %x", match, !staleCBOR[key], fromEDN, ex.cbor)
				}
				if !bytes.Equal(maskIDs(fromEDN), maskIDs(ex.cbor)) {
					t.Errorf(".edn differs from .cbor in more than message IDs")
				}

				var reenc []byte
				switch nonMessages[ex.name] {
				case "derived":
					d, err := DecodeDerivedValues(ex.cbor)
					if err != nil {
						t.Fatalf("decode: %v", err)
					}
					if reenc, err = d.Encode(); err != nil {
						t.Fatalf("encode: %v", err)
					}
				case "report":
					r, err := DecodeStatusReport(ex.cbor)
					if err != nil {
						t.Fatalf("decode: %v", err)
					}
					if len(r) != 4 {
						t.Errorf("report has %d entries, want 4", len(r))
					}
					if reenc, err = r.Encode(); err != nil {
						t.Fatalf("encode: %v", err)
					}
				default:
					m, err := Decode(ex.cbor)
					if err != nil {
						t.Fatalf("decode: %v", err)
					}
					if reenc, err = m.Encode(); err != nil {
						t.Fatalf("encode: %v", err)
					}
					sender, ok1 := m.SenderURI()
					room, ok2 := m.RoomURI()
					if !ok1 || !ok2 {
						t.Fatalf("example lacks sender or room URI extension")
					}
					if ex.expectedID == nil {
						t.Fatalf("message example without a message ID in its header")
					}
					id, err := ComputeMessageID(folder.scheme, sender, room, ex.cbor)
					if err != nil {
						t.Fatal(err)
					}
					if id != *ex.expectedID {
						t.Errorf("message ID %s, want %s", id, ex.expectedID)
					}
					if other, _ := ComputeMessageID(folder.other, sender, room, ex.cbor); other == *ex.expectedID {
						t.Errorf("message ID also matches with the %s framing", folder.other)
					}
					if viaType, _ := m.ID(folder.scheme, sender, room); viaType != id {
						t.Errorf("Message.ID %s differs from ComputeMessageID %s", viaType, id)
					}
					idsChecked++
				}
				if !bytes.Equal(reenc, ex.cbor) {
					t.Errorf("re-encoding differs\n got:  %x\n want: %x", reenc, ex.cbor)
				} else {
					roundTrips++
				}
			})
		}
		t.Logf("%s: %d examples, %d round-trip byte for byte, %d message IDs match", folder.dir, len(examples), roundTrips, idsChecked)
		if roundTrips != len(examples) {
			t.Errorf("%s: only %d of %d examples round-trip", folder.dir, roundTrips, len(examples))
		}
	}
}

// TestExampleCounts pins the example set so that a lost file cannot pass silently.
func TestExampleCounts(t *testing.T) {
	want := map[string]int{"testdata/draft-07": 16, "testdata/head-961ea5a": 15}
	for dir, n := range want {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.cbor"))
		if len(paths) != n {
			t.Errorf("%s: %d examples, want %d", dir, len(paths), n)
		}
	}
}

// TestExampleReferences checks that the examples refer to each other by the IDs this
// package computes: the reply, reaction and mentions answer the original, the edit and
// delete replace the reply, the unlike replaces the reaction.
func TestExampleReferences(t *testing.T) {
	for _, folder := range exampleFolders {
		ids := map[string]MessageID{}
		msgs := map[string]*Message{}
		for _, ex := range loadExamples(t, folder.dir) {
			if nonMessages[ex.name] != "" {
				continue
			}
			m, err := Decode(ex.cbor)
			if err != nil {
				t.Fatalf("%s: %v", ex.name, err)
			}
			sender, _ := m.SenderURI()
			room, _ := m.RoomURI()
			if ids[ex.name], err = ComputeMessageID(folder.scheme, sender, room, ex.cbor); err != nil {
				t.Fatal(err)
			}
			msgs[ex.name] = m
		}
		refs := []struct{ from, field, to string }{
			{"reply", "inReplyTo", "original"},
			{"reaction", "inReplyTo", "original"},
			{"mention", "inReplyTo", "original"},
			{"mention-html", "inReplyTo", "original"},
			{"edit", "inReplyTo", "original"},
			{"edit", "replaces", "reply"},
			{"delete", "replaces", "reply"},
			{"unlike", "replaces", "reaction"},
			{"unlike", "inReplyTo", "original"},
		}
		for _, r := range refs {
			m := msgs[r.from]
			got := m.InReplyTo
			if r.field == "replaces" {
				got = m.Replaces
			}
			if got == nil || *got != ids[r.to] {
				t.Errorf("%s: %s.%s = %v, want ID of %s %s", folder.dir, r.from, r.field, got, r.to, ids[r.to])
			}
		}
		for _, name := range []string{"original", "expiring", "attachment", "conferencing", "multipart-1", "multipart-2", "multipart-3"} {
			if m := msgs[name]; m.InReplyTo != nil || m.Replaces != nil {
				t.Errorf("%s: %s refers to another message", folder.dir, name)
			}
		}
	}

	// The implied values of -07 name the -07 ID of original; the -07 report lists the -07
	// IDs of original, reply, mention and expiring.
	d, err := DecodeDerivedValues(mustRead(t, "testdata/draft-07/implied-original.cbor"))
	if err != nil {
		t.Fatal(err)
	}
	orig07 := computeExampleID(t, "testdata/draft-07/original.cbor", IDSchemeDraft07)
	if d.MessageID != orig07 {
		t.Errorf("draft-07 implied messageId %s, want %s", d.MessageID, orig07)
	}
	if d.HubAcceptedTimestamp.Millis != 1644387225019 || d.SenderLeafIndex != 4 ||
		d.SenderUserURL != "mimi://example.com/u/alice-smith" || d.RoomURL != "mimi://example.com/r/engineering_team" {
		t.Errorf("draft-07 implied values: %+v", d)
	}
	report, err := DecodeStatusReport(mustRead(t, "testdata/draft-07/report.cbor"))
	if err != nil {
		t.Fatal(err)
	}
	want := StatusReport{
		{computeExampleID(t, "testdata/draft-07/original.cbor", IDSchemeDraft07), StatusRead},
		{computeExampleID(t, "testdata/draft-07/reply.cbor", IDSchemeDraft07), StatusRead},
		{computeExampleID(t, "testdata/draft-07/mention.cbor", IDSchemeDraft07), StatusUnread},
		{computeExampleID(t, "testdata/draft-07/expiring.cbor", IDSchemeDraft07), StatusExpired},
	}
	if !slices.Equal(report, want) {
		t.Errorf("draft-07 report.edn: %v, want %v", report, want)
	}
}

func computeExampleID(t *testing.T, path string, scheme IDScheme) MessageID {
	t.Helper()
	b := mustRead(t, path)
	m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	sender, _ := m.SenderURI()
	room, _ := m.RoomURI()
	id, err := ComputeMessageID(scheme, sender, room, b)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestPartIndex checks the implied part indices of the nesting example (draft appendix
// "Complicated Nested Example": 11 parts, 3 and 8 English, 5 a GIF, 10 a PNG).
func TestPartIndex(t *testing.T) {
	m, err := Decode(mustRead(t, "testdata/head-961ea5a/multipart-3.cbor"))
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	m.Body.Walk(func(int, *NestedPart) bool { count++; return true })
	if count != 11 {
		t.Errorf("%d parts, want 11", count)
	}
	for idx, want := range map[int]string{3: "en", 4: "fr", 8: "en", 9: "fr"} {
		p, ok := m.Body.PartAt(idx)
		if !ok || p.Language != want {
			t.Errorf("part %d: %+v, want language %s", idx, p, want)
		}
	}
	for idx, want := range map[int]string{5: "image/gif", 10: "image/png"} {
		p, ok := m.Body.PartAt(idx)
		s, isSingle := p.Part.(*SinglePart)
		if !ok || !isSingle || s.ContentType != want || p.Disposition != DispositionInline {
			t.Errorf("part %d: %+v, want inline %s", idx, p, want)
		}
	}
	// The English HTML of part 3 refers to the GIF by content ID.
	p3, _ := m.Body.PartAt(3)
	html := string(p3.Part.(*SinglePart).Content)
	i := strings.Index(html, "cid:")
	j := strings.Index(html[i:], "\"")
	if n, ok := ContentIDIndex(html[i : i+j]); !ok || n != 5 {
		t.Errorf("content ID %q → %d, %v; want 5", html[i:i+j], n, ok)
	}
	if _, ok := m.Body.PartAt(11); ok {
		t.Errorf("part 11 exists")
	}
}
