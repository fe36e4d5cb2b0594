//go:build goolm

package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// envRequireJSClient, when "1", makes a missing Node or matrix-js-sdk install a failure instead of a skip
// (scripts/test.sh sets it after npm ci).
const envRequireJSClient = "LMBRIDGE_TEST_REQUIRE_JSCLIENT"

// jsClient is one Matrix device of matrix-js-sdk with its Rust crypto, in a Node process of its own
// (e2e/jsclient/client.mjs), driven by JSON lines: a command on stdin, its answer on stdout.
type jsClient struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *lockedBuffer
}

// startJSClient starts a client process, skipping the test (or failing it under envRequireJSClient) when Node or the
// npm packages are missing.
func startJSClient(t *testing.T, name string) *jsClient {
	t.Helper()
	node, err := exec.LookPath("node")
	dir, _ := filepath.Abs("jsclient")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk", "package.json"))
	}
	if err != nil {
		msg := fmt.Sprintf("matrix-js-sdk is not available (%v): install Node 20 and run npm ci --prefix e2e/jsclient", err)
		if os.Getenv(envRequireJSClient) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	c := &jsClient{t: t, name: name, lines: make(chan string, 16), stderr: &lockedBuffer{}}
	c.cmd = exec.Command(node, filepath.Join(dir, "client.mjs"))
	c.cmd.Dir = dir
	c.cmd.Stderr = c.stderr
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err = c.cmd.Start(); err != nil {
		t.Fatalf("failed to start node: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	t.Cleanup(c.close)
	return c
}

func (c *jsClient) close() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.stdin.Close()
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	if c.t.Failed() {
		log := c.stderr.String()
		if len(log) > 6000 {
			log = log[len(log)-6000:]
		}
		c.t.Logf("stderr of js client %s:\n%s", c.name, log)
	}
	c.cmd = nil
}

var errJSClientGone = errors.New("the js client exited")

// call sends one command and returns its answer; an answer with ok false is an error.
func (c *jsClient) call(cmd string, args map[string]any) (map[string]any, error) {
	msg := map[string]any{"cmd": cmd}
	for k, v := range args {
		msg[k] = v
	}
	line, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	if _, err = c.stdin.Write(append(line, '\n')); err != nil {
		return nil, fmt.Errorf("failed to write to the js client: %w", err)
	}
	select {
	case answer, ok := <-c.lines:
		if !ok {
			return nil, errJSClientGone
		}
		var resp map[string]any
		if err = json.Unmarshal([]byte(answer), &resp); err != nil {
			return nil, fmt.Errorf("bad answer %q: %w", answer, err)
		}
		if ok, _ := resp["ok"].(bool); !ok {
			return resp, fmt.Errorf("%s failed: %v", cmd, resp["error"])
		}
		return resp, nil
	case <-time.After(3 * time.Minute):
		return nil, fmt.Errorf("no answer to %s in 3 minutes", cmd)
	}
}

// must is call, failing the test on an error.
func (c *jsClient) must(cmd string, args map[string]any) map[string]any {
	c.t.Helper()
	resp, err := c.call(cmd, args)
	if err != nil {
		c.t.Fatalf("js client %s: %v", c.name, err)
	}
	return resp
}

func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}
