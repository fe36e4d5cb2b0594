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

// startDendrite generates keys (once per dir) and a configuration in dir, and starts dendrite on 127.0.0.1.
// Everything Dendrite stores (SQLite files, media) lives in dir, so reusing dir keeps the server's data.
func startDendrite(ctx context.Context, binDir, dir string, opts Options) (*Homeserver, error) {
	binDir, err := filepath.Abs(binDir)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve %s: %w", EnvDendriteBin, err)
	}
	dendrite := filepath.Join(binDir, "dendrite")
	generateKeys := filepath.Join(binDir, "generate-keys")
	generateConfig := filepath.Join(binDir, "generate-config")
	for _, bin := range []string{dendrite, generateKeys, generateConfig} {
		if err = lookPath(bin); err != nil {
			return nil, fmt.Errorf("%w (%s=%s)", err, EnvDendriteBin, binDir)
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("failed to resolve data directory: %w", err)
	}
	if err = os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("failed to create data directory: %w", err)
	}

	keyPath := filepath.Join(dir, "matrix_key.pem")
	if _, err = os.Stat(keyPath); os.IsNotExist(err) {
		if _, err = runQuiet(ctx, generateKeys, "--private-key", keyPath); err != nil {
			return nil, fmt.Errorf("failed to generate Dendrite signing key: %w", err)
		}
	}
	generated, err := runQuiet(ctx, generateConfig, "-ci", "-server", opts.ServerName, "-dir", dir)
	if err != nil {
		return nil, fmt.Errorf("failed to generate Dendrite config: %w", err)
	}
	var regPaths []string
	for i, reg := range opts.Registrations {
		path := filepath.Join(dir, "appservice-"+strconv.Itoa(i)+".yaml")
		if err = os.WriteFile(path, reg, 0o600); err != nil {
			return nil, fmt.Errorf("failed to write application service registration: %w", err)
		}
		regPaths = append(regPaths, path)
	}
	secret, err := randomSecret()
	if err != nil {
		return nil, err
	}
	config, err := patchDendriteConfig(generated, keyPath, secret, regPaths, opts.DendritePostgres)
	if err != nil {
		return nil, err
	}
	configPath := filepath.Join(dir, "dendrite.yaml")
	if err = os.WriteFile(configPath, config, 0o600); err != nil {
		return nil, fmt.Errorf("failed to write Dendrite config: %w", err)
	}

	port, err := pickPort(opts.Port)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(dendrite, "-config", configPath, "-http-bind-address", "127.0.0.1:"+strconv.Itoa(port))
	cmd.Dir = dir
	logPath := filepath.Join(dir, "homeserver.log")
	proc, err := startProcess(cmd, logPath)
	if err != nil {
		return nil, err
	}
	hs := &Homeserver{
		URL:          loopbackURL(port),
		ServerName:   opts.ServerName,
		Kind:         Dendrite,
		Dir:          dir,
		LogPath:      logPath,
		sharedSecret: secret,
		proc:         proc,
	}
	if err = proc.waitReady(ctx, hs.URL); err != nil {
		_ = proc.stop(0)
		return nil, fmt.Errorf("failed to start Dendrite: %w", err)
	}
	return hs, nil
}

// patchDendriteConfig turns the output of `generate-config -ci` into a loopback-only test server: no federation,
// no open registration (the shared secret and application services still register users), quiet logs.
// With postgres set, every component keeps its tables in that one database (global.database).
func patchDendriteConfig(generated []byte, keyPath, secret string, regPaths []string, postgres string) ([]byte, error) {
	var config map[string]any
	if err := yaml.Unmarshal(generated, &config); err != nil {
		return nil, fmt.Errorf("failed to parse generated Dendrite config: %w", err)
	}
	if postgres != "" {
		if err := useOneDatabase(config, postgres); err != nil {
			return nil, err
		}
	}
	if regPaths == nil {
		regPaths = []string{}
	}
	sets := []struct {
		path  []string
		value any
	}{
		// The generated value is relative and would resolve against the working directory.
		{[]string{"global", "private_key"}, keyPath},
		{[]string{"global", "disable_federation"}, true},
		{[]string{"global", "presence", "enable_inbound"}, false},
		{[]string{"global", "presence", "enable_outbound"}, false},
		// Open registration would need the -really-enable-open-registration flag.
		{[]string{"client_api", "registration_disabled"}, true},
		{[]string{"client_api", "registration_shared_secret"}, secret},
		{[]string{"app_service_api", "config_files"}, regPaths},
		{[]string{"sync_api", "search", "enabled"}, false},
		{[]string{"logging"}, []map[string]any{{"type": "std", "level": "warn"}}},
	}
	for _, set := range sets {
		if err := setYAMLPath(config, set.value, set.path...); err != nil {
			return nil, fmt.Errorf("failed to patch Dendrite config: %w", err)
		}
	}
	out, err := yaml.Marshal(config)
	if err != nil {
		return nil, fmt.Errorf("failed to write Dendrite config: %w", err)
	}
	return out, nil
}

// dendriteMaxConns bounds Dendrite's connections to a shared PostgreSQL server, whose default limit is 100.
const dendriteMaxConns = 20

// useOneDatabase points Dendrite's global database at uri and empties every component's own connection string,
// which Dendrite then takes from the global one.
func useOneDatabase(config map[string]any, uri string) error {
	for _, set := range []struct {
		key   string
		value any
	}{{"connection_string", uri}, {"max_open_conns", dendriteMaxConns}, {"max_idle_conns", 2}} {
		if err := setYAMLPath(config, set.value, "global", "database", set.key); err != nil {
			return fmt.Errorf("failed to patch Dendrite config: %w", err)
		}
	}
	for section, v := range config {
		component, ok := v.(map[string]any)
		if !ok || section == "global" {
			continue
		}
		for _, key := range []string{"database", "account_database"} {
			if db, ok := component[key].(map[string]any); ok {
				db["connection_string"] = ""
			}
		}
	}
	return nil
}

// setYAMLPath sets value at path in a decoded YAML mapping, creating intermediate mappings.
func setYAMLPath(m map[string]any, value any, path ...string) error {
	for i, key := range path[:len(path)-1] {
		next, ok := m[key]
		if !ok {
			child := map[string]any{}
			m[key] = child
			m = child
			continue
		}
		child, ok := next.(map[string]any)
		if !ok {
			return fmt.Errorf("%v is a %T, not a mapping", path[:i+1], next)
		}
		m = child
	}
	m[path[len(path)-1]] = value
	return nil
}
