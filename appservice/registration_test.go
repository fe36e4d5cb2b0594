package appservice

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lmbridge/lmbridge/config"
)

func registrationConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte("homeserver: {address: 'http://127.0.0.1:8008', domain: hs.example}\n"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestGenerateRegistration(t *testing.T) {
	cfg := registrationConfig(t)
	reg, err := GenerateRegistration(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if reg.ID != "lmbridge" || reg.URL != "http://127.0.0.1:29340" || reg.SenderLocalpart != "lmbridge" {
		t.Fatalf("registration = %+v", reg)
	}
	if reg.RateLimited == nil || *reg.RateLimited || !reg.EphemeralEvents {
		t.Fatalf("rate_limited = %v, receive_ephemeral = %v", reg.RateLimited, reg.EphemeralEvents)
	}
	if len(reg.AppToken) != tokenLength || len(reg.ServerToken) != tokenLength || reg.AppToken == reg.ServerToken {
		t.Fatalf("tokens %q %q", reg.AppToken, reg.ServerToken)
	}
	for _, ns := range append(reg.Namespaces.UserIDs, reg.Namespaces.RoomAliases...) {
		if !ns.Exclusive {
			t.Errorf("namespace %s is not exclusive", ns.Regex)
		}
	}
	body, err := reg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"rate_limited: false", "receive_ephemeral: true", `regex: ^@lm_.+:hs\.example$`} {
		if !strings.Contains(body, want) {
			t.Errorf("registration YAML lacks %q:\n%s", want, body)
		}
	}
}

func TestRegistrationNamespaces(t *testing.T) {
	cfg := registrationConfig(t)
	reg, err := GenerateRegistration(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	matches := func(list []string, s string) bool {
		for _, r := range list {
			if regexp.MustCompile(r).MatchString(s) {
				return true
			}
		}
		return false
	}
	var users, aliases []string
	for _, ns := range reg.Namespaces.UserIDs {
		users = append(users, ns.Regex)
	}
	for _, ns := range reg.Namespaces.RoomAliases {
		aliases = append(aliases, ns.Regex)
	}
	for _, in := range []string{"@lm_bob=remote.example:hs.example", "@lm_x:hs.example", "@lmbridge:hs.example"} {
		if !matches(users, in) {
			t.Errorf("%s is not in the user namespace", in)
		}
	}
	for _, out := range []string{
		"@alice:hs.example", "@lm_:hs.example", "@xlm_bob:hs.example", "@lm_bob:other.example",
		"@lm_bob:hsXexample", "@lm_bob:hs.example.evil", "@lmbridge2:hs.example", "@lmbridge:hs.example.evil",
		"#lm_room:hs.example",
	} {
		if matches(users, out) {
			t.Errorf("%s is in the user namespace", out)
		}
	}
	if !matches(aliases, "#lm_room:hs.example") || matches(aliases, "#room:hs.example") || matches(aliases, "@lm_x:hs.example") {
		t.Errorf("alias namespace %v is wrong", aliases)
	}
	ghost, _ := GhostRegex(cfg)
	if regexp.MustCompile(ghost).MatchString("@lmbridge:hs.example") {
		t.Errorf("the bot falls inside the ghost regex %s", ghost)
	}
}

func TestRegistrationDomainIsEscaped(t *testing.T) {
	cfg := registrationConfig(t)
	cfg.Homeserver.Domain = "a+b.example:8448"
	cfg.AppService.UsernameTemplate = "lm.{{.}}+x"
	ghost, err := GhostRegex(cfg)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(ghost)
	if !re.MatchString("@lm.bob+x:a+b.example:8448") {
		t.Fatalf("%s does not match its own ghost", ghost)
	}
	if re.MatchString("@lmXbob+x:a+b.example:8448") || re.MatchString("@lm.bob+x:aab.example:8448") {
		t.Fatalf("%s matches more than it should", ghost)
	}
}

func TestWriteRegistrationKeepsTokens(t *testing.T) {
	cfg := registrationConfig(t)
	path := filepath.Join(t.TempDir(), "registration.yaml")
	first, created, err := WriteRegistration(path, cfg)
	if err != nil || !created {
		t.Fatalf("first write: created=%v err=%v", created, err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", info.Mode().Perm())
	}
	cfg.AppService.Address = "http://10.0.0.2:29340"
	second, created, err := WriteRegistration(path, cfg)
	if err != nil || created {
		t.Fatalf("second write: created=%v err=%v", created, err)
	}
	if second.AppToken != first.AppToken || second.ServerToken != first.ServerToken {
		t.Fatal("tokens changed on the second run")
	}
	onDisk, err := ReadRegistration(path)
	if err != nil {
		t.Fatal(err)
	}
	if onDisk.URL != "http://10.0.0.2:29340" || onDisk.AppToken != first.AppToken {
		t.Fatalf("on disk: %+v", onDisk)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

func TestWriteRegistrationRefusesBrokenFile(t *testing.T) {
	cfg := registrationConfig(t)
	path := filepath.Join(t.TempDir(), "registration.yaml")
	broken := []byte("id: [unterminated\n")
	if err := os.WriteFile(path, broken, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := WriteRegistration(path, cfg); !errors.Is(err, ErrRegistrationInvalid) {
		t.Fatalf("err = %v, want ErrRegistrationInvalid", err)
	}
	if data, _ := os.ReadFile(path); string(data) != string(broken) {
		t.Fatal("a broken registration was overwritten")
	}
}

func TestReadRegistrationMissing(t *testing.T) {
	if _, err := ReadRegistration(filepath.Join(t.TempDir(), "none.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestCheckRegistration(t *testing.T) {
	cfg := registrationConfig(t)
	reg, err := GenerateRegistration(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := CheckRegistration(ctx, cfg, reg); err != nil {
		t.Fatalf("a fresh registration is stale: %v", err)
	}
	reg.URL = "http://elsewhere:1"
	if err := CheckRegistration(ctx, cfg, reg); err != nil {
		t.Fatalf("a changed url should only warn: %v", err)
	}
	other := *cfg
	other.AppService.UsernameTemplate = "ghost_{{.}}"
	err = CheckRegistration(ctx, &other, reg)
	if !errors.Is(err, ErrRegistrationStale) || !strings.Contains(err.Error(), "namespaces.users") {
		t.Fatalf("err = %v, want ErrRegistrationStale naming namespaces.users", err)
	}
	other = *cfg
	other.AppService.Bot.Username = "otherbot"
	if err := CheckRegistration(ctx, &other, reg); !errors.Is(err, ErrRegistrationStale) {
		t.Fatalf("err = %v, want ErrRegistrationStale", err)
	}
}

// TestRegistrationExampleIsCurrent keeps registration.yaml.example honest: apart from the tokens, it must be what -g
// writes for the example config with homeserver.domain: hs.example.
func TestRegistrationExampleIsCurrent(t *testing.T) {
	example, err := ReadRegistration("../registration.yaml.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte("homeserver: {domain: hs.example}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := GenerateRegistration(cfg, example)
	if err != nil {
		t.Fatal(err)
	}
	wantYAML, _ := want.YAML()
	haveYAML, _ := example.YAML()
	if wantYAML != haveYAML {
		t.Fatalf("registration.yaml.example is out of date; -g writes:\n%s\nthe example has:\n%s", wantYAML, haveYAML)
	}
}

// TestRegistrationAsksForTransactionExtensions: in encryption's appservice mode the registration asks for MSC3202,
// and a registration written before is reported stale.
func TestRegistrationAsksForTransactionExtensions(t *testing.T) {
	cfg := registrationConfig(t)
	reg, err := GenerateRegistration(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if reg.MSC3202 {
		t.Fatal("org.matrix.msc3202 without encryption")
	}
	enc := *cfg
	enc.Encryption.Allow, enc.Encryption.Appservice = true, true
	if err = CheckRegistration(context.Background(), &enc, reg); !errors.Is(err, ErrRegistrationStale) ||
		!strings.Contains(err.Error(), "msc3202") {
		t.Fatalf("err = %v, want ErrRegistrationStale naming msc3202", err)
	}
	encReg, err := GenerateRegistration(&enc, reg)
	if err != nil {
		t.Fatal(err)
	}
	if !encReg.MSC3202 || encReg.AppToken != reg.AppToken {
		t.Fatalf("registration for appservice mode: msc3202 %v, tokens kept %v", encReg.MSC3202, encReg.AppToken == reg.AppToken)
	}
}
