// Package tesths starts real Matrix homeservers (Dendrite and Synapse) on loopback, for lmbridge's end-to-end tests
// and for the local demo stack.
//
// The binaries come from scripts/install-homeservers.sh: Dendrite from the nested tools module tools/homeserver,
// Synapse from a Debian sid chroot. Where they are is told by environment variables (see Available). Every server
// gets a fresh port on 127.0.0.1 and its own data directory, registers users through the shared-secret admin API,
// and loads the application service registrations it is given.
package tesths

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"
)

// Kind names a homeserver implementation.
type Kind string

const (
	Dendrite Kind = "dendrite"
	Synapse  Kind = "synapse"
)

// Kinds lists every homeserver implementation the harness knows, in the order tests run them.
var Kinds = []Kind{Dendrite, Synapse}

// Environment variables that tell the harness where the homeservers are installed.
const (
	// EnvDendriteBin is a directory holding the dendrite, generate-keys and generate-config binaries.
	EnvDendriteBin = "LMBRIDGE_TEST_DENDRITE_BIN"
	// EnvSynapseRoot is the Debian sid chroot that has matrix-synapse installed.
	EnvSynapseRoot = "LMBRIDGE_TEST_SYNAPSE_ROOT"
	// EnvRequire, when "1", turns a missing homeserver into a test failure instead of a skip.
	EnvRequire = "LMBRIDGE_TEST_REQUIRE_HOMESERVERS"
)

// DefaultServerName is the server name used when Options.ServerName is empty. It does not resolve: clients must use
// Homeserver.URL.
const DefaultServerName = "hs1.localhost"

// DefaultStartTimeout bounds how long Start waits for a server to answer when ctx has no earlier deadline.
const DefaultStartTimeout = 2 * time.Minute

var (
	// ErrUnavailable is returned when the requested homeserver is not installed (its environment variable is unset).
	ErrUnavailable = errors.New("homeserver not installed")
	// ErrUnknownKind is returned for a Kind the harness does not know.
	ErrUnknownKind = errors.New("unknown homeserver kind")
	// ErrExited is returned when the server process exits before it answers.
	ErrExited = errors.New("homeserver exited during start-up")
	// ErrPortInUse is returned when the server could not listen because another process has the port. Start
	// retries on another port by itself unless Options.Port was given.
	ErrPortInUse = errors.New("port already in use")
	// ErrNotRunning is returned by Pause and Resume when the server process has exited.
	ErrNotRunning = errors.New("homeserver not running")
	// ErrUnknownAppService is returned by Ping for an ID that was not among Options.Registrations.
	ErrUnknownAppService = errors.New("no such application service registration")
)

// Options configures a homeserver started by Start.
type Options struct {
	// ServerName is the Matrix server name; DefaultServerName when empty.
	ServerName string
	// Registrations are application service registration files (YAML), loaded by the server at start-up.
	Registrations [][]byte
	// Port is the loopback port to listen on; a free one when zero.
	Port int
	// DendritePostgres, when set, is a PostgreSQL connection string Dendrite keeps all its tables in, instead of one
	// SQLite file per component. Under concurrent load Dendrite v0.13.8 on SQLite fails with "database is locked"
	// and its sync API then panics (see README, Limits). Synapse ignores it.
	DendritePostgres string
}

// Homeserver is a running homeserver process.
type Homeserver struct {
	// URL is the client-server API base URL, http://127.0.0.1:PORT.
	URL string
	// ServerName is the Matrix server name, the part after the colon in user IDs.
	ServerName string
	// Kind says which implementation this is.
	Kind Kind
	// Dir holds the server's configuration, data (Dendrite) and log.
	Dir string
	// LogPath is the file the server's stdout and stderr go to.
	LogPath string

	sharedSecret string
	asTokens     map[string]string // registration ID -> as_token
	proc         *process
	cleanup      func() error // removes data kept outside Dir (Synapse's directory inside the chroot)
}

// Available returns the homeserver kinds whose installation is named in the environment.
func Available() []Kind {
	var kinds []Kind
	for _, kind := range Kinds {
		if installDir(kind) != "" {
			kinds = append(kinds, kind)
		}
	}
	return kinds
}

func installDir(kind Kind) string {
	switch kind {
	case Dendrite:
		return os.Getenv(EnvDendriteBin)
	case Synapse:
		return os.Getenv(EnvSynapseRoot)
	default:
		return ""
	}
}

func envVar(kind Kind) string {
	if kind == Synapse {
		return EnvSynapseRoot
	}
	return EnvDendriteBin
}

// Start starts a homeserver of the given kind with its configuration and data in dir (created if missing) and
// returns once it answers /_matrix/client/versions. The caller must call Stop. ctx bounds the start-up only; the
// server keeps running after ctx ends.
func Start(ctx context.Context, kind Kind, dir string, opts Options) (*Homeserver, error) {
	install := installDir(kind)
	switch {
	case kind != Dendrite && kind != Synapse:
		return nil, fmt.Errorf("%w %q", ErrUnknownKind, kind)
	case install == "":
		return nil, fmt.Errorf("%w: %s is not set (run scripts/install-homeservers.sh)", ErrUnavailable, envVar(kind))
	}
	if opts.ServerName == "" {
		opts.ServerName = DefaultServerName
	}
	asTokens, err := parseRegistrations(opts.Registrations)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}
	started := time.Now()
	// A port picked by FreePort can be taken by someone else before the server binds it; try again on a new one.
	const attempts = 3
	for attempt := 1; ; attempt++ {
		var hs *Homeserver
		switch kind {
		case Dendrite:
			hs, err = startDendrite(ctx, install, dir, opts)
		case Synapse:
			hs, err = startSynapse(ctx, install, dir, opts)
		}
		if err == nil {
			hs.asTokens = asTokens
			zerolog.Ctx(ctx).Debug().
				Str("kind", string(kind)).
				Str("url", hs.URL).
				Str("log_path", hs.LogPath).
				Dur("took", time.Since(started)).
				Msg("Homeserver is ready")
			return hs, nil
		}
		zerolog.Ctx(ctx).Debug().Err(err).Str("kind", string(kind)).Int("attempt", attempt).Msg("Homeserver failed to start")
		if opts.Port != 0 || attempt == attempts || !errors.Is(err, ErrPortInUse) || ctx.Err() != nil {
			return nil, err
		}
	}
}

// Stop stops the server: SIGTERM, then SIGKILL to its process group if it has not exited within 15 seconds. It
// removes data the server kept outside Dir. It is safe to call more than once.
func (hs *Homeserver) Stop() error {
	err := hs.proc.stop(15 * time.Second)
	if hs.cleanup != nil {
		if cerr := hs.cleanup(); cerr != nil && err == nil {
			err = cerr
		}
		hs.cleanup = nil
	}
	return err
}

// Pause freezes the server with SIGSTOP to its process group, as a hung or swapped-out server: its sockets stay open,
// connections are accepted by the kernel and requests wait unanswered until Resume. Stop works on a paused server.
func (hs *Homeserver) Pause() error {
	if err := hs.proc.signalGroup(syscall.SIGSTOP); err != nil {
		return err
	}
	return hs.proc.waitStopped(5 * time.Second)
}

// Resume continues a server frozen by Pause.
func (hs *Homeserver) Resume() error {
	return hs.proc.signalGroup(syscall.SIGCONT)
}

// registrationInfo is the part of an application service registration the harness needs.
type registrationInfo struct {
	ID      string `yaml:"id"`
	ASToken string `yaml:"as_token"`
}

func parseRegistrations(regs [][]byte) (map[string]string, error) {
	tokens := make(map[string]string, len(regs))
	for i, raw := range regs {
		var reg registrationInfo
		if err := yaml.Unmarshal(raw, &reg); err != nil {
			return nil, fmt.Errorf("failed to parse application service registration %d: %w", i, err)
		}
		tokens[reg.ID] = reg.ASToken
	}
	return tokens, nil
}

// AppServiceIDs returns the IDs of the registrations the server was started with, sorted.
func (hs *Homeserver) AppServiceIDs() []string {
	ids := make([]string, 0, len(hs.asTokens))
	for id := range hs.asTokens {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func lookPath(path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("failed to find %s: %w", path, err)
	}
	if info.IsDir() || info.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// runQuiet runs a short set-up command and includes its output in the error when it fails.
func runQuiet(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("failed to run %s: %w: %s", name, err, stderr.String())
	}
	return out, nil
}
