package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lmbridge/lmbridge"
	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/config"
)

// runCLI runs cli in dir and returns its exit code and output.
func runCLI(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	t.Chdir(dir)
	var stdout, stderr bytes.Buffer
	code := cli(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// editedConfig writes the example config with the homeserver domain changed, as an operator would.
func editedConfig(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "config.yaml")
	edited := strings.Replace(lmbridge.ExampleConfig, "domain: "+config.ExampleDomain, "domain: hs.example", 1)
	if edited == lmbridge.ExampleConfig {
		t.Fatal("the example config has no example domain to replace")
	}
	if err := os.WriteFile(path, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExampleConfigWritten(t *testing.T) {
	dir := t.TempDir()
	code, stdout, stderr := runCLI(t, dir, "-e", "-c", "my.yaml")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	data, err := os.ReadFile(filepath.Join(dir, "my.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != lmbridge.ExampleConfig {
		t.Fatal("-e did not write the embedded example config")
	}
	if !strings.Contains(stdout, "lmbridge -g -c my.yaml") {
		t.Errorf("-e does not say what to do next: %s", stdout)
	}
}

func TestExampleConfigRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte("mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, dir, "-e")
	if code != exitFileExists {
		t.Fatalf("exit %d, want %d", code, exitFileExists)
	}
	if !strings.Contains(stderr, "config.yaml exists already") {
		t.Errorf("stderr = %q", stderr)
	}
	if data, _ := os.ReadFile(path); string(data) != "mine\n" {
		t.Fatal("-e overwrote an existing config")
	}
}

func TestRegistrationRefusesExampleDomain(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runCLI(t, dir, "-e"); code != exitOK {
		t.Fatal(stderr)
	}
	code, _, stderr := runCLI(t, dir, "-g")
	if code != exitExampleDomain {
		t.Fatalf("exit %d, want %d", code, exitExampleDomain)
	}
	if !strings.Contains(stderr, "homeserver.domain") {
		t.Errorf("stderr does not name the key: %q", stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "registration.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a registration was written for the example domain")
	}
}

func TestRegistrationTokensStable(t *testing.T) {
	dir := t.TempDir()
	cfgPath := editedConfig(t, dir)
	before, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, dir, "-g", "-c", "config.yaml", "-r", "reg.yaml")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "with new tokens") {
		t.Errorf("stdout = %q", stdout)
	}
	if stderr != "" {
		t.Errorf("the example's listener settings drew warnings: %q", stderr)
	}
	first, err := appservice.ReadRegistration(filepath.Join(dir, "reg.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, dir, "-g", "-c", "config.yaml", "-r", "reg.yaml")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "keeping its as_token and hs_token") {
		t.Errorf("stdout = %q", stdout)
	}
	second, err := appservice.ReadRegistration(filepath.Join(dir, "reg.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if first.AppToken != second.AppToken || first.ServerToken != second.ServerToken {
		t.Fatal("-g changed the tokens")
	}
	if after, _ := os.ReadFile(cfgPath); !bytes.Equal(before, after) {
		t.Fatal("-g rewrote the config")
	}
}

func TestMissingFilesSayHowToCreateThem(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runCLI(t, dir, "-g", "-c", "nope.yaml")
	if code != exitBadConfig || !strings.Contains(stderr, "nope.yaml not found") || !strings.Contains(stderr, "lmbridge -e -c nope.yaml") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	editedConfig(t, dir)
	code, _, stderr = runCLI(t, dir, "-r", "reg.yaml")
	if code != exitBadConfig || !strings.Contains(stderr, "reg.yaml not found") || !strings.Contains(stderr, "lmbridge -g") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestRunRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("homeserver: {domain: 'https://x'}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, dir)
	if code != exitBadConfig || !strings.Contains(stderr, "homeserver.domain") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	dir = t.TempDir()
	editedConfig(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "registration.yaml"), []byte("id: lmbridge\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(t, dir)
	if code != exitBadConfig || !strings.Contains(stderr, "no as_token or hs_token") {
		t.Fatalf("a registration without tokens: exit %d: %s", code, stderr)
	}
}

func TestRunRefusesStaleRegistration(t *testing.T) {
	dir := t.TempDir()
	cfgPath := editedConfig(t, dir)
	if code, _, stderr := runCLI(t, dir, "-g"); code != exitOK {
		t.Fatal(stderr)
	}
	data, _ := os.ReadFile(cfgPath)
	edited := strings.Replace(string(data), "username_template: lm_", "username_template: ghost_", 1)
	edited = strings.Replace(edited, "format: auto", "format: json", 1)
	if err := os.WriteFile(cfgPath, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := runCLI(t, dir); code != exitBadConfig {
		t.Fatalf("exit %d, want %d", code, exitBadConfig)
	}
}

func TestFlags(t *testing.T) {
	dir := t.TempDir()
	if code, stdout, _ := runCLI(t, dir, "-v"); code != exitOK || !strings.HasPrefix(stdout, "lmbridge "+lmbridge.Version) {
		t.Errorf("-v: exit %d, %q", code, stdout)
	}
	if code, stdout, _ := runCLI(t, dir, "--help"); code != exitOK || !strings.Contains(stdout, "--generate-registration") {
		t.Errorf("--help: exit %d, %q", code, stdout)
	}
	if code, _, stderr := runCLI(t, dir, "-e", "-g"); code != exitUsage || !strings.Contains(stderr, "separate steps") {
		t.Errorf("-e -g: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runCLI(t, dir, "--frobnicate"); code != exitUsage || !strings.Contains(stderr, "frobnicate") {
		t.Errorf("unknown flag: exit %d, %q", code, stderr)
	}
	if code, _, _ := runCLI(t, dir, "config.yaml"); code != exitUsage {
		t.Errorf("stray argument: exit %d", code)
	}
	if code, _, _ := runCLI(t, dir, "--generate-example-config", "--config", "long.yaml"); code != exitOK {
		t.Errorf("long flags: exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "long.yaml")); err != nil {
		t.Error(err)
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(config.Logging{MinLevel: "warn", Format: "auto"}, &buf)
	log.Info().Msg("Hidden")
	log.Warn().Str("room_id", "!r:hs.example").Msg("Shown")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("auto on a non-terminal is not one JSON line: %q: %v", buf.String(), err)
	}
	if line["message"] != "Shown" || line["level"] != "warn" || line["room_id"] != "!r:hs.example" || line["time"] == nil {
		t.Fatalf("line = %v", line)
	}
	buf.Reset()
	log = newLogger(config.Logging{MinLevel: "debug", Format: "pretty"}, &buf)
	log.Debug().Str("k", "v").Msg("Pretty")
	if out := buf.String(); !regexp.MustCompile(`DBG Pretty k=v`).MatchString(out) || strings.Contains(out, "\x1b[") {
		t.Fatalf("pretty output to a non-terminal = %q", out)
	}
}

// TestBinary runs the real binary through the operator's first steps.
func TestBinary(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the binary with")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "lmbridge")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	exitCode := func(args ...string) (int, string) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	for _, step := range []struct {
		args []string
		code int
	}{
		{[]string{"-v"}, exitOK},
		{[]string{"-c", "c.yaml", "-r", "r.yaml"}, exitBadConfig},
		{[]string{"-e", "-c", "c.yaml"}, exitOK},
		{[]string{"-e", "-c", "c.yaml"}, exitFileExists},
		{[]string{"-g", "-c", "c.yaml", "-r", "r.yaml"}, exitExampleDomain},
		{[]string{"-c", "c.yaml", "-r", "r.yaml"}, exitExampleDomain},
	} {
		if code, out := exitCode(step.args...); code != step.code {
			t.Fatalf("lmbridge %s: exit %d, want %d\n%s", strings.Join(step.args, " "), code, step.code, out)
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, "c.yaml"))
	edited := strings.Replace(string(data), "domain: "+config.ExampleDomain, "domain: hs.example", 1)
	if err := os.WriteFile(filepath.Join(dir, "c.yaml"), []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := exitCode("-g", "-c", "c.yaml", "-r", "r.yaml"); code != exitOK {
		t.Fatalf("-g: exit %d\n%s", code, out)
	}
	reg, err := appservice.ReadRegistration(filepath.Join(dir, "r.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if reg.Namespaces.UserIDs[1].Regex != `^@lm_.+:hs\.example$` {
		t.Fatalf("ghost namespace = %q", reg.Namespaces.UserIDs[1].Regex)
	}
}
