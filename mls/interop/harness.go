// Package interop drives ts-mls (github.com/LukaJCB/ts-mls 1.6.4, an independent TypeScript implementation of
// RFC 9420) so that tests can prove lmbridge's MLS library against it: every value crosses as its exact RFC 9420
// wire bytes (an MLSMessage, or a ratchet tree), so the Go library reads what ts-mls wrote and the other way round.
//
// ts-mls runs in a Node subprocess, tsmls/harness.mjs, that answers one JSON line per request line; its packages are
// installed from tsmls/package-lock.json by `npm ci --prefix mls/interop/tsmls` (scripts/test.sh does this). The
// package is test support, but an ordinary package so that any package's tests can import it; StartT is the entry
// point for tests and skips them when Node or the installed packages are missing, unless EnvRequire=1.
package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

var (
	// ErrUnavailable is returned by Start when Node or the harness's installed packages cannot be found.
	ErrUnavailable = errors.New("ts-mls harness unavailable")
	// ErrExited is returned for a request the harness can no longer answer because its process has ended.
	ErrExited = errors.New("ts-mls harness exited")
	// ErrRequest is wrapped by every error the harness answered (a request ts-mls or the harness refused).
	ErrRequest = errors.New("ts-mls refused the request")
	// ErrProtocol is returned when the harness answers with something other than a JSON answer line.
	ErrProtocol = errors.New("ts-mls harness broke its protocol")
)

// stopTimeout bounds how long Close waits for the harness to exit after its stdin closes, before killing it.
const stopTimeout = 5 * time.Second

// stderrKeep is how much of the harness's stderr is kept for error messages.
const stderrKeep = 16 << 10

// Harness is a running ts-mls harness process. Its methods may be called from several goroutines; the harness
// handles requests one at a time, in the order they are written.
type Harness struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *tail

	writeMu sync.Mutex
	nextID  uint64

	mu      sync.Mutex
	waiting map[uint64]chan answer
	readErr error // set once the reader stops; guarded by mu

	exited    chan struct{} // closed when the process has been waited for
	closeOnce sync.Once
	closeErr  error
}

type answer struct {
	ID     *uint64         `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *string         `json:"error"`
}

// Start locates Node and the harness (see Locate), starts the harness and checks that it answers. The process lives
// until Close, not until ctx ends; ctx bounds only the start-up.
func Start(ctx context.Context) (*Harness, error) {
	loc, err := Locate()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(loc.Node, loc.Script)
	cmd.Dir = loc.Dir
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	// Its own process group, so a ^C to the tests does not reach it before Close; SIGKILL when the test binary dies
	// without closing it, so no harness outlives the tests.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	h := &Harness{cmd: cmd, stderr: &tail{max: stderrKeep}, waiting: map[uint64]chan answer{}, exited: make(chan struct{})}
	cmd.Stderr = h.stderr
	if h.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("failed to make the harness's stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("failed to make the harness's stdout: %w", err)
	}
	if err = cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start %s %s: %w", loc.Node, loc.Script, err)
	}
	go h.read(stdout)
	if _, err = h.Ping(ctx); err != nil {
		_ = h.Close()
		return nil, fmt.Errorf("the ts-mls harness did not answer: %w", err)
	}
	return h, nil
}

// PID is the harness process's ID.
func (h *Harness) PID() int { return h.cmd.Process.Pid }

// Stderr returns the end of what the harness wrote to stderr (ts-mls's and Node's complaints).
func (h *Harness) Stderr() string { return h.stderr.String() }

// Close ends the harness: it closes its stdin, which makes it exit once it has answered what it was sent, and kills
// its process by PID if it has not exited within a few seconds.
func (h *Harness) Close() error {
	h.closeOnce.Do(func() {
		h.writeMu.Lock()
		_ = h.stdin.Close()
		h.writeMu.Unlock()
		select {
		case <-h.exited:
		case <-time.After(stopTimeout):
			if err := h.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
				h.closeErr = fmt.Errorf("failed to kill the ts-mls harness (pid %d): %w", h.PID(), err)
			}
			<-h.exited
		}
	})
	return h.closeErr
}

// read dispatches answer lines to the requests waiting for them, until stdout ends.
func (h *Harness) read(stdout io.Reader) {
	r := bufio.NewReaderSize(stdout, 1<<16)
	var err error
	for {
		var line []byte
		line, err = r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			var a answer
			if jerr := json.Unmarshal(line, &a); jerr != nil || a.ID == nil {
				err = fmt.Errorf("%w: answer %.200q is not an answer to a request", ErrProtocol, line)
				break
			}
			h.mu.Lock()
			ch := h.waiting[*a.ID]
			delete(h.waiting, *a.ID)
			h.mu.Unlock()
			if ch != nil {
				ch <- a
			}
		}
		if err != nil {
			break
		}
	}
	if errors.Is(err, io.EOF) {
		err = ErrExited
	} else {
		// Keep draining, so a harness that broke the protocol is not left blocked writing to a full pipe.
		_, _ = io.Copy(io.Discard, r)
	}
	h.mu.Lock()
	h.readErr = err
	for id, ch := range h.waiting {
		close(ch)
		delete(h.waiting, id)
	}
	h.mu.Unlock()
	if waitErr := h.cmd.Wait(); waitErr != nil && errors.Is(err, ErrExited) {
		h.mu.Lock()
		h.readErr = fmt.Errorf("%w: %w", ErrExited, waitErr)
		h.mu.Unlock()
	}
	close(h.exited)
}

// Call sends one request, op with the fields of params (a struct or map that marshals to a JSON object, or nil),
// and decodes the answer's result into result (nil to ignore it). An error the harness answered wraps ErrRequest.
func (h *Harness) Call(ctx context.Context, op string, params, result any) error {
	fields := map[string]json.RawMessage{}
	if params != nil {
		raw, err := json.Marshal(params)
		if err != nil {
			return fmt.Errorf("failed to encode the %s request: %w", op, err)
		}
		if err = json.Unmarshal(raw, &fields); err != nil {
			return fmt.Errorf("failed to encode the %s request: its parameters are not a JSON object: %w", op, err)
		}
	}
	opJSON, _ := json.Marshal(op)
	fields["op"] = opJSON

	ch := make(chan answer, 1)
	h.writeMu.Lock()
	h.nextID++
	id := h.nextID
	fields["id"], _ = json.Marshal(id)
	line, err := json.Marshal(fields)
	if err != nil {
		h.writeMu.Unlock()
		return fmt.Errorf("failed to encode the %s request: %w", op, err)
	}
	h.mu.Lock()
	if h.readErr != nil {
		err = h.readErr
		h.mu.Unlock()
		h.writeMu.Unlock()
		return fmt.Errorf("failed to send %s: %w%s", op, err, h.stderrNote())
	}
	h.waiting[id] = ch
	h.mu.Unlock()
	_, err = h.stdin.Write(append(line, '\n'))
	h.writeMu.Unlock()
	if err != nil {
		h.forget(id)
		return fmt.Errorf("failed to send %s to the ts-mls harness: %w%s", op, err, h.stderrNote())
	}

	select {
	case <-ctx.Done():
		h.forget(id)
		return fmt.Errorf("gave up waiting for the answer to %s: %w", op, ctx.Err())
	case a, ok := <-ch:
		if !ok {
			h.mu.Lock()
			err = h.readErr
			h.mu.Unlock()
			return fmt.Errorf("no answer to %s: %w%s", op, err, h.stderrNote())
		}
		if a.Error != nil {
			return fmt.Errorf("%w: %s", ErrRequest, *a.Error)
		}
		if result != nil {
			if err = json.Unmarshal(a.Result, result); err != nil {
				return fmt.Errorf("%w: the answer to %s does not decode: %w", ErrProtocol, op, err)
			}
		}
		return nil
	}
}

func (h *Harness) forget(id uint64) {
	h.mu.Lock()
	delete(h.waiting, id)
	h.mu.Unlock()
}

func (h *Harness) stderrNote() string {
	if s := h.stderr.String(); s != "" {
		return "; its stderr ends with:\n" + s
	}
	return ""
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
