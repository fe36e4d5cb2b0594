package content

import (
	"fmt"
	"strings"
)

// The language field is "an empty string or a comma-separated list of one or more
// Language-tags" (RFC 5646). Receivers must tolerate tags they do not recognise, so only
// well-formedness (the RFC 5646 ABNF) is checked, never registry validity.

// irregularTags are the grandfathered tags that do not fit the langtag production.
var irregularTags = map[string]bool{
	"en-gb-oed": true, "i-ami": true, "i-bnn": true, "i-default": true, "i-enochian": true,
	"i-hak": true, "i-klingon": true, "i-lux": true, "i-mingo": true, "i-navajo": true,
	"i-pwn": true, "i-tao": true, "i-tay": true, "i-tsu": true, "sgn-be-fr": true,
	"sgn-be-nl": true, "sgn-ch-de": true,
}

// Languages splits a language field into its tags; an empty field gives none. Whitespace
// around the commas is tolerated on input.
func Languages(field string) ([]string, error) {
	if field == "" {
		return nil, nil
	}
	items := strings.Split(field, ",")
	tags := make([]string, 0, len(items))
	for _, item := range items {
		tag := strings.TrimSpace(item)
		if !WellFormedLanguageTag(tag) {
			return nil, fmt.Errorf("%w: %q", ErrBadLanguage, tag)
		}
		tags = append(tags, tag)
	}
	return tags, nil
}

// JoinLanguages builds a language field from tags, checking each.
func JoinLanguages(tags ...string) (string, error) {
	for _, t := range tags {
		if !WellFormedLanguageTag(t) {
			return "", fmt.Errorf("%w: %q", ErrBadLanguage, t)
		}
	}
	return strings.Join(tags, ","), nil
}

// WellFormedLanguageTag reports whether tag is a well-formed RFC 5646 Language-Tag.
func WellFormedLanguageTag(tag string) bool {
	if tag == "" || len(tag) > 255 {
		return false
	}
	lower := strings.ToLower(tag)
	if irregularTags[lower] {
		return true
	}
	subtags := strings.Split(lower, "-")
	for _, s := range subtags {
		if len(s) < 1 || len(s) > 8 || !isAlnum(s) {
			return false
		}
	}
	if subtags[0] == "x" {
		return privateUse(subtags)
	}
	return langtag(subtags)
}

func langtag(st []string) bool {
	i := 0
	// language = 2*3ALPHA ["-" extlang] / 4ALPHA / 5*8ALPHA
	if !isAlpha(st[0]) || len(st[0]) < 2 {
		return false
	}
	i++
	if len(st[0]) <= 3 {
		// extlang = 3ALPHA *2("-" 3ALPHA)
		for n := 0; n < 3 && i < len(st) && len(st[i]) == 3 && isAlpha(st[i]); n++ {
			i++
		}
	}
	if i < len(st) && len(st[i]) == 4 && isAlpha(st[i]) { // script
		i++
	}
	if i < len(st) && ((len(st[i]) == 2 && isAlpha(st[i])) || (len(st[i]) == 3 && isDigits(st[i]))) { // region
		i++
	}
	for i < len(st) && isVariant(st[i]) {
		i++
	}
	for i < len(st) && len(st[i]) == 1 && st[i] != "x" { // extension
		i++
		n := 0
		for i < len(st) && len(st[i]) >= 2 {
			i++
			n++
		}
		if n == 0 {
			return false
		}
	}
	if i < len(st) && st[i] == "x" {
		return privateUse(st[i:])
	}
	return i == len(st)
}

// privateUse checks "x" 1*("-" (1*8alphanum)); lengths were checked by the caller.
func privateUse(st []string) bool { return len(st) >= 2 }

func isVariant(s string) bool {
	return (len(s) >= 5 && len(s) <= 8) || (len(s) == 4 && s[0] >= '0' && s[0] <= '9')
}

func isAlpha(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'a' || s[i] > 'z' {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
