// Package testpg runs throwaway PostgreSQL servers on loopback for lmbridge's tests, so the same queries that run on
// SQLite are proven on PostgreSQL too.
//
// The binaries (initdb, postgres) come from Debian's postgresql-15 package; where they are is told by EnvBin (see
// scripts/install-postgres.sh). Each server gets a fresh data directory, listens on 127.0.0.1 only (no Unix socket)
// on a free port with trust authentication, and is stopped by its PID. PostgreSQL refuses to run as root, so when
// the tests run as root the server runs as the unprivileged postgres OS user.
package testpg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	// The driver the servers are reached with, the one cmd/lmbridge registers for database.type: postgres.
	_ "github.com/lib/pq"
)

// EnvBin is the directory holding initdb and postgres, e.g. /usr/lib/postgresql/15/bin.
const EnvBin = "LMBRIDGE_TEST_POSTGRES_BIN"

// superuser is the role initdb creates and the tests connect as.
const superuser = "postgres"

var (
	// ErrUnavailable is returned when EnvBin is unset.
	ErrUnavailable = errors.New("PostgreSQL not installed")
	// ErrExited is returned when postgres exits before it accepts connections.
	ErrExited = errors.New("postgres exited during start-up")
	// errPortInUse means another process took the port between choosing it and postgres binding it.
	errPortInUse = errors.New("port already in use")
)

// Server is a running throwaway PostgreSQL server.
type Server struct {
	// Port is the TCP port on 127.0.0.1.
	Port int
	// LogPath is the server's log (its stderr).
	LogPath string

	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start initialises a cluster in a new temporary directory and starts postgres on it. The directory is removed by
// Stop. binDir is the directory of initdb and postgres; EnvBin's value when empty.
func Start(ctx context.Context, binDir string) (*Server, error) {
	if binDir == "" {
		binDir = os.Getenv(EnvBin)
	}
	if binDir == "" {
		return nil, fmt.Errorf("%w: %s is not set", ErrUnavailable, EnvBin)
	}
	cred, owner, err := serverCredential()
	if err != nil {
		return nil, err
	}
	// Not t.TempDir: its parents are private to the test's user, which the postgres user may not enter.
	dir, err := os.MkdirTemp("", "lmbridge-pg-")
	if err != nil {
		return nil, fmt.Errorf("failed to create data directory: %w", err)
	}
	srv := &Server{dir: dir, LogPath: filepath.Join(dir, "postgres.log")}
	if err = srv.initdb(ctx, binDir, cred, owner); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		err = srv.start(ctx, binDir, cred)
		if !errors.Is(err, errPortInUse) || attempt == 4 {
			break
		}
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return srv, nil
}

// serverCredential returns the credential postgres and initdb must run with: none (the current user) unless we are
// root, then the postgres OS user's, with owner set to that user's IDs for chown.
func serverCredential() (*syscall.Credential, *user.User, error) {
	if os.Geteuid() != 0 {
		return nil, nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, nil, fmt.Errorf("postgres cannot run as root and there is no postgres OS user to run it as: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to parse uid of the postgres user: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to parse gid of the postgres user: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, u, nil
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }

func (s *Server) initdb(ctx context.Context, binDir string, cred *syscall.Credential, owner *user.User) error {
	if cred != nil {
		if err := os.Chown(s.dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("failed to hand the data directory to %s: %w", owner.Username, err)
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"), "-D", s.dataDir(), "-U", superuser,
		"--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb failed: %w\n%s", err, out)
	}
	return nil
}

// start runs postgres on a free port and waits until it accepts connections.
func (s *Server) start(ctx context.Context, binDir string, cred *syscall.Credential) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("failed to open server log: %w", err)
	}
	defer logFile.Close()
	// The server's data is thrown away with it, so durability is traded for speed: fsync and full-page writes off.
	// Crash safety of lmbridge itself is tested by killing lmbridge, not the database.
	cmd := exec.Command(filepath.Join(binDir, "postgres"), "-D", s.dataDir(),
		"-c", "listen_addresses=127.0.0.1", "-c", "port="+strconv.Itoa(port),
		"-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "log_min_messages=warning")
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so a ^C to the test does not reach it before Stop; SIGKILL when the test binary dies
	// without stopping it (a panic or a test timeout), so no server outlives the tests.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err = cmd.Start(); err != nil {
		return fmt.Errorf("failed to start postgres: %w", err)
	}
	s.Port, s.cmd, s.done = port, cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	if err = s.waitReady(ctx); err != nil {
		s.kill()
		return err
	}
	return nil
}

func (s *Server) waitReady(ctx context.Context) error {
	db, err := sql.Open("postgres", s.URI(superuser))
	if err != nil {
		return fmt.Errorf("failed to open connection to postgres: %w", err)
	}
	defer db.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.done:
			tail := logTail(s.LogPath)
			if strings.Contains(tail, "could not bind") || strings.Contains(tail, "Address already in use") {
				return fmt.Errorf("%w: %d", errPortInUse, s.Port)
			}
			return fmt.Errorf("%w; its log ends with:\n%s", ErrExited, tail)
		default:
		}
		pingCtx, cancel := context.WithTimeout(ctx, time.Second)
		err = db.PingContext(pingCtx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections on port %d: %w; its log ends with:\n%s", s.Port, err, logTail(s.LogPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URI is the connection URI of a database on the server, for lib/pq and lmbridge's database.uri.
func (s *Server) URI(dbname string) string {
	u := url.URL{Scheme: "postgres", User: url.User(superuser), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)),
		Path: "/" + dbname, RawQuery: "sslmode=disable"}
	return u.String()
}

// CreateDatabase creates an empty database and returns its URI. name must be a plain identifier.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	db, err := sql.Open("postgres", s.URI(superuser))
	if err != nil {
		return "", fmt.Errorf("failed to open connection to postgres: %w", err)
	}
	defer db.Close()
	// Identifiers cannot be parameters; quoting keeps a name with capitals as written.
	if _, err = db.ExecContext(ctx, `CREATE DATABASE "`+strings.ReplaceAll(name, `"`, `""`)+`"`); err != nil {
		return "", fmt.Errorf("failed to create database %s: %w", name, err)
	}
	return s.URI(name), nil
}

// Stop ends the server with a fast shutdown (SIGINT to its PID: clients are disconnected, no waiting for them),
// kills it if it has not exited within 10 s, and removes its directory.
func (s *Server) Stop() error {
	var err error
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			err = fmt.Errorf("postgres (pid %d) did not stop within 10 s of SIGINT; killed", s.cmd.Process.Pid)
			s.kill()
		}
	}
	if rmErr := os.RemoveAll(s.dir); rmErr != nil && err == nil {
		err = fmt.Errorf("failed to remove %s: %w", s.dir, rmErr)
	}
	return err
}

func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("failed to find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func logTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	const n = 4096
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}
