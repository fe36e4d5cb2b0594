package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// Values accepted by the enumerated keys.
var (
	DatabaseTypes   = []string{"sqlite3-fk-wal", "sqlite3-fk-wal-fullsync", "postgres"}
	LMRoomVersions  = []string{"org.matrix.i-d.ralston-mimi-linearized-matrix.02", "I.1"}
	PermissionLevel = []string{"talk", "user", "admin"}
	LogLevels       = []string{"trace", "debug", "info", "warn", "error"}
	LogFormats      = []string{"auto", "pretty", "json"}
)

// DeprecatedPermissionRelay is the old name of the permission level "talk", still read (Warnings says so): the
// mautrix bridges' "relay" is another thing.
const DeprecatedPermissionRelay = "relay"

// MaxBackfillLimit is the most bridge.backfill_limit may be: what the LM engine reads of a room's history at most.
const MaxBackfillLimit = 1000

// minSharedSecret is the shortest provisioning secret accepted; shorter ones are guessable.
const minSharedSecret = 16

// problems collects validation failures, each naming the key it is about.
type problems []error

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// Validate checks what can be checked without touching the network. It reports every problem at once, each
// starting with the key it is about, so an operator can fix the file in one go.
func (c *Config) Validate() error {
	var p problems
	c.Homeserver.validate(&p)
	c.AppService.validate(&p)
	c.Database.validate(&p)
	c.LM.validate(&p)
	c.MIMI.validate(&p)
	c.Bridge.validate(&p)
	c.Encryption.validate(&p)
	c.Media.validate(&p)
	c.Logging.validate(&p)
	if len(p) > 0 {
		return fmt.Errorf("%w:\n  %w", ErrInvalid, &problemList{p})
	}
	return nil
}

// problemList prints one problem per indented line, and keeps each one reachable through errors.Is and errors.As.
type problemList struct{ problems []error }

func (l *problemList) Error() string {
	lines := make([]string, len(l.problems))
	for i, p := range l.problems {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n  ")
}

func (l *problemList) Unwrap() []error { return l.problems }

// CheckNotExample refuses a config whose homeserver.domain is still the example's.
func (c *Config) CheckNotExample() error {
	if c.Homeserver.Domain == ExampleDomain {
		return ErrExampleDomain
	}
	return nil
}

func (h *Homeserver) validate(p *problems) {
	checkHTTPURL(p, "homeserver.address", h.Address)
	checkServerName(p, "homeserver.domain", h.Domain)
	if h.RedactionPollSeconds < 0 {
		p.add("homeserver.redaction_poll_seconds", "must be 0 (off) or more, got %d", h.RedactionPollSeconds)
	}
}

func (as *AppService) validate(p *problems) {
	checkHTTPURL(p, "appservice.address", as.Address)
	if as.Hostname == "" {
		p.add("appservice.hostname", "must be set (e.g. 127.0.0.1)")
	} else if strings.ContainsAny(as.Hostname, ":/ ") && net.ParseIP(as.Hostname) == nil {
		p.add("appservice.hostname", "must be a host name or IP address without port or scheme, got %q", as.Hostname)
	}
	if as.Port == 0 {
		p.add("appservice.port", "must be between 1 and 65535")
	}
	if as.ID == "" {
		p.add("appservice.id", "must be set")
	} else if strings.ContainsFunc(as.ID, func(r rune) bool { return r <= ' ' || r > '~' }) {
		p.add("appservice.id", "must be printable ASCII without spaces, got %q", as.ID)
	}
	if as.Bot.Username == "" {
		p.add("appservice.bot.username", "must be set")
	} else if err := checkLocalpart(as.Bot.Username); err != nil {
		p.add("appservice.bot.username", "%v", err)
	}
	if as.Bot.Avatar != "" && !strings.HasPrefix(as.Bot.Avatar, "mxc://") {
		p.add("appservice.bot.avatar", "must be an mxc:// URI or empty, got %q", as.Bot.Avatar)
	}
	checkTemplate(p, "appservice.username_template", as.UsernameTemplate)
	checkTemplate(p, "appservice.alias_template", as.AliasTemplate)
	if _, ok := as.ParseGhostLocalpart(as.Bot.Username); ok {
		p.add("appservice.bot.username", "%q falls inside the ghost namespace of appservice.username_template %q",
			as.Bot.Username, as.UsernameTemplate)
	}
	if as.MaxBodyBytes <= 0 {
		p.add("appservice.max_body_bytes", "must be a positive number of bytes")
	}
}

func (d *Database) validate(p *problems) {
	checkOneOf(p, "database.type", d.Type, DatabaseTypes)
	if d.URI == "" {
		p.add("database.uri", "must be set (e.g. file:lmbridge.db?_txlock=immediate)")
	} else if d.Type == "postgres" && !strings.HasPrefix(d.URI, "postgres://") && !strings.HasPrefix(d.URI, "postgresql://") {
		p.add("database.uri", "must be a postgres:// URI when database.type is postgres")
	}
	if d.MaxOpenConns < 1 {
		p.add("database.max_open_conns", "must be at least 1, got %d", d.MaxOpenConns)
	}
	if d.MaxIdleConns < 0 {
		p.add("database.max_idle_conns", "must not be negative, got %d", d.MaxIdleConns)
	}
}

func (l *LM) validate(p *problems) {
	checkServerName(p, "lm.server_name", l.ServerName)
	if _, port, err := net.SplitHostPort(l.Listen); err != nil {
		p.add("lm.listen", "must be host:port (e.g. 0.0.0.0:8448), got %q", l.Listen)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.add("lm.listen", "has an invalid port %q", port)
	}
	if (l.TLSCert == "") != (l.TLSKey == "") {
		p.add("lm.tls_cert", "lm.tls_cert and lm.tls_key must be set together")
	}
	if l.SigningKeyPath == "" {
		p.add("lm.signing_key_path", "must be set")
	}
	checkOneOf(p, "lm.room_version", l.RoomVersion, LMRoomVersions)
	for _, r := range l.IPRangeBlocklist {
		if _, err := netip.ParsePrefix(r); err != nil {
			p.add("lm.ip_range_blocklist", "%q is not a CIDR range (e.g. 10.0.0.0/8 or fc00::/7)", r)
		}
	}
	if l.MaxRequestBytes <= 0 {
		p.add("lm.max_request_bytes", "must be a positive number of bytes")
	}
	if l.MaxRequestsPerIP < 0 {
		p.add("lm.max_requests_per_ip", "must be a number of requests, or 0 for no bound")
	}
	if l.MaxRequestsPerOrigin < 0 {
		p.add("lm.max_requests_per_origin", "must be a number of requests, or 0 for no bound")
	}
}

func (b *Bridge) validate(p *problems) {
	if b.CommandPrefix == "" || strings.ContainsAny(b.CommandPrefix, " \t\n") {
		p.add("bridge.command_prefix", "must be one word (e.g. !lm), got %q", b.CommandPrefix)
	}
	for _, who := range slices.Sorted(maps.Keys(b.Permissions)) {
		level := b.Permissions[who]
		key := "bridge.permissions." + strconv.Quote(who)
		switch {
		case who == "*":
		case strings.HasPrefix(who, "@"):
			localpart, server, ok := strings.Cut(who[1:], ":")
			if !ok || localpart == "" {
				p.add(key, "a user ID must look like @user:server")
			} else {
				checkServerName(p, key, server)
			}
		default:
			checkServerName(p, key, who)
		}
		if level != DeprecatedPermissionRelay {
			checkOneOf(p, key, level, PermissionLevel)
		}
	}
	if b.BackfillLimit < 0 || b.BackfillLimit > MaxBackfillLimit {
		p.add("bridge.backfill_limit", "must be between 0 (none) and %d, got %d", MaxBackfillLimit, b.BackfillLimit)
	}
	if s := b.Provisioning.SharedSecret; s != "" && len(s) < minSharedSecret {
		p.add("bridge.provisioning.shared_secret", "must be empty (API off) or at least %d characters", minSharedSecret)
	}
}

func (m *Media) validate(p *problems) {
	if m.MaxFileBytes < 1 {
		p.add("media.max_file_bytes", "must be at least 1 (bytes), got %d", m.MaxFileBytes)
	}
}

func (l *Logging) validate(p *problems) {
	checkOneOf(p, "logging.min_level", l.MinLevel, LogLevels)
	checkOneOf(p, "logging.format", l.Format, LogFormats)
}

// ZerologLevel is logging.min_level as a zerolog level; Validate has checked it.
func (l *Logging) ZerologLevel() zerolog.Level {
	level, err := zerolog.ParseLevel(l.MinLevel)
	if err != nil {
		return zerolog.InfoLevel
	}
	return level
}

func checkOneOf(p *problems, key, value string, allowed []string) {
	if slices.Contains(allowed, value) {
		return
	}
	p.add(key, "must be one of %s, got %q", strings.Join(allowed, ", "), value)
}

func checkHTTPURL(p *problems, key, value string) {
	if value == "" {
		p.add(key, "must be set (e.g. http://127.0.0.1:8008)")
		return
	}
	u, err := url.Parse(value)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.add(key, "must be an http:// or https:// URL, got %q", value)
	}
}

// checkServerName accepts a Matrix server name: a DNS name, an IPv4 literal or a bracketed IPv6 literal, with an
// optional port.
func checkServerName(p *problems, key, name string) {
	if name == "" {
		p.add(key, "must be set (a server name such as matrix.example.org)")
		return
	}
	if strings.Contains(name, "/") {
		p.add(key, "must be a server name such as matrix.example.org, not a URL; got %q", name)
		return
	}
	host, port := name, ""
	if strings.HasPrefix(name, "[") {
		end := strings.Index(name, "]")
		if end < 0 || net.ParseIP(name[1:end]) == nil {
			p.add(key, "has an invalid IPv6 literal: %q", name)
			return
		}
		host, port = name[:end+1], strings.TrimPrefix(name[end+1:], ":")
		if port == "" && len(name) > end+1 {
			p.add(key, "has an empty port: %q", name)
			return
		}
	} else if h, pt, found := strings.Cut(name, ":"); found {
		host, port = h, pt
		if port == "" {
			p.add(key, "has an empty port: %q", name)
			return
		}
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			p.add(key, "has an invalid port in %q", name)
			return
		}
	}
	if strings.HasPrefix(host, "[") {
		return
	}
	if host == "" || len(host) > 255 || strings.ContainsFunc(host, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.')
	}) {
		p.add(key, "must be a server name (letters, digits, '-' and '.', optional :port), not a URL; got %q", name)
	}
}

// checkLocalpart allows the characters of the Matrix user ID grammar (lower-case letters, digits and ._=-/+).
func checkLocalpart(s string) error {
	for _, r := range s {
		if !isLocalpartRune(r) {
			return fmt.Errorf("%q has %q, which a Matrix localpart may not contain (allowed: a-z 0-9 . _ = - / +)", s, r)
		}
	}
	return nil
}

func isLocalpartRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("._=-/+", r)
}

func checkTemplate(p *problems, key, template string) {
	prefix, suffix, err := SplitTemplate(template)
	if err != nil {
		p.add(key, "%v", err)
		return
	}
	if err := checkLocalpart(prefix + suffix); err != nil {
		p.add(key, "%v", err)
	}
}
