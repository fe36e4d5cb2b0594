package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/internal/tesths"
)

func TestEditConfigKeepsComments(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(lmbridge.ExampleConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	err := editConfig(path, []setting{
		{"homeserver.domain", "hs.example"},
		{"appservice.port", 1234},
		{"lm.allow_plain_http", true},
		{"lm.ip_range_blocklist", []string{}},
		{"bridge.permissions", map[string]string{"hs.example": "admin"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Homeserver.Domain != "hs.example" || cfg.AppService.Port != 1234 || !cfg.LM.AllowPlainHTTP ||
		len(cfg.Bridge.Permissions) != 1 || len(cfg.LM.IPRangeBlocklist) != 0 {
		t.Fatalf("edits not applied: %+v %+v %+v", cfg.Homeserver, cfg.AppService, cfg.Bridge)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "# The homeserver's server name") {
		t.Fatal("editing dropped the comments")
	}
	if err := editConfig(path, []setting{{"homeserver.nope", 1}}); err == nil {
		t.Fatal("setting an unknown key succeeded")
	}
}

func TestPrepareDirRefusesForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "precious"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := prepareDir(dir); err == nil {
		t.Fatal("prepareDir accepted a directory the demo did not make")
	}
	if _, err := os.Stat(filepath.Join(dir, "precious")); err != nil {
		t.Fatal("prepareDir removed a file it did not own")
	}
	demoDir := filepath.Join(t.TempDir(), "demo")
	if _, err := prepareDir(demoDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(demoDir, "old"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := prepareDir(demoDir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(demoDir, "old")); err == nil {
		t.Fatal("a second run did not start from a clean directory")
	}
}

// TestDemoCheck runs the whole demo against a real Dendrite: the operator's -e/-g flow, the homeserver with lmbridge
// registered, lmbridge running, a user that logs in with its password, and the bot joining on invite.
func TestDemoCheck(t *testing.T) {
	tesths.RequireKind(t, tesths.Dendrite)
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build lmbridge with")
	}
	bin := filepath.Join(t.TempDir(), "lmbridge")
	if out, err := exec.Command(goTool, "build", "-o", bin, "../lmbridge").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var logs, out bytes.Buffer
	ctx := zerolog.New(&logs).WithContext(context.Background())
	err = runDemo(ctx, options{
		lmbridge:   bin,
		dir:        filepath.Join(t.TempDir(), "demo"),
		homeserver: string(tesths.Dendrite),
		user:       "demo",
		check:      true,
	}, &out)
	if err != nil {
		t.Fatalf("demo failed: %v\nlogs:\n%s", err, logs.String())
	}
	for _, want := range []string{"Homeserver URL   http://127.0.0.1:", "@demo:hs1.localhost", "it joined the room"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the banner lacks %q:\n%s", want, out.String())
		}
	}
	// Once the bridge answers commands, the check includes a conversation with a second LM server, which the banner
	// then shows.
	if strings.Contains(out.String(), "Linked this room to the LM room") && !strings.Contains(out.String(), "LM user          @bob:") {
		t.Errorf("the room was linked but the banner shows no LM user:\n%s", out.String())
	}
	if !strings.Contains(logs.String(), "Stopped lmbridge") || !strings.Contains(logs.String(), "Stopped the homeserver") {
		t.Errorf("the stack was not stopped:\n%s", logs.String())
	}
}

// TestDemoCheckMIMI runs the demo's MIMI mode against a real Dendrite: the demo room is linked to a MIMI room lmbridge
// hubs, the user of a second MIMI provider (over mutual TLS on loopback) is added, and a message crosses each way.
func TestDemoCheckMIMI(t *testing.T) {
	tesths.RequireKind(t, tesths.Dendrite)
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build lmbridge with")
	}
	bin := filepath.Join(t.TempDir(), "lmbridge")
	if out, err := exec.Command(goTool, "build", "-o", bin, "../lmbridge").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var logs, out bytes.Buffer
	ctx := zerolog.New(&logs).WithContext(context.Background())
	err = runDemo(ctx, options{lmbridge: bin, dir: filepath.Join(t.TempDir(), "demo"), homeserver: string(tesths.Dendrite),
		user: "demo", check: true, mimi: true}, &out)
	if err != nil {
		t.Fatalf("demo failed: %v\nlogs:\n%s", err, logs.String())
	}
	for _, want := range []string{"Linked this room to the MIMI room mimi://" + bridgeMIMIDomain + "/r/",
		"MIMI user        mimi://" + peerMIMIDomain + "/u/bob"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the banner lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(logs.String(), "Stopped lmbridge") || !strings.Contains(logs.String(), "Stopped the homeserver") {
		t.Errorf("the stack was not stopped:\n%s", logs.String())
	}
}
