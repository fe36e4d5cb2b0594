package config

import (
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/lmbridge/lmbridge"
)

func exampleRoot(t *testing.T) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(lmbridge.ExampleConfig), &doc); err != nil {
		t.Fatalf("config.example.yaml does not parse: %v", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		t.Fatalf("config.example.yaml is not a mapping")
	}
	return doc.Content[0]
}

// walkKeys calls fn for every mapping key below node, with its dotted path.
func walkKeys(node *yaml.Node, path string, fn func(path string, key *yaml.Node)) {
	if node.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, value := node.Content[i], node.Content[i+1]
		p := key.Value
		if path != "" {
			p = path + "." + key.Value
		}
		fn(p, key)
		walkKeys(value, p, fn)
	}
}

func TestExampleEveryKeyHasComment(t *testing.T) {
	root := exampleRoot(t)
	n := 0
	walkKeys(root, "", func(path string, key *yaml.Node) {
		n++
		if strings.TrimSpace(key.HeadComment) == "" {
			t.Errorf("config.example.yaml: key %s has no comment above it", path)
		}
	})
	if n < 30 {
		t.Fatalf("walked only %d keys; the walk is broken", n)
	}
}

// TestExampleHasEveryField fails when a Config field has no key in the example config, where it would go
// undocumented and without a default.
func TestExampleHasEveryField(t *testing.T) {
	keys := map[string]bool{}
	walkKeys(exampleRoot(t), "", func(path string, _ *yaml.Node) { keys[path] = true })
	var fields []string
	collectFields(reflect.TypeFor[Config](), "", &fields)
	if len(fields) < 30 {
		t.Fatalf("found only %d fields; the reflection walk is broken", len(fields))
	}
	for _, f := range fields {
		if !keys[f] {
			t.Errorf("config field %s has no key in config.example.yaml", f)
		}
	}
}

func collectFields(typ reflect.Type, path string, out *[]string) {
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		p := name
		if path != "" {
			p = path + "." + name
		}
		*out = append(*out, p)
		if f.Type.Kind() == reflect.Struct {
			collectFields(f.Type, p, out)
		}
	}
}

func TestExampleParsesStrictlyAndValidates(t *testing.T) {
	cfg, err := Example()
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the example config does not validate: %v", err)
	}
	if err := cfg.CheckNotExample(); err != ErrExampleDomain {
		t.Fatalf("CheckNotExample on the example = %v, want ErrExampleDomain", err)
	}
	if len(cfg.Bridge.Permissions) != 3 {
		t.Fatalf("example permissions = %v", cfg.Bridge.Permissions)
	}
}
