// Package e2e holds lmbridge's end-to-end tests: the real lmbridge binary, run as a subprocess against real
// homeservers started by internal/tesths. The package has no code of its own; its tests skip when no homeserver is
// installed (see tesths.Available).
package e2e
