//go:build goolm

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/lmbridge/lmbridge/internal/tesths"
)

// TestLMBridgeBinaryKeepsItsDevice runs the lmbridge binary, built with goolm, with encryption.allow on Dendrite:
// the first start creates the bot's device, a restart logs the same device in again.
func TestLMBridgeBinaryKeepsItsDevice(t *testing.T) {
	tesths.RequireKind(t, tesths.Dendrite)
	bin := filepath.Join(t.TempDir(), "lmbridge")
	out, err := exec.Command("go", "build", "-tags", "goolm", "-o", bin, "github.com/lmbridge/lmbridge/cmd/lmbridge").CombinedOutput()
	if err != nil {
		t.Fatalf("go build -tags goolm failed: %v\n%s", err, out)
	}
	b := newLMBridge(t, tesths.DefaultServerName)
	b.Bin = bin
	hs := tesths.StartT(t, tesths.Dendrite, tesths.Options{ServerName: b.ServerName, Registrations: [][]byte{b.RegYAML}})
	b.SetHomeserver(t, hs)
	addEncryptionConfig(t, b.ConfigPath)

	b.Start(t)
	first := startedDevice(t, b.LogPath, 1)
	if first.Existing {
		t.Fatalf("the first start found an existing device: %+v", first)
	}
	b.Stop(t)
	b.Start(t)
	second := startedDevice(t, b.LogPath, 2)
	if !second.Existing || second.DeviceID != first.DeviceID {
		t.Fatalf("after the restart the device is %+v, was %+v", second, first)
	}
}

func addEncryptionConfig(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err = yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["encryption"] = map[string]any{"allow": true, "pickle_key": "e2e-pickle-key-0123456789"}
	if data, err = yaml.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err = os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

type deviceStart struct {
	DeviceID string `json:"device_id"`
	Existing bool   `json:"existing_device"`
}

// startedDevice finds the n-th "End-to-bridge encryption started" line of lmbridge's JSON log.
func startedDevice(t *testing.T, logPath string, n int) deviceStart {
	t.Helper()
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var found []deviceStart
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, "End-to-bridge encryption started") {
			continue
		}
		var d deviceStart
		if err = json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		found = append(found, d)
	}
	if len(found) < n {
		t.Fatalf("%d encryption starts in the log, want %d", len(found), n)
	}
	return found[n-1]
}
