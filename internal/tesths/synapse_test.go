package tesths

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

func TestSweepSynapseData(t *testing.T) {
	parent := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatalf("failed to run true: %v", err)
	}
	dirs := map[string]string{ // name -> homeserver.pid content ("" for none)
		"hs-dead":     strconv.Itoa(dead.Process.Pid),
		"hs-alive":    strconv.Itoa(os.Getpid()),
		"hs-starting": "",
		"unrelated":   strconv.Itoa(dead.Process.Pid),
	}
	for name, pid := range dirs {
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if pid != "" {
			if err := os.WriteFile(filepath.Join(dir, "homeserver.pid"), []byte(pid+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	sweepSynapseData(parent)
	for name := range dirs {
		_, err := os.Stat(filepath.Join(parent, name))
		if gone, want := os.IsNotExist(err), name == "hs-dead"; gone != want {
			t.Errorf("%s: removed=%v, want removed=%v", name, gone, want)
		}
	}
}
