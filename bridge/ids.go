package bridge

import (
	"errors"
	"fmt"
	"strings"
	"text/template"

	"maunium.net/go/mautrix/id"
)

// maxUserIDLength is the Matrix limit on a user ID, including the sigil and the server name.
const maxUserIDLength = 255

var (
	// ErrInvalidUserID means a string is not a user ID of the form @localpart:server.
	ErrInvalidUserID = errors.New("invalid user ID")
	// ErrUserIDTooLong means the mapped user ID would exceed the 255-byte limit of Matrix user IDs.
	ErrUserIDTooLong = errors.New("mapped user ID is longer than 255 bytes")
	// ErrNotOurs means a user ID is neither one of our LM users nor one of our ghosts.
	ErrNotOurs = errors.New("user ID is not in the bridge's namespace")
)

// EncodeUserID turns a full user ID (without the sigil) into a localpart that any Matrix or LM server accepts:
// "alice:hs.example" → "alice=hs.example". The separator "=" appears exactly once; every other byte outside
// [a-z0-9.-/] is escaped with "_": "_" as "__", an upper-case letter as "_" and its lower-case form, anything else
// as "_" and three decimal digits. The encoding is a bijection between user IDs and the strings DecodeUserID accepts.
func EncodeUserID(localpart, server string) string {
	var sb strings.Builder
	sb.Grow(len(localpart) + len(server) + 1)
	encodePart(&sb, localpart)
	sb.WriteByte('=')
	encodePart(&sb, server)
	return sb.String()
}

func passesUnescaped(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '/'
}

func encodePart(sb *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case passesUnescaped(c):
			sb.WriteByte(c)
		case c == '_':
			sb.WriteString("__")
		case c >= 'A' && c <= 'Z':
			sb.WriteByte('_')
			sb.WriteByte(c + ('a' - 'A'))
		default:
			fmt.Fprintf(sb, "_%03d", c)
		}
	}
}

// DecodeUserID reverses EncodeUserID. It accepts only the canonical form, so that decoding and encoding again gives
// back the same string.
func DecodeUserID(encoded string) (localpart, server string, err error) {
	sep := strings.IndexByte(encoded, '=')
	if sep < 0 || strings.IndexByte(encoded[sep+1:], '=') >= 0 {
		return "", "", fmt.Errorf("%w: %q must hold exactly one '='", ErrInvalidUserID, encoded)
	}
	if localpart, err = decodePart(encoded[:sep]); err != nil {
		return "", "", err
	}
	if server, err = decodePart(encoded[sep+1:]); err != nil {
		return "", "", err
	}
	if localpart == "" || server == "" {
		return "", "", fmt.Errorf("%w: %q has an empty localpart or server name", ErrInvalidUserID, encoded)
	}
	return localpart, server, nil
}

func decodePart(s string) (string, error) {
	var sb strings.Builder
	sb.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if passesUnescaped(c) {
			sb.WriteByte(c)
			continue
		}
		if c != '_' || i+1 >= len(s) {
			return "", fmt.Errorf("%w: unexpected %q in %q", ErrInvalidUserID, c, s)
		}
		next := s[i+1]
		switch {
		case next == '_':
			sb.WriteByte('_')
			i++
		case next >= 'a' && next <= 'z':
			sb.WriteByte(next - ('a' - 'A'))
			i++
		case i+3 < len(s) && isDigits(s[i+1:i+4]):
			n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			b := byte(n)
			if n > 255 || passesUnescaped(b) || b == '_' || (b >= 'A' && b <= 'Z') {
				return "", fmt.Errorf("%w: non-canonical escape %q in %q", ErrInvalidUserID, s[i:i+4], s)
			}
			sb.WriteByte(b)
			i += 3
		default:
			return "", fmt.Errorf("%w: bad escape at %d in %q", ErrInvalidUserID, i, s)
		}
	}
	return sb.String(), nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

// splitUserID splits @localpart:server at the first colon; a server name may hold a port, a localpart may not hold
// a colon.
func splitUserID(userID string) (localpart, server string, err error) {
	if !strings.HasPrefix(userID, "@") {
		return "", "", fmt.Errorf("%w: %q does not start with @", ErrInvalidUserID, userID)
	}
	localpart, server, ok := strings.Cut(userID[1:], ":")
	if !ok || localpart == "" || server == "" {
		return "", "", fmt.Errorf("%w: %q is not @localpart:server", ErrInvalidUserID, userID)
	}
	return localpart, server, nil
}

// ServerOf returns the server name of a user ID, or "" when it has none.
func ServerOf(userID string) string {
	_, server, err := splitUserID(userID)
	if err != nil {
		return ""
	}
	return server
}

// UserMapper maps identities between the two sides: Matrix users of our homeserver become users of our LM server,
// LM users of other servers become ghosts on our homeserver.
type UserMapper struct {
	// HomeserverDomain is the homeserver's server name.
	HomeserverDomain string
	// LMServerName is our LM server name.
	LMServerName string
	// BotUserID is the bridge bot on the homeserver.
	BotUserID id.UserID

	ghostPrefix, ghostSuffix string
}

// NewUserMapper checks the ghost username template (config appservice.username_template, holding {{.}} once).
func NewUserMapper(homeserverDomain, lmServerName string, bot id.UserID, usernameTemplate string) (*UserMapper, error) {
	tpl, err := template.New("username").Parse(usernameTemplate)
	if err != nil {
		return nil, fmt.Errorf("failed to parse username template: %w", err)
	}
	const marker = "\x00"
	var sb strings.Builder
	if err = tpl.Execute(&sb, marker); err != nil {
		return nil, fmt.Errorf("failed to execute username template: %w", err)
	}
	prefix, suffix, ok := strings.Cut(sb.String(), marker)
	if !ok || strings.Contains(suffix, marker) {
		return nil, fmt.Errorf("username template %q must hold {{.}} exactly once", usernameTemplate)
	}
	if homeserverDomain == "" || lmServerName == "" {
		return nil, errors.New("homeserver domain and LM server name must be set")
	}
	return &UserMapper{
		HomeserverDomain: homeserverDomain,
		LMServerName:     lmServerName,
		BotUserID:        bot,
		ghostPrefix:      prefix,
		ghostSuffix:      suffix,
	}, nil
}

// LMUserOf returns the LM identity of a Matrix user of our homeserver: @alice:hs.example → @alice=hs.example:lm.
// A ghost maps back to the LM user it stands for.
func (m *UserMapper) LMUserOf(mxid id.UserID) (string, error) {
	if lmUser, ok := m.GhostLMUser(mxid); ok {
		return lmUser, nil
	}
	localpart, server, err := splitUserID(string(mxid))
	if err != nil {
		return "", err
	}
	out := "@" + EncodeUserID(localpart, server) + ":" + m.LMServerName
	if len(out) > maxUserIDLength {
		return "", fmt.Errorf("%w: %s", ErrUserIDTooLong, mxid)
	}
	return out, nil
}

// GhostOf returns the ghost that stands for an LM user of another server: @bob:remote.example →
// @lm_bob=remote.example:hs.example.
func (m *UserMapper) GhostOf(lmUser string) (id.UserID, error) {
	localpart, server, err := splitUserID(lmUser)
	if err != nil {
		return "", err
	}
	out := "@" + m.ghostPrefix + EncodeUserID(localpart, server) + m.ghostSuffix + ":" + m.HomeserverDomain
	if len(out) > maxUserIDLength {
		return "", fmt.Errorf("%w: %s", ErrUserIDTooLong, lmUser)
	}
	return id.UserID(out), nil
}

// GhostLMUser returns the LM user a ghost stands for, and false for anyone who is not a ghost.
func (m *UserMapper) GhostLMUser(mxid id.UserID) (string, bool) {
	localpart, server, err := splitUserID(string(mxid))
	if err != nil || server != m.HomeserverDomain {
		return "", false
	}
	if !strings.HasPrefix(localpart, m.ghostPrefix) || !strings.HasSuffix(localpart, m.ghostSuffix) ||
		len(localpart) < len(m.ghostPrefix)+len(m.ghostSuffix) {
		return "", false
	}
	encoded := localpart[len(m.ghostPrefix) : len(localpart)-len(m.ghostSuffix)]
	lmLocal, lmServer, err := DecodeUserID(encoded)
	if err != nil {
		return "", false
	}
	return "@" + lmLocal + ":" + lmServer, true
}

// IsGhost says whether a Matrix user is one of our ghosts.
func (m *UserMapper) IsGhost(mxid id.UserID) bool {
	_, ok := m.GhostLMUser(mxid)
	return ok
}

// IsPuppet says whether a Matrix user is the bridge's own: its bot or one of its ghosts. Their events are echoes.
func (m *UserMapper) IsPuppet(mxid id.UserID) bool {
	return mxid == m.BotUserID || m.IsGhost(mxid)
}

// IsOurLMUser says whether an LM user is a user of our LM server, that is a Matrix user seen from LM.
func (m *UserMapper) IsOurLMUser(lmUser string) bool {
	return ServerOf(lmUser) == m.LMServerName
}

// MatrixUserOf returns the Matrix user behind one of our LM users.
func (m *UserMapper) MatrixUserOf(lmUser string) (id.UserID, error) {
	localpart, server, err := splitUserID(lmUser)
	if err != nil {
		return "", err
	}
	if server != m.LMServerName {
		return "", fmt.Errorf("%w: %s is not on %s", ErrNotOurs, lmUser, m.LMServerName)
	}
	mxLocal, mxServer, err := DecodeUserID(localpart)
	if err != nil {
		return "", err
	}
	return id.UserID("@" + mxLocal + ":" + mxServer), nil
}

// MatrixSideOf returns how an LM user appears on Matrix: the real Matrix user for our own LM users, the ghost for
// everyone else.
func (m *UserMapper) MatrixSideOf(lmUser string) (id.UserID, error) {
	if m.IsOurLMUser(lmUser) {
		return m.MatrixUserOf(lmUser)
	}
	return m.GhostOf(lmUser)
}
