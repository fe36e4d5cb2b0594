package interop

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
)

const (
	// EnvRequire, when "1", turns a missing Node or ts-mls install into a test failure instead of a skip
	// (scripts/test.sh sets it after running npm ci).
	EnvRequire = "LMBRIDGE_TEST_REQUIRE_TSMLS"
	// EnvNode names the node binary to run; by default node is looked up on PATH.
	EnvNode = "LMBRIDGE_NODE"
	// EnvDir names the directory holding harness.mjs and its node_modules; by default the tsmls directory beside
	// this package's source.
	EnvDir = "LMBRIDGE_TSMLS_DIR"
)

// Location is where the harness runs from.
type Location struct {
	// Node is the node binary.
	Node string
	// Dir is the directory holding harness.mjs, package-lock.json and node_modules.
	Dir string
	// Script is harness.mjs in Dir.
	Script string
}

// InstallCommand is the command that installs the harness's packages, run from the repository's root.
const InstallCommand = "npm ci --prefix mls/interop/tsmls"

// Locate finds Node and the harness directory. The error wraps ErrUnavailable and says what to install when either
// is missing.
func Locate() (Location, error) {
	var loc Location
	loc.Node = os.Getenv(EnvNode)
	if loc.Node == "" {
		var err error
		if loc.Node, err = exec.LookPath("node"); err != nil {
			return loc, fmt.Errorf("%w: node is not on PATH (install Node 20 or later, or set %s)", ErrUnavailable, EnvNode)
		}
	} else if _, err := os.Stat(loc.Node); err != nil {
		return loc, fmt.Errorf("%w: %s=%s: %w", ErrUnavailable, EnvNode, loc.Node, err)
	}
	loc.Dir = os.Getenv(EnvDir)
	if loc.Dir == "" {
		dir, err := sourceDir()
		if err != nil {
			return loc, err
		}
		loc.Dir = filepath.Join(dir, "tsmls")
	}
	loc.Script = filepath.Join(loc.Dir, "harness.mjs")
	if _, err := os.Stat(loc.Script); err != nil {
		return loc, fmt.Errorf("%w: no harness at %s: %w", ErrUnavailable, loc.Script, err)
	}
	pkg := filepath.Join(loc.Dir, "node_modules", "ts-mls", "package.json")
	if _, err := os.Stat(pkg); errors.Is(err, fs.ErrNotExist) {
		return loc, fmt.Errorf("%w: ts-mls is not installed in %s (run %s from the repository's root)", ErrUnavailable, loc.Dir, InstallCommand)
	} else if err != nil {
		return loc, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return loc, nil
}

// sourceDir is the directory of this package's source, where tsmls/ lives; tests run from a source tree. Built with
// -trimpath the source path is not absolute, so it is found from the working directory instead: the tests of any
// package of the module run in that package's directory, below the module's root.
func sourceDir() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		return filepath.Dir(file), nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("%w: cannot tell where the interop package's source is (set %s): %w", ErrUnavailable, EnvDir, err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if mod, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath.Match(mod) {
			return filepath.Join(dir, "mls", "interop"), nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("%w: no lmbridge module above %s (set %s)", ErrUnavailable, wd, EnvDir)
		}
	}
}

var modulePath = regexp.MustCompile(`(?m)^module\s+github\.com/lmbridge/lmbridge\s*$`)
