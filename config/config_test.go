package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const minimal = `
homeserver:
    address: https://matrix.hs.example
    domain: hs.example
`

func TestParseFillsDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Homeserver.Domain != "hs.example" || cfg.Homeserver.Address != "https://matrix.hs.example" {
		t.Fatalf("homeserver = %+v", cfg.Homeserver)
	}
	if cfg.AppService.Port != 29340 || cfg.AppService.Bot.Username != "lmbridge" || cfg.Logging.MinLevel != "info" {
		t.Fatalf("defaults not filled: %+v %+v", cfg.AppService, cfg.Logging)
	}
	if cfg.Bridge.Permissions != nil {
		t.Fatalf("example permissions leaked into a config that has none: %v", cfg.Bridge.Permissions)
	}
	if err := cfg.CheckNotExample(); err != nil {
		t.Fatal(err)
	}
}

func TestParsePermissionsReplaceExample(t *testing.T) {
	cfg, err := Parse([]byte(minimal + "bridge:\n    permissions:\n        hs.example: admin\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Bridge.Permissions) != 1 || cfg.Bridge.Permissions["hs.example"] != "admin" {
		t.Fatalf("permissions = %v", cfg.Bridge.Permissions)
	}
}

func TestParseRejectsUnknownKey(t *testing.T) {
	_, err := Parse([]byte("homeserver:\n    adress: http://x\nappservice:\n    bot:\n        name: x\n"))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	for _, want := range []string{`line 2: unknown key "adress" in homeserver`, `line 5: unknown key "name" in appservice.bot`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestParseRejectsBadYAML(t *testing.T) {
	_, err := Parse([]byte("homeserver: [unterminated"))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestLoadNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(minimal+"logging:\n    min_level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "logging.min_level") {
		t.Fatalf("err = %v, want the path and the key", err)
	}
}

// withMinimal adds the minimal homeserver section unless extra brings its own.
func withMinimal(extra string) []byte {
	if strings.HasPrefix(extra, "homeserver:") {
		return []byte(extra + "\n")
	}
	return []byte(minimal + extra + "\n")
}

func TestValidateNamesKey(t *testing.T) {
	cases := []struct {
		yaml string
		key  string
	}{
		{"homeserver: {address: 'matrix.hs.example'}", "homeserver.address"},
		{"homeserver: {address: ''}", "homeserver.address"},
		{"homeserver: {domain: 'https://hs.example'}", "homeserver.domain"},
		{"homeserver: {domain: 'hs.example:0'}", "homeserver.domain"},
		{"homeserver: {domain: 'hs.example:'}", "homeserver.domain"},
		{"homeserver: {domain: '[zz]:8448'}", "homeserver.domain"},
		{"appservice: {address: 'ftp://x'}", "appservice.address"},
		{"appservice: {hostname: ''}", "appservice.hostname"},
		{"appservice: {hostname: 'http://x'}", "appservice.hostname"},
		{"appservice: {port: 0}", "appservice.port"},
		{"appservice: {id: 'two words'}", "appservice.id"},
		{"appservice: {bot: {username: 'Bot'}}", "appservice.bot.username"},
		{"appservice: {bot: {username: 'lm_bot'}}", "appservice.bot.username"},
		{"appservice: {bot: {avatar: 'https://x/y.png'}}", "appservice.bot.avatar"},
		{"appservice: {username_template: 'lm_'}", "appservice.username_template"},
		{"appservice: {username_template: '{{.}}'}", "appservice.username_template"},
		{"appservice: {username_template: 'a{{.}}b{{.}}'}", "appservice.username_template"},
		{"appservice: {username_template: 'LM_{{.}}'}", "appservice.username_template"},
		{"appservice: {alias_template: ''}", "appservice.alias_template"},
		{"appservice: {max_body_bytes: 0}", "appservice.max_body_bytes"},
		{"database: {type: mysql}", "database.type"},
		{"database: {uri: ''}", "database.uri"},
		{"database: {type: postgres}", "database.uri"},
		{"database: {max_open_conns: 0}", "database.max_open_conns"},
		{"database: {max_idle_conns: -1}", "database.max_idle_conns"},
		{"lm: {server_name: ''}", "lm.server_name"},
		{"lm: {listen: '8448'}", "lm.listen"},
		{"lm: {listen: '0.0.0.0:99999'}", "lm.listen"},
		{"lm: {tls_cert: 'cert.pem'}", "lm.tls_cert"},
		{"lm: {signing_key_path: ''}", "lm.signing_key_path"},
		{"lm: {room_version: '11'}", "lm.room_version"},
		{"lm: {max_request_bytes: -5}", "lm.max_request_bytes"},
		{"lm: {max_requests_per_ip: -1}", "lm.max_requests_per_ip"},
		{"lm: {max_requests_per_origin: -1}", "lm.max_requests_per_origin"},
		{"lm: {ip_range_blocklist: [10.0.0.0]}", "lm.ip_range_blocklist"},
		{"lm: {ip_range_blocklist: ['example.com/8']}", "lm.ip_range_blocklist"},
		{"bridge: {command_prefix: '!lm link'}", "bridge.command_prefix"},
		{"bridge: {permissions: {'@nobody': admin}}", `bridge.permissions."@nobody"`},
		{"bridge: {permissions: {hs.example: root}}", `bridge.permissions."hs.example"`},
		{"bridge: {permissions: {'hs example': user}}", `bridge.permissions."hs example"`},
		{"bridge: {provisioning: {shared_secret: short}}", "bridge.provisioning.shared_secret"},
		{"logging: {min_level: verbose}", "logging.min_level"},
		{"logging: {format: xml}", "logging.format"},
	}
	for _, c := range cases {
		_, err := Parse(withMinimal(c.yaml))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", c.yaml, err)
			continue
		}
		if !strings.Contains(err.Error(), c.key+":") {
			t.Errorf("%s: error does not name %s: %v", c.yaml, c.key, err)
		}
	}
}

func TestIPRangeBlocklist(t *testing.T) {
	cfg, err := Parse(withMinimal(""))
	if err != nil {
		t.Fatal(err)
	}
	defaults := cfg.LM.BlockedRanges()
	for _, addr := range []string{"127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fd00::1"} {
		if !slices.ContainsFunc(defaults, func(p netip.Prefix) bool { return p.Contains(netip.MustParseAddr(addr)) }) {
			t.Errorf("the default blocklist lets %s through", addr)
		}
	}
	if slices.ContainsFunc(defaults, func(p netip.Prefix) bool { return p.Contains(netip.MustParseAddr("93.184.215.14")) }) {
		t.Error("the default blocklist refuses a public address")
	}
	cfg, err = Parse(withMinimal("lm: {ip_range_blocklist: []}"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cfg.LM.BlockedRanges()); n != 0 {
		t.Fatalf("an empty list in the file kept %d default ranges", n)
	}
	cfg, err = Parse(withMinimal("lm: {ip_range_blocklist: [203.0.113.7/24]}"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.LM.BlockedRanges(); len(got) != 1 || got[0].String() != "203.0.113.0/24" {
		t.Fatalf("a list of its own gave %v, want just 203.0.113.0/24", got)
	}
}

func TestValidateSaysURLIsNotServerName(t *testing.T) {
	_, err := Parse([]byte("homeserver: {domain: 'https://hs.example'}\n"))
	if err == nil || !strings.Contains(err.Error(), "homeserver.domain: must be a server name such as matrix.example.org, not a URL") {
		t.Fatalf("err = %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	_, err := Parse([]byte(minimal + "logging: {min_level: x, format: y}\n"))
	if err == nil || !strings.Contains(err.Error(), "logging.min_level") || !strings.Contains(err.Error(), "logging.format") {
		t.Fatalf("err = %v, want both keys", err)
	}
}

func TestValidateAccepts(t *testing.T) {
	for _, extra := range []string{
		"homeserver: {domain: 'hs.example:8448'}",
		"homeserver: {domain: '127.0.0.1:8008'}",
		"homeserver: {domain: '[::1]:8448'}",
		"appservice: {username_template: '{{.}}_lm'}",
		"appservice: {hostname: '::1'}",
		"database: {type: postgres, uri: 'postgres://u@localhost/lmbridge'}",
		"lm: {tls_cert: c.pem, tls_key: k.pem, room_version: I.1}",
		"bridge: {permissions: {'@a:hs.example': admin, '*': relay}}",
		"bridge: {provisioning: {shared_secret: 0123456789abcdef}}",
		"logging: {min_level: debug, format: json}",
	} {
		if _, err := Parse(withMinimal(extra)); err != nil {
			t.Errorf("%s: %v", extra, err)
		}
	}
}

func TestGhostTemplate(t *testing.T) {
	as := AppService{UsernameTemplate: "lm_{{.}}", AliasTemplate: "{{.}}_lm"}
	if got := as.GhostLocalpart("bob=remote.example"); got != "lm_bob=remote.example" {
		t.Fatalf("GhostLocalpart = %q", got)
	}
	for localpart, want := range map[string]string{"lm_bob=remote.example": "bob=remote.example", "lm_x": "x"} {
		if got, ok := as.ParseGhostLocalpart(localpart); !ok || got != want {
			t.Errorf("ParseGhostLocalpart(%q) = %q, %v", localpart, got, ok)
		}
	}
	for _, localpart := range []string{"lm_", "alice", "xlm_bob", ""} {
		if got, ok := as.ParseGhostLocalpart(localpart); ok {
			t.Errorf("ParseGhostLocalpart(%q) = %q, want no match", localpart, got)
		}
	}
	if got := as.AliasLocalpart("room"); got != "room_lm" {
		t.Fatalf("AliasLocalpart = %q", got)
	}
	if got, ok := as.ParseAliasLocalpart("room_lm"); !ok || got != "room" {
		t.Fatalf("ParseAliasLocalpart = %q, %v", got, ok)
	}
}

func TestZerologLevel(t *testing.T) {
	l := Logging{MinLevel: "warn"}
	if l.ZerologLevel().String() != "warn" {
		t.Fatalf("level = %v", l.ZerologLevel())
	}
}

func TestWarnings(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.Warnings(); len(w) != 0 {
		t.Fatalf("the example's listener draws warnings: %v", w)
	}
	cfg.AppService.Address = "http://lmbridge.internal:29340"
	if w := cfg.Warnings(); len(w) != 1 || !strings.Contains(w[0], "appservice.hostname") {
		t.Fatalf("warnings = %v, want one about appservice.hostname", w)
	}
	cfg.AppService.Hostname = "0.0.0.0"
	cfg.AppService.Address = "https://lmbridge.internal"
	if w := cfg.Warnings(); len(w) != 1 || !strings.Contains(w[0], "port 443") {
		t.Fatalf("warnings = %v, want one about the port", w)
	}
}

// TestPermissionRelayRenamed checks that "talk" is the level's name, that the old "relay" is still read with a
// warning naming the entry, and that an unknown level is still an error.
func TestPermissionRelayRenamed(t *testing.T) {
	cfg, err := Parse(withMinimal("bridge: {permissions: {'*': talk, 'hs.example': relay}}"))
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], `bridge.permissions["hs.example"]`) || !strings.Contains(w[0], `"talk"`) {
		t.Fatalf("warnings = %v, want one about hs.example's \"relay\"", w)
	}
	if cfg.Bridge.Permissions["hs.example"] != "relay" {
		t.Errorf("the config was rewritten: %v", cfg.Bridge.Permissions)
	}
	if _, err = Parse(withMinimal("bridge: {permissions: {'*': relayed}}")); err == nil || !strings.Contains(err.Error(), "talk, user, admin") {
		t.Errorf("unknown level: %v", err)
	}
}
