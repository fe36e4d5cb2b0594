package tesths

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

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
// chroot (Stop removes it); the log and a copy of the configuration go to dir, outside the chroot.
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
	synapseArgs := func(args ...string) []string {
		// env -i: the host's Python settings (PYTHONPATH, PYTHONDONTWRITEBYTECODE, ...) are not for the chroot's Python.
		return append([]string{root, "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LC_ALL=C.UTF-8",
			"python3", "-m", "synapse.app.homeserver"}, args...)
	}

	mainConfig := filepath.Join(data, "homeserver.yaml")
	gen := exec.CommandContext(ctx, "chroot", synapseArgs("--server-name", opts.ServerName, "--config-path", mainConfig,
		"--data-directory", data, "--generate-config", "--report-stats=no")...)
	var genOut limitedBuffer
	gen.Stdout, gen.Stderr = &genOut, &genOut
	if err = gen.Run(); err != nil {
		return nil, fmt.Errorf("failed to generate Synapse config: %w: %s", err, genOut.String())
	}

	var regPaths []string
	for i, reg := range opts.Registrations {
		name := "appservice-" + strconv.Itoa(i) + ".yaml"
		if err = os.WriteFile(filepath.Join(hostData, name), reg, 0o600); err != nil {
			return nil, fmt.Errorf("failed to write application service registration: %w", err)
		}
		regPaths = append(regPaths, filepath.Join(data, name))
	}
	logConfig := filepath.Join(data, "log.yaml")
	if err = os.WriteFile(filepath.Join(hostData, "log.yaml"), []byte(synapseLogConfig), 0o644); err != nil {
		return nil, fmt.Errorf("failed to write Synapse log config: %w", err)
	}
	port, err := pickPort(opts.Port)
	if err != nil {
		return nil, err
	}
	secret, err := randomSecret()
	if err != nil {
		return nil, err
	}
	override, err := synapseOverride(port, secret, logConfig, regPaths)
	if err != nil {
		return nil, err
	}
	overrideConfig := filepath.Join(data, "zz-test.yaml")
	if err = os.WriteFile(filepath.Join(hostData, "zz-test.yaml"), override, 0o600); err != nil {
		return nil, fmt.Errorf("failed to write Synapse config override: %w", err)
	}
	// A copy beside the log, so a failed test can be read without the chroot.
	_ = os.WriteFile(filepath.Join(dir, "synapse-override.yaml"), override, 0o600)

	logPath := filepath.Join(dir, "homeserver.log")
	// chroot and env exec, so the PID is Synapse's own.
	proc, err := startProcess(exec.Command("chroot", synapseArgs("-c", mainConfig, "-c", overrideConfig)...), logPath)
	if err != nil {
		return nil, err
	}
	hs := &Homeserver{
		URL:          loopbackURL(port),
		ServerName:   opts.ServerName,
		Kind:         Synapse,
		Dir:          dir,
		LogPath:      logPath,
		sharedSecret: secret,
		proc:         proc,
		cleanup:      cleanup,
	}
	if err = proc.waitReady(ctx, hs.URL); err != nil {
		_ = proc.stop(0)
		return nil, fmt.Errorf("failed to start Synapse: %w", err)
	}
	return hs, nil
}

// synapseOverride is the second config file; its top-level keys replace the generated ones.
func synapseOverride(port int, secret, logConfig string, regPaths []string) ([]byte, error) {
	if regPaths == nil {
		regPaths = []string{}
	}
	config := map[string]any{
		"listeners": []map[string]any{{
			"port":           port,
			"bind_addresses": []string{"127.0.0.1"},
			"type":           "http",
			"tls":            false,
			"x_forwarded":    false,
			"resources":      []map[string]any{{"names": []string{"client"}, "compress": false}},
		}},
		"registration_shared_secret":  secret,
		"enable_registration":         false,
		"trusted_key_servers":         []any{},
		"suppress_key_server_warning": true,
		"federation_domain_whitelist": []any{},
		"presence":                    map[string]any{"enabled": false},
		"app_service_config_files":    regPaths,
		"log_config":                  logConfig,
		"report_stats":                false,
	}
	unlimited := map[string]any{"per_second": 100000, "burst_count": 1000000}
	for _, path := range synapseRateLimits {
		if err := setYAMLPath(config, unlimited, path...); err != nil {
			return nil, fmt.Errorf("failed to build Synapse config override: %w", err)
		}
	}
	out, err := yaml.Marshal(config)
	if err != nil {
		return nil, fmt.Errorf("failed to write Synapse config override: %w", err)
	}
	return out, nil
}
