package config

import (
	"fmt"
	"strings"
)

// TemplatePlaceholder marks where the encoded name goes in appservice.username_template and alias_template. It looks
// like Go's text/template on purpose, as in the mautrix bridges' configs, but nothing else of text/template is
// accepted: a template has to be reversible, so that a localpart can be parsed back into the name.
const TemplatePlaceholder = "{{.}}"

// SplitTemplate returns what comes before and after the one placeholder of a localpart template.
func SplitTemplate(template string) (prefix, suffix string, err error) {
	prefix, suffix, found := strings.Cut(template, TemplatePlaceholder)
	switch {
	case !found:
		return "", "", fmt.Errorf("must contain %s exactly once, got %q", TemplatePlaceholder, template)
	case strings.Contains(suffix, TemplatePlaceholder):
		return "", "", fmt.Errorf("must contain %s exactly once, got %q", TemplatePlaceholder, template)
	case prefix == "" && suffix == "":
		// An exclusive namespace of every user on the homeserver would lock all human users out.
		return "", "", fmt.Errorf("needs a fixed prefix or suffix around %s, got %q", TemplatePlaceholder, template)
	}
	return prefix, suffix, nil
}

// GhostLocalpart is the localpart of the ghost for name, an encoded LM user ID such as bob=remote.example.
func (as AppService) GhostLocalpart(name string) string {
	return strings.Replace(as.UsernameTemplate, TemplatePlaceholder, name, 1)
}

// ParseGhostLocalpart reverses GhostLocalpart; ok is false for a localpart outside the ghost namespace.
func (as AppService) ParseGhostLocalpart(localpart string) (name string, ok bool) {
	return parseTemplate(as.UsernameTemplate, localpart)
}

// AliasLocalpart is the localpart of a bridge-owned alias for name.
func (as AppService) AliasLocalpart(name string) string {
	return strings.Replace(as.AliasTemplate, TemplatePlaceholder, name, 1)
}

// ParseAliasLocalpart reverses AliasLocalpart; ok is false for an alias outside the bridge's namespace.
func (as AppService) ParseAliasLocalpart(localpart string) (name string, ok bool) {
	return parseTemplate(as.AliasTemplate, localpart)
}

func parseTemplate(template, localpart string) (string, bool) {
	prefix, suffix, err := SplitTemplate(template)
	if err != nil || len(localpart) <= len(prefix)+len(suffix) {
		return "", false
	}
	if !strings.HasPrefix(localpart, prefix) || !strings.HasSuffix(localpart, suffix) {
		return "", false
	}
	return localpart[len(prefix) : len(localpart)-len(suffix)], true
}
