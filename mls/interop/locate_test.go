package interop_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lmbridge/lmbridge/mls/interop"
)

// TestLocateWithoutInstall checks that a harness directory without node_modules is reported as unavailable with
// the command that installs it, which is what the tests' skip (or failure, with EnvRequire=1) message shows.
func TestLocateWithoutInstall(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "harness.mjs"), []byte("// empty\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(interop.EnvDir, dir)
	node := filepath.Join(dir, "node")
	if err := os.WriteFile(node, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(interop.EnvNode, node)
	_, err := interop.Locate()
	if !errors.Is(err, interop.ErrUnavailable) || !strings.Contains(err.Error(), interop.InstallCommand) {
		t.Fatalf("Locate without node_modules: %v, want ErrUnavailable naming %q", err, interop.InstallCommand)
	}

	t.Setenv(interop.EnvNode, filepath.Join(dir, "no-such-node"))
	if _, err = interop.Locate(); !errors.Is(err, interop.ErrUnavailable) {
		t.Fatalf("Locate with a missing node: %v, want ErrUnavailable", err)
	}
}
