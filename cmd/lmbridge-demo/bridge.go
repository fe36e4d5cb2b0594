package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// bridgeProcess is the lmbridge binary running as a child, its output going to a log file.
type bridgeProcess struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

// runLmbridge runs the lmbridge binary to completion, for -e and -g, and returns what it printed.
func runLmbridge(ctx context.Context, bin, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("lmbridge %v failed: %w: %s", args, err, out)
	}
	return string(out), nil
}

// startBridge starts lmbridge in its own process group, so a Ctrl-C at the terminal reaches only the demo, which
// then stops the bridge before the homeserver. Pdeathsig kills it if the demo itself dies.
func startBridge(bin, dir, logPath string, args ...string) (*bridgeProcess, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("failed to open bridge log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start lmbridge: %w", err)
	}
	p := &bridgeProcess{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// waitReady polls the bridge's readiness endpoint until it answers 200.
func (p *bridgeProcess) waitReady(ctx context.Context, url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("lmbridge exited during start-up (%v); last lines of %s:\n%s", p.waitErr, p.logPath, tail(p.logPath))
		case <-ctx.Done():
			return fmt.Errorf("lmbridge did not answer %s: %w; last lines of %s:\n%s", url, ctx.Err(), p.logPath, tail(p.logPath))
		case <-ticker.C:
		}
	}
}

// stop sends SIGTERM by PID and waits up to grace, then kills the process group.
func (p *bridgeProcess) stop(grace time.Duration) error {
	pid := p.cmd.Process.Pid
	select {
	case <-p.done:
		return p.exitErr()
	default:
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("failed to send SIGTERM to lmbridge (pid %d): %w", pid, err)
	}
	select {
	case <-p.done:
		return p.exitErr()
	case <-time.After(grace):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("lmbridge (pid %d) ignored SIGTERM for %s and was killed", pid, grace)
	}
}

func (p *bridgeProcess) exitErr() error {
	if p.waitErr != nil {
		return fmt.Errorf("lmbridge exited: %w", p.waitErr)
	}
	return nil
}

// tail is the end of a log file, for error messages.
func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const keep = 3000
	if len(data) > keep {
		data = data[len(data)-keep:]
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	return string(data)
}
