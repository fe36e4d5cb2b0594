package content

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// Limits on the body from the draft: -08 §6.3 forbids nesting NestedParts more than four
// levels deep and the security considerations call a body of more than 1024 parts malicious.
const (
	MaxPartDepth = 4
	MaxParts     = 1024
)

// Disposition is the intended handling of a part (the baseDispos of the CDDL). Values 9 to
// 255 are unknown dispositions, which a receiver treats as Render.
type Disposition uint8

// The base dispositions.
const (
	DispositionUnspecified Disposition = 0
	DispositionRender      Disposition = 1
	DispositionReaction    Disposition = 2
	DispositionProfile     Disposition = 3
	DispositionInline      Disposition = 4
	DispositionIcon        Disposition = 5
	DispositionAttachment  Disposition = 6
	DispositionSession     Disposition = 7
	DispositionPreview     Disposition = 8
)

var dispositionNames = [...]string{"unspecified", "render", "reaction", "profile", "inline", "icon", "attachment", "session", "preview"}

func (d Disposition) String() string {
	if int(d) < len(dispositionNames) {
		return dispositionNames[d]
	}
	return "unknown(" + strconv.Itoa(int(d)) + ")"
}

// Known reports whether d is one of the base dispositions.
func (d Disposition) Known() bool { return int(d) < len(dispositionNames) }

// Effective is the disposition a receiver acts on: unknown values count as render
// (draft security considerations, "General handling").
func (d Disposition) Effective() Disposition {
	if !d.Known() {
		return DispositionRender
	}
	return d
}

// Cardinality selects the kind of a part.
type Cardinality uint8

// The cardinalities.
const (
	CardinalityNull     Cardinality = 0
	CardinalitySingle   Cardinality = 1
	CardinalityExternal Cardinality = 2
	CardinalityMulti    Cardinality = 3
)

// PartSemantics says how the parts of a MultiPart relate.
type PartSemantics uint8

// The part semantics.
const (
	ChooseOne  PartSemantics = 0 // multipart/alternative: the receiver picks one
	SingleUnit PartSemantics = 1 // multipart/related: all or nothing
	ProcessAll PartSemantics = 2 // multipart/mixed: each as far as understood
)

func (s PartSemantics) String() string {
	switch s {
	case ChooseOne:
		return "chooseOne"
	case SingleUnit:
		return "singleUnit"
	case ProcessAll:
		return "processAll"
	}
	return "unknown(" + strconv.Itoa(int(s)) + ")"
}

// NestedPart is a body or one part of a body.
type NestedPart struct {
	Disposition Disposition
	// Language is "" or a comma-separated list of RFC 5646 tags; see Languages.
	Language string
	// Part is one of *NullPart, *SinglePart, *ExternalPart or *MultiPart.
	Part Part
}

// Part is the cardinality-specific content of a NestedPart.
type Part interface {
	Cardinality() Cardinality
}

// NullPart is an empty body, used by deletes and unlikes.
type NullPart struct{}

// SinglePart carries inline content of one media type.
type SinglePart struct {
	ContentType string
	Content     []byte
}

// ExternalPart refers to content stored elsewhere (draft §"External content").
type ExternalPart struct {
	ContentType string
	URL         string
	// Expires is seconds since the UNIX epoch after which the content is gone; 0 = never.
	Expires uint32
	// Size is the length in octets of the content at URL; 0 = not given.
	Size uint64
	// EncAlg is an IANA AEAD algorithm number; 0 = not encrypted (then Key, Nonce and AAD
	// are empty).
	EncAlg AEADAlgorithm
	Key    []byte
	Nonce  []byte
	AAD    []byte
	// HashAlg is an IANA Named Information hash algorithm; 0 = no hash.
	HashAlg     HashAlgorithm
	ContentHash []byte
	Description string
	Filename    string
}

// MultiPart groups two or more parts.
type MultiPart struct {
	Semantics PartSemantics
	Parts     []NestedPart
}

// Cardinality implements Part.
func (*NullPart) Cardinality() Cardinality { return CardinalityNull }

// Cardinality implements Part.
func (*SinglePart) Cardinality() Cardinality { return CardinalitySingle }

// Cardinality implements Part.
func (*ExternalPart) Cardinality() Cardinality { return CardinalityExternal }

// Cardinality implements Part.
func (*MultiPart) Cardinality() Cardinality { return CardinalityMulti }

// Walk visits p and every part inside it depth-first, in the order that defines the implied
// part index (draft §"Message Bodies"); fn's index is that part index. Walk stops early when
// fn returns false.
func (p *NestedPart) Walk(fn func(index int, part *NestedPart) bool) {
	index := 0
	var walk func(*NestedPart) bool
	walk = func(n *NestedPart) bool {
		if !fn(index, n) {
			return false
		}
		index++
		if m, ok := n.Part.(*MultiPart); ok {
			for i := range m.Parts {
				if !walk(&m.Parts[i]) {
					return false
				}
			}
		}
		return true
	}
	walk(p)
}

// PartAt returns the part with the given implied part index.
func (p *NestedPart) PartAt(index int) (*NestedPart, bool) {
	var found *NestedPart
	p.Walk(func(i int, n *NestedPart) bool {
		if i == index {
			found = n
			return false
		}
		return true
	})
	return found, found != nil
}

// ContentIDIndex parses a MIMI content ID URI ("cid:<partIndex>@local.invalid") and returns
// the part index it refers to.
func ContentIDIndex(uri string) (int, bool) {
	if len(uri) < 4 || !strings.EqualFold(uri[:4], "cid:") {
		return 0, false
	}
	num, ok := strings.CutSuffix(uri[4:], "@local.invalid")
	if !ok || num == "" || (len(num) > 1 && num[0] == '0') {
		return 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// ContentID returns the content ID URI of part index i.
func ContentID(i int) string { return "cid:" + strconv.Itoa(i) + "@local.invalid" }

// partBudget counts parts while decoding or encoding a body.
type partBudget struct{ parts int }

func decodeNestedPart(raw cbor.RawMessage, path string, depth int, budget *partBudget) (NestedPart, error) {
	if depth > MaxPartDepth {
		return NestedPart{}, fmt.Errorf("%s: %w: more than %d levels of nested parts", path, ErrTooDeep, MaxPartDepth)
	}
	budget.parts++
	if budget.parts > MaxParts {
		return NestedPart{}, fmt.Errorf("%s: %w: more than %d", path, ErrTooManyParts, MaxParts)
	}
	elems, err := asArray(raw, path)
	if err != nil {
		return NestedPart{}, err
	}
	if len(elems) < 3 {
		return NestedPart{}, fmt.Errorf("%s: %w: got %d, want at least 3 (disposition, language, cardinality)", path, ErrArrayLength, len(elems))
	}
	var np NestedPart
	d, err := asUint(elems[0], path+".disposition", 255)
	if err != nil {
		return NestedPart{}, err
	}
	np.Disposition = Disposition(d)
	if np.Language, err = asText(elems[1], path+".language"); err != nil {
		return NestedPart{}, err
	}
	if _, err := Languages(np.Language); err != nil {
		return NestedPart{}, fieldErr(path+".language", err)
	}
	c, err := asUint(elems[2], path+".cardinality", 255)
	if err != nil {
		return NestedPart{}, err
	}
	want := map[Cardinality]int{CardinalityNull: 3, CardinalitySingle: 5, CardinalityExternal: 15, CardinalityMulti: 5}
	n, known := want[Cardinality(c)]
	if !known {
		return NestedPart{}, fmt.Errorf("%s.cardinality: %w: %d", path, ErrUnknownCardinality, c)
	}
	if len(elems) != n {
		return NestedPart{}, fmt.Errorf("%s: %w: got %d for cardinality %d, want %d", path, ErrArrayLength, len(elems), c, n)
	}
	f := elems[3:]
	switch Cardinality(c) {
	case CardinalityNull:
		np.Part = &NullPart{}
	case CardinalitySingle:
		var s SinglePart
		if s.ContentType, err = asText(f[0], path+".contentType"); err != nil {
			return NestedPart{}, err
		}
		if s.Content, err = asBytes(f[1], path+".content"); err != nil {
			return NestedPart{}, err
		}
		np.Part = &s
	case CardinalityExternal:
		e, err := decodeExternal(f, path)
		if err != nil {
			return NestedPart{}, err
		}
		np.Part = e
	case CardinalityMulti:
		var m MultiPart
		sem, err := asUint(f[0], path+".partSemantics", 255)
		if err != nil {
			return NestedPart{}, err
		}
		if sem > uint64(ProcessAll) {
			return NestedPart{}, fmt.Errorf("%s.partSemantics: %w: %d", path, ErrUnknownSemantics, sem)
		}
		m.Semantics = PartSemantics(sem)
		parts, err := asArray(f[1], path+".parts")
		if err != nil {
			return NestedPart{}, err
		}
		if len(parts) < 2 {
			return NestedPart{}, fmt.Errorf("%s.parts: %w: got %d", path, ErrTooFewParts, len(parts))
		}
		m.Parts = make([]NestedPart, len(parts))
		for i, pr := range parts {
			if m.Parts[i], err = decodeNestedPart(pr, fmt.Sprintf("%s.parts[%d]", path, i), depth+1, budget); err != nil {
				return NestedPart{}, err
			}
		}
		np.Part = &m
	}
	return np, nil
}

func decodeExternal(f []cbor.RawMessage, path string) (*ExternalPart, error) {
	var e ExternalPart
	var err error
	var v uint64
	if e.ContentType, err = asText(f[0], path+".contentType"); err != nil {
		return nil, err
	}
	if e.URL, err = asText(f[1], path+".url"); err != nil {
		return nil, err
	}
	if v, err = asUint(f[2], path+".expires", 1<<32-1); err != nil {
		return nil, err
	}
	e.Expires = uint32(v)
	if e.Size, err = asUint(f[3], path+".size", 1<<64-1); err != nil {
		return nil, err
	}
	if v, err = asUint(f[4], path+".encAlg", 1<<16-1); err != nil {
		return nil, err
	}
	e.EncAlg = AEADAlgorithm(v)
	if e.Key, err = asBytes(f[5], path+".key"); err != nil {
		return nil, err
	}
	if e.Nonce, err = asBytes(f[6], path+".nonce"); err != nil {
		return nil, err
	}
	if e.AAD, err = asBytes(f[7], path+".aad"); err != nil {
		return nil, err
	}
	if v, err = asUint(f[8], path+".hashAlg", 255); err != nil {
		return nil, err
	}
	e.HashAlg = HashAlgorithm(v)
	if e.ContentHash, err = asBytes(f[9], path+".contentHash"); err != nil {
		return nil, err
	}
	if e.Description, err = asText(f[10], path+".description"); err != nil {
		return nil, err
	}
	if e.Filename, err = asText(f[11], path+".filename"); err != nil {
		return nil, err
	}
	return &e, nil
}

// encode turns the part into the generic values encMode writes; it applies the same limits
// as the decoder so that what this package writes, it also reads.
func (p *NestedPart) encode(path string, depth int, budget *partBudget) ([]any, error) {
	if depth > MaxPartDepth {
		return nil, fmt.Errorf("%s: %w: more than %d levels of nested parts", path, ErrTooDeep, MaxPartDepth)
	}
	budget.parts++
	if budget.parts > MaxParts {
		return nil, fmt.Errorf("%s: %w: more than %d", path, ErrTooManyParts, MaxParts)
	}
	if _, err := Languages(p.Language); err != nil {
		return nil, fieldErr(path+".language", err)
	}
	if err := checkTexts(path, p.Language); err != nil {
		return nil, err
	}
	if p.Part == nil {
		return nil, fieldErr(path, ErrMissingPart)
	}
	out := []any{uint64(p.Disposition), p.Language, uint64(p.Part.Cardinality())}
	switch part := p.Part.(type) {
	case *NullPart:
	case *SinglePart:
		if err := checkTexts(path, part.ContentType); err != nil {
			return nil, err
		}
		out = append(out, part.ContentType, nonNil(part.Content))
	case *ExternalPart:
		if err := checkTexts(path, part.ContentType, part.URL, part.Description, part.Filename); err != nil {
			return nil, err
		}
		out = append(out, part.ContentType, part.URL, uint64(part.Expires), part.Size, uint64(part.EncAlg),
			nonNil(part.Key), nonNil(part.Nonce), nonNil(part.AAD), uint64(part.HashAlg), nonNil(part.ContentHash),
			part.Description, part.Filename)
	case *MultiPart:
		if part.Semantics > ProcessAll {
			return nil, fmt.Errorf("%s.partSemantics: %w: %d", path, ErrUnknownSemantics, part.Semantics)
		}
		if len(part.Parts) < 2 {
			return nil, fmt.Errorf("%s.parts: %w: got %d", path, ErrTooFewParts, len(part.Parts))
		}
		parts := make([]any, len(part.Parts))
		for i := range part.Parts {
			enc, err := part.Parts[i].encode(fmt.Sprintf("%s.parts[%d]", path, i), depth+1, budget)
			if err != nil {
				return nil, err
			}
			parts[i] = enc
		}
		out = append(out, uint64(part.Semantics), parts)
	default:
		return nil, fmt.Errorf("%s: %w: part type %T", path, ErrUnknownCardinality, p.Part)
	}
	return out, nil
}

func checkTexts(path string, texts ...string) error {
	for _, t := range texts {
		if !utf8.ValidString(t) {
			return fieldErr(path, ErrInvalidUTF8)
		}
	}
	return nil
}

// nonNil keeps empty byte strings from being written as null.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
