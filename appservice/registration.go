package appservice

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/rs/zerolog"
	"go.mau.fi/util/random"
	mautrixappservice "maunium.net/go/mautrix/appservice"

	"github.com/lmbridge/lmbridge/config"
)

// tokenLength is the length of the generated as_token and hs_token, as in mautrix's CreateRegistration.
const tokenLength = 64

// registrationHeader is written above the generated YAML, so a file found on a server says where it came from.
const registrationHeader = `# lmbridge application-service registration, written by "lmbridge -g" from the bridge's config.
# Give this file to the homeserver (Synapse: app_service_config_files; Dendrite: app_service_api.config_files) and
# restart it. Re-running "lmbridge -g" after a config change keeps as_token and hs_token; do not edit them by hand.
`

var (
	// ErrRegistrationInvalid means a registration file exists but cannot be used: unreadable YAML or missing tokens.
	ErrRegistrationInvalid = errors.New("invalid registration")
	// ErrRegistrationStale means the registration no longer matches the config it should have been generated from.
	ErrRegistrationStale = errors.New("registration does not match the config")
)

// BotRegex is the exact regex of the bridge bot's user ID.
func BotRegex(cfg *config.Config) string {
	return "^@" + regexp.QuoteMeta(cfg.AppService.Bot.Username) + ":" + regexp.QuoteMeta(cfg.Homeserver.Domain) + "$"
}

// GhostRegex is the anchored regex of every ghost user ID the username template can produce.
func GhostRegex(cfg *config.Config) (string, error) {
	return templateRegex("@", cfg.AppService.UsernameTemplate, cfg.Homeserver.Domain)
}

// AliasRegex is the anchored regex of every alias the alias template can produce.
func AliasRegex(cfg *config.Config) (string, error) {
	return templateRegex("#", cfg.AppService.AliasTemplate, cfg.Homeserver.Domain)
}

func templateRegex(sigil, template, domain string) (string, error) {
	prefix, suffix, err := config.SplitTemplate(template)
	if err != nil {
		return "", err
	}
	return "^" + sigil + regexp.QuoteMeta(prefix) + ".+" + regexp.QuoteMeta(suffix) + ":" + regexp.QuoteMeta(domain) + "$", nil
}

// GenerateRegistration builds the registration for cfg. It keeps the tokens of existing, when given, so that
// regenerating after a config change does not force the homeserver and the bridge to be re-paired.
func GenerateRegistration(cfg *config.Config, existing *mautrixappservice.Registration) (*mautrixappservice.Registration, error) {
	ghosts, err := GhostRegex(cfg)
	if err != nil {
		return nil, fmt.Errorf("appservice.username_template: %w", err)
	}
	aliases, err := AliasRegex(cfg)
	if err != nil {
		return nil, fmt.Errorf("appservice.alias_template: %w", err)
	}
	rateLimited := false
	reg := &mautrixappservice.Registration{
		ID:              cfg.AppService.ID,
		URL:             cfg.AppService.Address,
		SenderLocalpart: cfg.AppService.Bot.Username,
		RateLimited:     &rateLimited,
		EphemeralEvents: true,
		Namespaces: mautrixappservice.Namespaces{
			UserIDs: mautrixappservice.NamespaceList{
				{Regex: BotRegex(cfg), Exclusive: true},
				{Regex: ghosts, Exclusive: true},
			},
			RoomAliases: mautrixappservice.NamespaceList{
				{Regex: aliases, Exclusive: true},
			},
		},
	}
	// The bot's device gets its encryption traffic pushed in transactions (see config.Encryption.Appservice).
	reg.MSC3202 = cfg.Encryption.Allow && cfg.Encryption.Appservice
	if existing != nil && existing.AppToken != "" && existing.ServerToken != "" {
		reg.AppToken, reg.ServerToken = existing.AppToken, existing.ServerToken
	} else {
		reg.AppToken, reg.ServerToken = random.String(tokenLength), random.String(tokenLength)
	}
	return reg, nil
}

// ReadRegistration reads a registration file and checks that it has its tokens. A missing file comes back as an
// error wrapping fs.ErrNotExist.
func ReadRegistration(path string) (*mautrixappservice.Registration, error) {
	reg, err := mautrixappservice.LoadRegistration(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("failed to read registration: %w", err)
	case err != nil:
		return nil, fmt.Errorf("%w: %s: %w", ErrRegistrationInvalid, path, err)
	case reg.AppToken == "" || reg.ServerToken == "":
		return nil, fmt.Errorf("%w: %s has no as_token or hs_token", ErrRegistrationInvalid, path)
	}
	return reg, nil
}

// WriteRegistration writes the registration for cfg to path, keeping the tokens of the registration already there.
// created says whether the tokens are new. The file is replaced atomically with mode 0600: it holds secrets, and a
// crash half-way must not leave the homeserver a truncated file.
func WriteRegistration(path string, cfg *config.Config) (reg *mautrixappservice.Registration, created bool, err error) {
	existing, err := ReadRegistration(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("%w (move it away to generate new tokens)", err)
	}
	reg, err = GenerateRegistration(cfg, existing)
	if err != nil {
		return nil, false, err
	}
	body, err := reg.YAML()
	if err != nil {
		return nil, false, fmt.Errorf("failed to encode registration: %w", err)
	}
	if err := writeFileAtomic(path, []byte(registrationHeader+body), 0o600); err != nil {
		return nil, false, fmt.Errorf("failed to write registration: %w", err)
	}
	return reg, existing == nil, nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// CheckRegistration compares a registration with the one cfg would generate. A different id, sender or namespace
// means the homeserver was given a registration for another config, and events would go missing or be refused:
// that is an error. A different url is only logged, since operators behind NAT or in containers edit it on purpose.
func CheckRegistration(ctx context.Context, cfg *config.Config, reg *mautrixappservice.Registration) error {
	want, err := GenerateRegistration(cfg, reg)
	if err != nil {
		return err
	}
	var diffs []error
	differs := func(key, have, want string) {
		if have != want {
			diffs = append(diffs, fmt.Errorf("%s is %q but the config gives %q", key, have, want))
		}
	}
	differs("id", reg.ID, want.ID)
	differs("sender_localpart", reg.SenderLocalpart, want.SenderLocalpart)
	if want.MSC3202 && !reg.MSC3202 {
		diffs = append(diffs, errors.New("org.matrix.msc3202 is off but encryption.appservice needs it"))
	}
	if !slices.Equal(reg.Namespaces.UserIDs, want.Namespaces.UserIDs) {
		diffs = append(diffs, fmt.Errorf("namespaces.users is %s but the config gives %s",
			formatNamespaces(reg.Namespaces.UserIDs), formatNamespaces(want.Namespaces.UserIDs)))
	}
	if !slices.Equal(reg.Namespaces.RoomAliases, want.Namespaces.RoomAliases) {
		diffs = append(diffs, fmt.Errorf("namespaces.aliases is %s but the config gives %s",
			formatNamespaces(reg.Namespaces.RoomAliases), formatNamespaces(want.Namespaces.RoomAliases)))
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%w: %w", ErrRegistrationStale, errors.Join(diffs...))
	}
	if reg.URL != want.URL {
		zerolog.Ctx(ctx).Warn().
			Str("registration_url", reg.URL).
			Str("appservice_address", want.URL).
			Msg("Registration url differs from appservice.address; the homeserver pushes to the registration's url")
	}
	return nil
}

func formatNamespaces(list mautrixappservice.NamespaceList) string {
	parts := make([]string, len(list))
	for i, ns := range list {
		parts[i] = ns.Regex
		if !ns.Exclusive {
			parts[i] += " (not exclusive)"
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
