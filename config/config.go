// Package config is lmbridge's typed configuration. Each package takes only its own section; cmd/lmbridge loads the
// file and hands the sections out. The file is only ever read, never rewritten: tokens live in the registration.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/lmbridge/lmbridge"
)

// ExampleDomain is the homeserver domain of the example config; -g refuses to run while the config still holds it.
const ExampleDomain = "example.com"

var (
	// ErrExampleDomain means the operator has not edited homeserver.domain yet.
	ErrExampleDomain = errors.New("homeserver.domain still holds the example value " + ExampleDomain)
	// ErrInvalid wraps every validation failure, so callers can tell a bad config from an unreadable one.
	ErrInvalid = errors.New("invalid config")
)

// Config is the whole of config.yaml.
type Config struct {
	Homeserver Homeserver `yaml:"homeserver"`
	AppService AppService `yaml:"appservice"`
	Database   Database   `yaml:"database"`
	LM         LM         `yaml:"lm"`
	MIMI       MIMI       `yaml:"mimi"`
	Bridge     Bridge     `yaml:"bridge"`
	Encryption Encryption `yaml:"encryption"`
	Media      Media      `yaml:"media"`
	Logging    Logging    `yaml:"logging"`
}

// Homeserver says where the Matrix homeserver is.
type Homeserver struct {
	Address string `yaml:"address"`
	Domain  string `yaml:"domain"`
	// RedactionPollSeconds is how often lmbridge reads each room's latest events for redactions the homeserver did
	// not push (Dendrite pushes none); 0 turns it off.
	RedactionPollSeconds int `yaml:"redaction_poll_seconds"`
}

// AppService is the application-service side: our listener and the identities we register.
type AppService struct {
	Address          string `yaml:"address"`
	Hostname         string `yaml:"hostname"`
	Port             uint16 `yaml:"port"`
	ID               string `yaml:"id"`
	Bot              Bot    `yaml:"bot"`
	UsernameTemplate string `yaml:"username_template"`
	AliasTemplate    string `yaml:"alias_template"`
	MaxBodyBytes     int64  `yaml:"max_body_bytes"`
}

// Bot is the bridge's own Matrix user.
type Bot struct {
	Username    string `yaml:"username"`
	Displayname string `yaml:"displayname"`
	Avatar      string `yaml:"avatar"`
}

// Database is passed to go.mau.fi/util/dbutil.
type Database struct {
	Type         string `yaml:"type"`
	URI          string `yaml:"uri"`
	MaxOpenConns int    `yaml:"max_open_conns"`
	MaxIdleConns int    `yaml:"max_idle_conns"`
}

// LM is lmbridge as a Linearized Matrix server.
type LM struct {
	ServerName     string `yaml:"server_name"`
	Listen         string `yaml:"listen"`
	TLSCert        string `yaml:"tls_cert"`
	TLSKey         string `yaml:"tls_key"`
	AllowPlainHTTP bool   `yaml:"allow_plain_http"`
	AllowHTTPPeers bool   `yaml:"allow_http_peers"`
	// IPRangeBlocklist is checked by the federation client on every connection; nil (a config built in code, as
	// tests do) blocks nothing, while a config file gets the example's list unless it sets its own.
	IPRangeBlocklist []string `yaml:"ip_range_blocklist"`
	SigningKeyPath   string   `yaml:"signing_key_path"`
	RoomVersion      string   `yaml:"room_version"`
	MaxRequestBytes  int64    `yaml:"max_request_bytes"`
	// MaxRequestsPerIP bounds the federation requests in flight from one address until they are authenticated;
	// zero (a config built in code) is no bound.
	MaxRequestsPerIP int `yaml:"max_requests_per_ip"`
	// MaxRequestsPerOrigin bounds the federation requests in flight of one authenticated server; zero is no bound.
	MaxRequestsPerOrigin int `yaml:"max_requests_per_origin"`
}

// BlockedRanges returns IPRangeBlocklist parsed; Validate has refused a config with a malformed entry.
func (l LM) BlockedRanges() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(l.IPRangeBlocklist))
	for _, r := range l.IPRangeBlocklist {
		if prefix, err := netip.ParsePrefix(r); err == nil {
			out = append(out, prefix.Masked())
		}
	}
	return out
}

// Bridge is the linking of rooms.
type Bridge struct {
	CommandPrefix string            `yaml:"command_prefix"`
	Permissions   map[string]string `yaml:"permissions"`
	Provisioning  Provisioning      `yaml:"provisioning"`
	// BackfillLimit is how many of an existing LM room's latest messages a new link brings into the Matrix room;
	// 0 brings none.
	BackfillLimit int `yaml:"backfill_limit"`
}

// Provisioning is the HTTP API for linking rooms from other tools.
type Provisioning struct {
	SharedSecret string `yaml:"shared_secret"`
}

// Media is how files (images, attachments, avatars) cross between the homeserver and LM servers.
type Media struct {
	// MaxFileBytes bounds a file the bridge fetches or sends across; zero (a config built in code) means
	// DefaultMaxFileBytes.
	MaxFileBytes int64 `yaml:"max_file_bytes"`
}

// DefaultMaxFileBytes is the example config's media.max_file_bytes.
const DefaultMaxFileBytes = 50 << 20

// Logging configures zerolog.
type Logging struct {
	MinLevel string `yaml:"min_level"`
	Format   string `yaml:"format"`
}

// Load reads path over the defaults of the embedded example config. A missing file comes back as an error that
// wraps fs.ErrNotExist, so the caller can tell the operator how to create one.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse reads a config document over the defaults of the embedded example config and validates the result.
// Unknown keys are errors: a misspelt key silently falling back to its default is worse than a refusal to start.
func Parse(data []byte) (*Config, error) {
	cfg, err := Example()
	if err != nil {
		return nil, err
	}
	// The example's permissions are illustrations, not defaults to merge into the user's map.
	cfg.Bridge.Permissions = nil
	if err := decodeStrict(data, cfg); err != nil {
		return nil, fmt.Errorf("%w:\n  %w", ErrInvalid, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Example is the embedded example config, parsed but not validated against the example domain.
func Example() (*Config, error) {
	var cfg Config
	if err := decodeStrict([]byte(lmbridge.ExampleConfig), &cfg); err != nil {
		return nil, fmt.Errorf("failed to parse embedded example config: %w", err)
	}
	return &cfg, nil
}

func decodeStrict(data []byte, into *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(into)
	var typeErr *yaml.TypeError
	switch {
	case errors.Is(err, io.EOF):
		// An empty file means "all defaults", which then fail validation on the example domain, not here.
		return nil
	case errors.As(err, &typeErr):
		return &yamlProblems{typeErr.Errors}
	}
	return err
}

// sectionOfType names the config section each Go type decodes, so that yaml.v3's "field x not found in type
// config.Bot" can be said in the file's own terms.
var sectionOfType = map[string]string{
	"Config":             "the top level",
	"Homeserver":         "homeserver",
	"AppService":         "appservice",
	"Bot":                "appservice.bot",
	"Database":           "database",
	"LM":                 "lm",
	"Bridge":             "bridge",
	"Provisioning":       "bridge.provisioning",
	"Encryption":         "encryption",
	"VerificationLevels": "encryption.verification_levels",
	"Rotation":           "encryption.rotation",
	"Logging":            "logging",
}

var unknownFieldMessage = regexp.MustCompile(`^(line \d+): field (\S+) not found in type config\.(\w+)$`)

// yamlProblems are yaml.v3's decoding errors, one per line, with unknown keys named by section.
type yamlProblems struct{ messages []string }

func (y *yamlProblems) Error() string {
	lines := make([]string, len(y.messages))
	for i, msg := range y.messages {
		if m := unknownFieldMessage.FindStringSubmatch(msg); m != nil {
			if section, ok := sectionOfType[m[3]]; ok {
				msg = fmt.Sprintf("%s: unknown key %q in %s", m[1], m[2], section)
			}
		}
		lines[i] = msg
	}
	return strings.Join(lines, "\n  ")
}
