package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/lmbridge/lmbridge"
)

// versionString is what -v prints: the release version, the commit the binary was built from when the Go toolchain
// recorded it, and the Go version.
func versionString() string {
	commit := ""
	if info, ok := debug.ReadBuildInfo(); ok {
		var revision, modified string
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if len(revision) > 12 {
			revision = revision[:12]
		}
		if revision != "" {
			commit = "commit " + revision + ", "
			if modified == "true" {
				commit += "+dirty"
			}
		}
	}
	return fmt.Sprintf("lmbridge %s (%s%s, %s/%s)", lmbridge.Version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
