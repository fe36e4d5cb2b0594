package tesths

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// logTailBytes is how much of a server's log a start-up error carries.
const logTailBytes = 4096

// process is a homeserver child process with its output going to a log file.
type process struct {
	cmd     *exec.Cmd
	cmdPID  int
	logPath string
	done    chan struct{} // closed when the process has exited
	waitErr error

	stopOnce sync.Once
	stopErr  error
}

// startProcess starts cmd in its own process group with stdout and stderr appended to logPath. The process gets
// SIGKILL when the test binary (or demo) dies without stopping it, so a crash or a test timeout does not leak servers.
func startProcess(cmd *exec.Cmd, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("failed to open server log: %w", err)
	}
	defer logFile.Close()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err = cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start %s: %w", cmd.Path, err)
	}
	p := &process{cmd: cmd, cmdPID: cmd.Process.Pid, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the server and waits up to grace for it to exit, then kills its whole process group.
func (p *process) stop(grace time.Duration) error {
	p.stopOnce.Do(func() {
		pid := p.cmdPID
		if !p.exited() {
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
				p.stopErr = fmt.Errorf("failed to send SIGTERM to homeserver (pid %d): %w", pid, err)
			}
			// A paused server (Pause) would hold the SIGTERM until it is continued.
			_ = syscall.Kill(-pid, syscall.SIGCONT)
		}
		select {
		case <-p.done:
		case <-time.After(grace):
			p.stopErr = fmt.Errorf("homeserver (pid %d) ignored SIGTERM for %s and was killed", pid, grace)
		}
		// Also reaps anything the server forked, which shares its process group.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	})
	return p.stopErr
}

// signalGroup sends sig to the server's process group (the server and anything it forked).
func (p *process) signalGroup(sig syscall.Signal) error {
	if p.exited() {
		return fmt.Errorf("%w: homeserver (pid %d) has exited", ErrNotRunning, p.cmdPID)
	}
	if err := syscall.Kill(-p.cmdPID, sig); err != nil {
		return fmt.Errorf("failed to send %s to homeserver (pid %d): %w", sig, p.cmdPID, err)
	}
	return nil
}

// waitStopped waits until every thread of the server process is stopped: kill returns before a thread running on
// another CPU has taken the SIGSTOP, and until then it can still answer. Without /proc it returns at once.
func (p *process) waitStopped(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		running, err := runningThreads(p.cmdPID)
		if err != nil || running == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("homeserver (pid %d) still has %d running threads %s after SIGSTOP", p.cmdPID, running, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runningThreads counts the threads of pid that are not stopped, from /proc/PID/task/*/stat.
func runningThreads(pid int) (int, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	running := 0
	for _, task := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue // the thread has exited
		}
		// The state follows the command name, which is in parentheses and may itself hold spaces or parentheses.
		if i := bytes.LastIndexByte(data, ')'); i >= 0 && i+2 < len(data) {
			if state := data[i+2]; state != 'T' && state != 't' {
				running++
			}
		}
	}
	return running, nil
}

// waitReady polls /_matrix/client/versions until it answers 200, the process exits or ctx ends.
func (p *process) waitReady(ctx context.Context, baseURL string) error {
	// A poll must not outlive the process: something else holding the port may accept and never answer.
	pollCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-pollCtx.Done():
		}
	}()
	client := &http.Client{Timeout: 2 * time.Second}
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	for {
		req, err := http.NewRequestWithContext(pollCtx, http.MethodGet, baseURL+"/_matrix/client/versions", nil)
		if err != nil {
			return fmt.Errorf("failed to build readiness request: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// The answer may come from another server that took the port first; ours then exits shortly.
			if resp.StatusCode == http.StatusOK && p.ownsListener(baseURL) {
				return nil
			}
		}
		select {
		case <-p.done:
			return p.startErr(fmt.Errorf("%w (%v)", ErrExited, p.waitErr))
		case <-ctx.Done():
			return p.startErr(fmt.Errorf("homeserver did not answer %s/_matrix/client/versions: %w", baseURL, ctx.Err()))
		case <-ticker.C:
		}
	}
}

// startErr wraps a start-up failure with the tail of the server's log, which is where the reason is.
func (p *process) startErr(err error) error {
	tail := logTail(p.logPath, logTailBytes)
	// Go says "address already in use", Twisted "Address already in use".
	if strings.Contains(strings.ToLower(tail), "address already in use") {
		err = fmt.Errorf("%w: %w", ErrPortInUse, err)
	}
	return fmt.Errorf("%w; last lines of %s:\n%s", err, p.logPath, tail)
}

// logTail returns up to n bytes from the end of the file at path, starting at a line boundary.
func logTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	offset := max(info.Size()-n, 0)
	buf := make([]byte, info.Size()-offset)
	if _, err = f.ReadAt(buf, offset); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Sprintf("(failed to read log: %v)", err)
	}
	if offset > 0 {
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	return string(buf)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and that no earlier call of this process
// returned. Tests choose a port before the server that binds it starts (an application service's port goes into the
// registration the homeserver reads first), so two picks must never be the same port, and the port is taken below
// Linux's ephemeral range (32768 and up): in that range any outgoing connection of a busy machine, the homeservers'
// own among them, can take it meanwhile. A CI run once gave the application service and Dendrite the same port.
func FreePort() (int, error) {
	portsLock.Lock()
	defer portsLock.Unlock()
	for range 200 {
		port := 20000 + rand.IntN(12000)
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		_ = l.Close()
		portsGiven[port] = true
		return port, nil
	}
	return 0, errors.New("failed to find a free port on 127.0.0.1 between 20000 and 32000")
}

var (
	portsLock  sync.Mutex
	portsGiven = make(map[int]bool)
)

func pickPort(port int) (int, error) {
	if port != 0 {
		return port, nil
	}
	return FreePort()
}

func loopbackURL(port int) string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// limitedBuffer keeps the first 64 KiB written to it, enough for a set-up command's error output.
type limitedBuffer struct {
	bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := 64<<10 - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// ownsListener reports whether the socket listening at baseURL's port belongs to the process. It reads /proc and
// answers true when it cannot tell (no /proc), so it only ever rules out a server that is provably someone else's.
func (p *process) ownsListener(baseURL string) bool {
	u, err := url.Parse(baseURL)
	if err != nil {
		return true
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return true
	}
	inode, err := listeningSocketInode(port)
	if err != nil || inode == "" {
		return true
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", p.cmdPID)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return false
	}
	want := "socket:[" + inode + "]"
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && target == want {
			return true
		}
	}
	return false
}

// listeningSocketInode finds the inode of the TCP socket listening on 127.0.0.1:port in /proc/net/tcp.
func listeningSocketInode(port int) (string, error) {
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return "", err
	}
	// Addresses are hex, the IPv4 address in host (little-endian) byte order; state 0A is LISTEN.
	local := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(data), "\n")[1:] {
		fields := strings.Fields(line)
		if len(fields) >= 10 && fields[1] == local && fields[3] == "0A" {
			return fields[9], nil
		}
	}
	return "", nil
}
