// Package lmbridge holds what belongs to the project as a whole: the embedded example config and the version.
package lmbridge

import _ "embed"

// ExampleConfig is config.example.yaml as shipped; `lmbridge -e` writes it out and the config loader reads it for
// defaults, so a key that is missing from a user's file falls back to the documented value.
//
//go:embed config.example.yaml
var ExampleConfig string

// Version is overridden at link time (-ldflags "-X github.com/lmbridge/lmbridge.Version=...").
var Version = "0.1.0-dev"
