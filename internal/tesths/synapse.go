package tesths

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

// synapseDataParent is the directory inside the chroot under which every Synapse server gets its own data directory.
const synapseDataParent = "/data"

// synapseRateLimits are the rc_* settings Synapse knows; it has no global switch, so each is lifted on its own.
var synapseRateLimits = [][]string{
	{"rc_message"},
	{"rc_registration"},
	{"rc_login", "address"},
	{"rc_login", "account"},
	{"rc_login", "failed_attempts"},
	{"rc_joins", "local"},
	{"rc_joins", "remote"},
	{"rc_joins_per_room"},
	{"rc_invites", "per_room"},
	{"rc_invites", "per_user"},
	{"rc_invites", "per_issuer"},
	{"rc_room_creation"},
	{"rc_3pid_validation"},
	{"rc_admin_redaction"},
	{"rc_presence", "per_user"},
	{"rc_delayed_event_mgmt"},
	{"rc_reports"},
	{"rc_user_directory"},
	{"rc_media_create"},
	{"rc_key_requests"},
	{"rc_third_party_invite"},
}

// synapseLogConfig sends WARNING and above to stderr, which the harness writes to the server's log file.
const synapseLogConfig = `version: 1
formatters:
  plain:
    format: '%(asctime)s %(levelname)s %(name)s: %(message)s'
handlers:
  console:
    class: logging.StreamHandler
    formatter: plain
    stream: ext://sys.stderr
root:
  level: WARNING
  handlers: [console]
disable_existing_loggers: false
`

// startSynapse runs Synapse from the sid chroot at root. Its data lives in a fresh directory under /data inside the
// chroot (Stop removes it); the log and a copy of the configuration go to dir, outside the chroot. The whole
// configuration and the signing key are written here rather than by `--generate-config`, which would cost a second
// Python start-up (2-3 s) per server.
func startSynapse(ctx context.Context, root, dir string, opts Options) (_ *Homeserver, err error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: Synapse runs in a chroot, which needs root", ErrUnavailable)
	}
	if root, err = filepath.Abs(root); err != nil {
		return nil, fmt.Errorf("failed to resolve %s: %w", EnvSynapseRoot, err)
	}
	if _, err = os.Stat(filepath.Join(root, "usr/lib/python3/dist-packages/synapse")); err != nil {
		return nil, fmt.Errorf("%w: no matrix-synapse in %s=%s: %w", ErrUnavailable, EnvSynapseRoot, root, err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("failed to resolve log directory: %w", err)
	}
	if err = os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("failed to create log directory: %w", err)
	}
	if err = os.MkdirAll(filepath.Join(root, synapseDataParent), 0o755); err != nil {
		return nil, fmt.Errorf("failed to create Synapse data parent: %w", err)
	}
	sweepSynapseData(filepath.Join(root, synapseDataParent))
	hostData, err := os.MkdirTemp(filepath.Join(root, synapseDataParent), "hs-")
	if err != nil {
		return nil, fmt.Errorf("failed to create Synapse data directory: %w", err)
	}
	cleanup := func() error {
		if err := os.RemoveAll(hostData); err != nil {
			return fmt.Errorf("failed to remove Synapse data directory: %w", err)
		}
		return nil
	}
	defer func() {
		if err != nil {
			_ = cleanup()
		}
	}()
	// data is hostData as Synapse sees it from inside the chroot.
	data := filepath.Join(synapseDataParent, filepath.Base(hostData))
	writeData := func(name string, content []byte) (string, error) {
		if err := os.WriteFile(filepath.Join(hostData, name), content, 0o600); err != nil {
			return "", fmt.Errorf("failed to write Synapse %s: %w", name, err)
		}
		return filepath.Join(data, name), nil
	}

	var regPaths []string
	for i, reg := range opts.Registrations {
		path, err := writeData("appservice-"+strconv.Itoa(i)+".yaml", reg)
		if err != nil {
			return nil, err
		}
		regPaths = append(regPaths, path)
	}
	logConfig, err := writeData("log.yaml", []byte(synapseLogConfig))
	if err != nil {
		return nil, err
	}
	signingKey, err := synapseSigningKey()
	if err != nil {
		return nil, err
	}
	signingKeyPath, err := writeData("signing.key", signingKey)
	if err != nil {
		return nil, err
	}
	port, err := pickPort(opts.Port)
	if err != nil {
		return nil, err
	}
	var secrets [3]string
	for i := range secrets {
		if secrets[i], err = randomSecret(); err != nil {
			return nil, err
		}
	}
	config, err := synapseConfig(synapseSettings{
		serverName:     opts.ServerName,
		data:           data,
		port:           port,
		sharedSecret:   secrets[0],
		macaroonSecret: secrets[1],
		formSecret:     secrets[2],
		signingKeyPath: signingKeyPath,
		logConfig:      logConfig,
		registrations:  regPaths,
	})
	if err != nil {
		return nil, err
	}
	configPath, err := writeData("homeserver.yaml", config)
	if err != nil {
		return nil, err
	}
	// A copy beside the log, so a failed test can be read without the chroot.
	_ = os.WriteFile(filepath.Join(dir, "synapse.yaml"), config, 0o600)

	logPath := filepath.Join(dir, "homeserver.log")
	// chroot and env exec, so the PID is Synapse's own. env -i: the host's Python settings (PYTHONPATH,
	// PYTHONDONTWRITEBYTECODE, ...) are not for the chroot's Python.
	cmd := exec.Command(chrootBinary(), root, "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
		"LC_ALL=C.UTF-8", "python3", "-m", "synapse.app.homeserver", "-c", configPath)
	proc, err := startProcess(cmd, logPath)
	if err != nil {
		return nil, err
	}
	hs := &Homeserver{
		URL:          loopbackURL(port),
		ServerName:   opts.ServerName,
		Kind:         Synapse,
		Dir:          dir,
		LogPath:      logPath,
		sharedSecret: secrets[0],
		proc:         proc,
		cleanup:      cleanup,
	}
	if err = proc.waitReady(ctx, hs.URL); err != nil {
		_ = proc.stop(0)
		return nil, fmt.Errorf("failed to start Synapse: %w", err)
	}
	return hs, nil
}

type synapseSettings struct {
	serverName     string
	data           string // data directory, as seen inside the chroot
	port           int
	sharedSecret   string
	macaroonSecret string
	formSecret     string
	signingKeyPath string
	logConfig      string
	registrations  []string
}

// synapseConfig is a loopback-only test server: client API only on 127.0.0.1, no federation or key servers,
// registration only through the shared secret and application services, rate limits lifted.
func synapseConfig(s synapseSettings) ([]byte, error) {
	if s.registrations == nil {
		s.registrations = []string{}
	}
	config := map[string]any{
		"server_name": s.serverName,
		"pid_file":    filepath.Join(s.data, "homeserver.pid"),
		"listeners": []map[string]any{{
			"port":           s.port,
			"bind_addresses": []string{"127.0.0.1"},
			"type":           "http",
			"tls":            false,
			"x_forwarded":    false,
			"resources":      []map[string]any{{"names": []string{"client"}, "compress": false}},
		}},
		"database": map[string]any{
			"name": "sqlite3",
			"args": map[string]any{"database": filepath.Join(s.data, "homeserver.db")},
		},
		"log_config":                  s.logConfig,
		"media_store_path":            filepath.Join(s.data, "media_store"),
		"signing_key_path":            s.signingKeyPath,
		"macaroon_secret_key":         s.macaroonSecret,
		"form_secret":                 s.formSecret,
		"registration_shared_secret":  s.sharedSecret,
		"enable_registration":         false,
		"report_stats":                false,
		"trusted_key_servers":         []any{},
		"suppress_key_server_warning": true,
		"federation_domain_whitelist": []any{},
		"presence":                    map[string]any{"enabled": false},
		"app_service_config_files":    s.registrations,
		// End-to-bridge encryption: Synapse refuses /sync to an appservice's sender user (the bridge bot), so the
		// bot's device gets its to-device messages (MSC2409) and its device list changes and one-time key counts
		// (MSC3202) pushed in transactions instead. Both are experimental in Synapse, and only sent to a
		// registration that asks for them, so other appservices see no change.
		"experimental_features": map[string]any{
			"msc2409_to_device_messages_enabled": true,
			"msc3202_transaction_extensions":     true,
		},
	}
	unlimited := map[string]any{"per_second": 100000, "burst_count": 1000000}
	for _, path := range synapseRateLimits {
		if err := setYAMLPath(config, unlimited, path...); err != nil {
			return nil, fmt.Errorf("failed to build Synapse config: %w", err)
		}
	}
	out, err := yaml.Marshal(config)
	if err != nil {
		return nil, fmt.Errorf("failed to write Synapse config: %w", err)
	}
	return out, nil
}

// synapseSigningKey makes a signing key file in Synapse's format: "ed25519 <version> <unpadded base64 seed>".
func synapseSigningKey() ([]byte, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("failed to generate Synapse signing key: %w", err)
	}
	return []byte("ed25519 a_test " + base64.RawStdEncoding.EncodeToString(seed) + "\n"), nil
}

// sweepSynapseData removes the data directories of servers that died without Stop (a killed test binary), so they do
// not pile up in the chroot: those whose homeserver.pid names a process that is gone, and those that never got a
// pid file and are over an hour old.
func sweepSynapseData(parent string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, entry := range entries {
		if !entry.IsDir() || !strings.HasPrefix(entry.Name(), "hs-") {
			continue
		}
		dir := filepath.Join(parent, entry.Name())
		if synapseDataAbandoned(dir) {
			_ = os.RemoveAll(dir)
		}
	}
}

func synapseDataAbandoned(dir string) bool {
	raw, err := os.ReadFile(filepath.Join(dir, "homeserver.pid"))
	if err != nil {
		info, err := os.Stat(dir)
		return err == nil && time.Since(info.ModTime()) > time.Hour
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return false
	}
	err = syscall.Kill(pid, 0)
	return errors.Is(err, syscall.ESRCH)
}

// chrootBinary finds chroot, which lives in /usr/sbin: not on every PATH.
func chrootBinary() string {
	if path, err := exec.LookPath("chroot"); err == nil {
		return path
	}
	return "/usr/sbin/chroot"
}
