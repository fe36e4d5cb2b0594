package main

import (
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// setting is one config key the demo changes, by dotted path.
type setting struct {
	path  string
	value any
}

// editConfig changes keys of a YAML file in place through its node tree, so the comments the operator would read
// survive, exactly as if they had edited the file by hand.
func editConfig(path string, settings []setting) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("failed to read config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("failed to parse config: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return fmt.Errorf("config %s is not a YAML document", path)
	}
	for _, s := range settings {
		if err := setNode(doc.Content[0], strings.Split(s.path, "."), s.value); err != nil {
			return fmt.Errorf("failed to set %s: %w", s.path, err)
		}
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return fmt.Errorf("failed to encode config: %w", err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return fmt.Errorf("failed to write config: %w", err)
	}
	return nil
}

func setNode(node *yaml.Node, path []string, value any) error {
	if node.Kind != yaml.MappingNode {
		return fmt.Errorf("%s is not inside a mapping", path[0])
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		if node.Content[i].Value != path[0] {
			continue
		}
		if len(path) > 1 {
			return setNode(node.Content[i+1], path[1:], value)
		}
		var replacement yaml.Node
		if err := replacement.Encode(value); err != nil {
			return err
		}
		replacement.HeadComment = node.Content[i+1].HeadComment
		replacement.LineComment = node.Content[i+1].LineComment
		*node.Content[i+1] = replacement
		return nil
	}
	return fmt.Errorf("key %s not found", path[0])
}
