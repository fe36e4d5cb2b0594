package content

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// fullMessage uses every field and every cardinality.
func fullMessage(t *testing.T) *Message {
	t.Helper()
	salt, err := NewSalt(nil)
	if err != nil {
		t.Fatal(err)
	}
	id1, _ := MessageIDFromBytes(testID)
	id2 := id1
	id2[5] ^= 0xff
	m := &Message{
		Salt: salt, Replaces: &id1, TopicID: []byte("topic"), Expires: &Expiration{Relative: true, Time: 3600},
		InReplyTo: &id2,
		Body: NestedPart{Disposition: DispositionRender, Part: &MultiPart{Semantics: ProcessAll, Parts: []NestedPart{
			{Disposition: DispositionRender, Language: "en", Part: &SinglePart{ContentType: TypeMarkdown, Content: []byte("**hi**")}},
			{Disposition: DispositionAttachment, Part: &ExternalPart{ContentType: "image/png", URL: "https://example.com/a.png",
				Expires: 1, Size: 2, EncAlg: AEADAES128GCM, Key: make([]byte, 16), Nonce: make([]byte, 12), AAD: []byte{},
				HashAlg: HashSHA256, ContentHash: make([]byte, 32), Description: "a picture", Filename: "a.png"}},
			{Disposition: DispositionReaction, Part: &MultiPart{Semantics: SingleUnit, Parts: []NestedPart{
				{Part: &NullPart{}}, {Disposition: Disposition(77), Language: "fr-CA,de", Part: &SinglePart{ContentType: TypePlainText, Content: []byte{}}},
			}}},
		}}},
	}
	for _, kv := range []struct {
		k ExtensionKey
		v any
	}{{TextKey("z-private"), []any{uint64(1), "x"}}, {IntKey(ExtRoomURI), "mimi://example.com/r/r"}, {IntKey(-3), true}, {IntKey(ExtSenderURI), "mimi://example.com/u/u"}} {
		if err := m.SetExtension(kv.k, kv.v); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func TestEncodeDecodeAllFields(t *testing.T) {
	m := fullMessage(t)
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("decoding own encoding: %v", err)
	}
	// Decode returns extensions in deterministic order: integers first, then text.
	wantOrder := []ExtensionKey{IntKey(1), IntKey(2), IntKey(-3), TextKey("z-private")}
	for i, e := range got.Extensions {
		if e.Key != wantOrder[i] {
			t.Errorf("extension %d is %s, want %s", i, e.Key, wantOrder[i])
		}
	}
	got.Extensions, m.Extensions = nil, nil
	if !reflect.DeepEqual(got, m) {
		t.Errorf("round trip changed the message:\n got  %+v\n want %+v", got, m)
	}
	if s, ok := (&Message{Extensions: []Extension{{IntKey(1), cbor.RawMessage{0x01}}}}).SenderURI(); ok {
		t.Errorf("non-text sender URI read as %q", s)
	}
	// Setting an extension again replaces it.
	m2 := fullMessage(t)
	if err := m2.SetExtension(IntKey(ExtSenderURI), "mimi://example.com/u/other"); err != nil {
		t.Fatal(err)
	}
	if s, _ := m2.SenderURI(); s != "mimi://example.com/u/other" || len(m2.Extensions) != 4 {
		t.Errorf("SetExtension did not replace: %q, %d extensions", s, len(m2.Extensions))
	}
}

func TestEncodeRejects(t *testing.T) {
	single := func() NestedPart {
		return NestedPart{Disposition: DispositionRender, Part: &SinglePart{ContentType: TypePlainText, Content: []byte("x")}}
	}
	deep := NestedPart{Part: &NullPart{}}
	for i := 0; i < 4; i++ {
		deep = NestedPart{Part: &MultiPart{Parts: []NestedPart{deep, {Part: &NullPart{}}}}}
	}
	cases := []struct {
		name string
		m    Message
		want error
	}{
		{"nil part", Message{Body: NestedPart{}}, ErrMissingPart},
		{"one-part multipart", Message{Body: NestedPart{Part: &MultiPart{Parts: []NestedPart{single()}}}}, ErrTooFewParts},
		{"unknown semantics", Message{Body: NestedPart{Part: &MultiPart{Semantics: 3, Parts: []NestedPart{single(), single()}}}}, ErrUnknownSemantics},
		{"five levels", Message{Body: deep}, ErrTooDeep},
		{"bad language", Message{Body: NestedPart{Language: "english!", Part: &NullPart{}}}, ErrBadLanguage},
		{"invalid UTF-8 content type", Message{Body: NestedPart{Part: &SinglePart{ContentType: "\xff"}}}, ErrInvalidUTF8},
		{"long topic", Message{TopicID: make([]byte, MaxTopicIDLen+1), Body: single()}, ErrOutOfRange},
		{"empty text key", Message{Extensions: []Extension{{TextKey(""), cbor.RawMessage{0x01}}}, Body: single()}, ErrBadExtensionKey},
		{"huge integer key", Message{Extensions: []Extension{{IntKey(1 << 60), cbor.RawMessage{0x01}}}, Body: single()}, ErrBadExtensionKey},
		{"non-deterministic value", Message{Extensions: []Extension{{IntKey(7), cbor.RawMessage{0x18, 0x01}}}, Body: single()}, ErrNotDeterministic},
		{"two values in one", Message{Extensions: []Extension{{IntKey(7), cbor.RawMessage{0x01, 0x02}}}, Body: single()}, ErrTrailingData},
		{"duplicate keys", Message{Extensions: []Extension{{IntKey(7), cbor.RawMessage{0x01}}, {IntKey(7), cbor.RawMessage{0x02}}}, Body: single()}, ErrDuplicateKey},
		{"sender URI not text", Message{Extensions: []Extension{{IntKey(1), cbor.RawMessage{0x01}}}, Body: single()}, ErrBadExtensionValue},
	}
	for _, c := range cases {
		if _, err := c.m.Encode(); !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
	}
	if err := (&Message{}).SetExtension(TextKey(strings.Repeat("k", 256)), 1); !errors.Is(err, ErrBadExtensionKey) {
		t.Errorf("SetExtension with a long key: %v", err)
	}
}

func TestMessageIDInputs(t *testing.T) {
	msg := mustRead(t, "testdata/head-961ea5a/original.cbor")
	a, _ := ComputeMessageID(IDSchemeLengthPrefixed, "mimi://a/u/x", "mimi://a/r/y", msg)
	// Moving a byte from the sender to the room URI changes the -08 ID but not the -07 one:
	// the reason for the length prefixes.
	b, _ := ComputeMessageID(IDSchemeLengthPrefixed, "mimi://a/u/", "xmimi://a/r/y", msg)
	if a == b {
		t.Errorf("-08 ID ignores where the URIs split")
	}
	c, _ := ComputeMessageID(IDSchemeDraft07, "mimi://a/u/x", "mimi://a/r/y", msg)
	d, _ := ComputeMessageID(IDSchemeDraft07, "mimi://a/u/", "xmimi://a/r/y", msg)
	if c != d {
		t.Errorf("-07 ID depends on where the URIs split")
	}
	if !a.KnownHash() {
		t.Errorf("ID %s does not start with 0x01", a)
	}
	if _, err := ComputeMessageID(IDSchemeLengthPrefixed, strings.Repeat("u", 65536), "r", msg); !errors.Is(err, ErrURITooLong) {
		t.Errorf("long URI: %v", err)
	}
	if _, err := ComputeMessageID(IDScheme(9), "u", "r", msg); !errors.Is(err, ErrUnknownIDScheme) {
		t.Errorf("unknown scheme: %v", err)
	}
	if _, err := ComputeMessageID(IDSchemeDraft07, "u", "r", msg[:10]); !errors.Is(err, ErrMalformed) {
		t.Errorf("short message: %v", err)
	}
	// A different salt argument changes the ID (the salt is hashed twice).
	var other Salt
	e, _ := MessageIDWithSalt(IDSchemeLengthPrefixed, "mimi://a/u/x", "mimi://a/r/y", msg, other)
	if e == a {
		t.Errorf("salt not in the hash")
	}
}

func TestDispositionAndSemanticsNames(t *testing.T) {
	if DispositionReaction.String() != "reaction" || Disposition(9).String() != "unknown(9)" {
		t.Errorf("disposition names: %s %s", DispositionReaction, Disposition(9))
	}
	if Disposition(9).Effective() != DispositionRender || DispositionInline.Effective() != DispositionInline {
		t.Errorf("effective disposition wrong")
	}
	if ProcessAll.String() != "processAll" || PartSemantics(5).String() != "unknown(5)" {
		t.Errorf("semantics names wrong")
	}
}

func TestLanguages(t *testing.T) {
	good := []string{"en", "en-US", "zh-Hant-TW", "sgn-BE-FR", "x-private", "de-CH-1996", "sl-rozaj-biske", "en-a-bbb-x-a-ccc", "zh-min-nan", "es-419", "i-klingon", "EN-gb", "hy-Latn-IT-arevela"}
	for _, tag := range good {
		if !WellFormedLanguageTag(tag) {
			t.Errorf("%q refused", tag)
		}
	}
	bad := []string{"", "e", "en_US", "en--US", "en-", "-en", "toolongtag", "en-a", "x", "en-x", "123", "en-US-a-", "é"}
	for _, tag := range bad {
		if WellFormedLanguageTag(tag) {
			t.Errorf("%q accepted", tag)
		}
	}
	tags, err := Languages("en, fr-CA")
	if err != nil || !reflect.DeepEqual(tags, []string{"en", "fr-CA"}) {
		t.Errorf("Languages: %v, %v", tags, err)
	}
	if s, err := JoinLanguages("en", "fr"); err != nil || s != "en,fr" {
		t.Errorf("JoinLanguages: %q, %v", s, err)
	}
	if _, err := JoinLanguages("en", "bad_tag"); !errors.Is(err, ErrBadLanguage) {
		t.Errorf("JoinLanguages bad: %v", err)
	}
}

func TestDerivedAndReportRejects(t *testing.T) {
	derived := mustRead(t, "testdata/draft-07/implied-original.cbor")
	for name, c := range map[string]struct {
		in   []byte
		want error
	}{
		"short array":         {enc(t, []any{testID, uint64(1)}), ErrArrayLength},
		"short message ID":    {enc(t, []any{testID[:5], uint64(1), []byte{}, uint64(0), "a", "b", "c"}), ErrBadMessageID},
		"leaf beyond 32 bits": {enc(t, []any{testID, uint64(1), []byte{}, uint64(1) << 32, "a", "b", "c"}), ErrOutOfRange},
		"wrong tag":           {enc(t, []any{testID, cbor.Tag{Number: 1, Content: uint64(5)}, []byte{}, uint64(0), "a", "b", "c"}), ErrWrongType},
		"timestamp as text":   {enc(t, []any{testID, "now", []byte{}, uint64(0), "a", "b", "c"}), ErrWrongType},
		"trailing":            {append(bytes.Clone(derived), 0), ErrTrailingData},
	} {
		if _, err := DecodeDerivedValues(c.in); !errors.Is(err, c.want) {
			t.Errorf("derived %s: %v, want %v", name, err, c.want)
		}
	}
	ext := enc(t, []any{testID, cbor.Tag{Number: extendedTimeTag, Content: map[any]any{uint64(1): uint64(1644387225)}}, []byte{}, uint64(0), "a", "b", "c"})
	d, err := DecodeDerivedValues(ext)
	if err != nil || d.HubAcceptedTimestamp.Extended == nil {
		t.Fatalf("extended time: %+v, %v", d, err)
	}
	if re, err := d.Encode(); err != nil || !bytes.Equal(re, ext) {
		t.Errorf("extended time re-encoding: %x, %v", re, err)
	}
	for name, c := range map[string]struct {
		in   []byte
		want error
	}{
		"not an array":    {enc(t, "x"), ErrWrongType},
		"entry too long":  {enc(t, []any{[]any{testID, uint64(1), uint64(2)}}), ErrArrayLength},
		"status too big":  {enc(t, []any{[]any{testID, uint64(256)}}), ErrOutOfRange},
		"short ID":        {enc(t, []any{[]any{testID[:31], uint64(1)}}), ErrBadMessageID},
		"status negative": {enc(t, []any{[]any{testID, int64(-1)}}), ErrWrongType},
	} {
		if _, err := DecodeStatusReport(c.in); !errors.Is(err, c.want) {
			t.Errorf("report %s: %v, want %v", name, err, c.want)
		}
	}
	if StatusRead.String() != "read" || MessageStatus(9).String() != "unknown(9)" {
		t.Errorf("status names wrong")
	}
}
