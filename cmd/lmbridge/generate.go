package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/lmbridge/lmbridge"
	"github.com/lmbridge/lmbridge/appservice"
)

// writeExampleConfig writes the embedded example config, refusing to replace any file: the operator's edited config
// must never be lost to a repeated -e.
func writeExampleConfig(opts options, stdout, stderr io.Writer) int {
	f, err := os.OpenFile(opts.configPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		fmt.Fprintf(stderr, "lmbridge: %s exists already; not overwriting it. Remove it or pick another path with -c.\n",
			opts.configPath)
		return exitFileExists
	} else if err != nil {
		fmt.Fprintf(stderr, "lmbridge: failed to create %s: %v\n", opts.configPath, err)
		return exitBadConfig
	}
	_, err = f.WriteString(lmbridge.ExampleConfig)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(opts.configPath)
		fmt.Fprintf(stderr, "lmbridge: failed to write %s: %v\n", opts.configPath, err)
		return exitBadConfig
	}
	fmt.Fprintf(stdout, `Wrote the example config to %[1]s.
Next: edit it (at least homeserver.address and homeserver.domain), then write the registration:
  lmbridge -g -c %[1]s -r registration.yaml
`, opts.configPath)
	return exitOK
}

func writeRegistration(opts options, stdout, stderr io.Writer) int {
	cfg, code := loadConfig(opts, stderr)
	if cfg == nil {
		return code
	}
	if err := cfg.CheckNotExample(); err != nil {
		fmt.Fprintf(stderr, "lmbridge: %s: %v.\nSet homeserver.domain to your homeserver's server name (the part after the colon in its user IDs), then run -g again.\n",
			opts.configPath, err)
		return exitExampleDomain
	}
	_, created, err := appservice.WriteRegistration(opts.registrationPath, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "lmbridge: %s: %v\n", opts.registrationPath, err)
		return exitBadConfig
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "lmbridge: warning: %s\n", w)
	}
	tokens := "with new tokens"
	if !created {
		tokens = "keeping its as_token and hs_token"
	}
	abs, err := filepath.Abs(opts.registrationPath)
	if err != nil {
		abs = opts.registrationPath
	}
	fmt.Fprintf(stdout, `Wrote the registration to %[1]s, %[2]s.
Next: give it to the homeserver and restart the homeserver:
  Synapse (homeserver.yaml):  app_service_config_files: [%[3]s]
  Dendrite (dendrite.yaml):   app_service_api: {config_files: [%[3]s]}
Then run the bridge:
  lmbridge -c %[4]s -r %[1]s
`, opts.registrationPath, tokens, abs, opts.configPath)
	return exitOK
}
