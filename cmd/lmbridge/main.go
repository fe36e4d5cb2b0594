// Command lmbridge links rooms on a Matrix homeserver with Linearized Matrix rooms. It runs beside the homeserver as
// an application service.
//
// The operator's flow, as in the mautrix bridges:
//
//	lmbridge -e -c config.yaml                       # write the example config, then edit it
//	lmbridge -g -c config.yaml -r registration.yaml  # write the registration, then give it to the homeserver
//	lmbridge -c config.yaml -r registration.yaml     # run
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"go.mau.fi/util/exzerolog"

	"github.com/lmbridge/lmbridge"
	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/config"
)

// Exit codes. 20 for the example domain is what the mautrix bridges use, so wrappers written for them keep working.
const (
	exitOK            = 0
	exitRunFailed     = 1
	exitUsage         = 2
	exitBadConfig     = 3
	exitFileExists    = 4
	exitExampleDomain = 20
)

const usageText = `lmbridge links rooms on a Matrix homeserver with Linearized Matrix rooms.

Usage:
  lmbridge -e [-c config.yaml]                     write the example config (never overwrites a file)
  lmbridge -g [-c config.yaml] [-r registration.yaml]
                                                   write the application-service registration; tokens are
                                                   generated once and kept when the file is regenerated
  lmbridge [-c config.yaml] [-r registration.yaml] run the bridge
  lmbridge -v                                      print the version

Flags:
  -c, --config PATH                 the config file (default config.yaml); lmbridge never rewrites it
  -r, --registration PATH           the registration file (default registration.yaml)
  -e, --generate-example-config     write the example config to the -c path and exit
  -g, --generate-registration       write the registration to the -r path and exit
  -v, --version                     print the version and exit
  -h, --help                        print this help

Exit codes: 0 ok, 1 the bridge failed, 2 bad flags, 3 unusable config or registration, 4 the file to write
exists already, 20 homeserver.domain is still the example's.
`

type options struct {
	configPath           string
	registrationPath     string
	generateExample      bool
	generateRegistration bool
	version              bool
}

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

// cli is main without the process around it, so tests can drive every mode.
func cli(args []string, stdout, stderr io.Writer) int {
	opts, code, ok := parseFlags(args, stdout, stderr)
	if !ok {
		return code
	}
	switch {
	case opts.version:
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case opts.generateExample:
		return writeExampleConfig(opts, stdout, stderr)
	case opts.generateRegistration:
		return writeRegistration(opts, stdout, stderr)
	default:
		return runBridge(opts, stderr)
	}
}

func parseFlags(args []string, stdout, stderr io.Writer) (opts options, code int, ok bool) {
	flags := flag.NewFlagSet("lmbridge", flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	for _, name := range []string{"c", "config"} {
		flags.StringVar(&opts.configPath, name, "config.yaml", "")
	}
	for _, name := range []string{"r", "registration"} {
		flags.StringVar(&opts.registrationPath, name, "registration.yaml", "")
	}
	for _, name := range []string{"e", "generate-example-config"} {
		flags.BoolVar(&opts.generateExample, name, false, "")
	}
	for _, name := range []string{"g", "generate-registration"} {
		flags.BoolVar(&opts.generateRegistration, name, false, "")
	}
	for _, name := range []string{"v", "version"} {
		flags.BoolVar(&opts.version, name, false, "")
	}
	err := flags.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usageText)
		return opts, exitOK, false
	case err != nil:
		fmt.Fprintf(stderr, "lmbridge: %v\n\n%s", err, usageText)
		return opts, exitUsage, false
	case flags.NArg() > 0:
		fmt.Fprintf(stderr, "lmbridge: unexpected argument %q\n\n%s", flags.Arg(0), usageText)
		return opts, exitUsage, false
	case opts.generateExample && opts.generateRegistration:
		fmt.Fprintf(stderr, "lmbridge: -e and -g are separate steps: write the config with -e, edit it, then run -g\n")
		return opts, exitUsage, false
	}
	return opts, exitOK, true
}

// loadConfig loads the config, or says on stderr what is wrong and how to fix it.
func loadConfig(opts options, stderr io.Writer) (*config.Config, int) {
	cfg, err := config.Load(opts.configPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(stderr, "lmbridge: config file %s not found. Create it with\n  lmbridge -e -c %[1]s\nand edit it.\n",
			opts.configPath)
		return nil, exitBadConfig
	case err != nil:
		fmt.Fprintf(stderr, "lmbridge: %v\n", err)
		return nil, exitBadConfig
	}
	return cfg, exitOK
}

func runBridge(opts options, stderr io.Writer) int {
	cfg, code := loadConfig(opts, stderr)
	if cfg == nil {
		return code
	}
	if err := cfg.CheckNotExample(); err != nil {
		fmt.Fprintf(stderr, "lmbridge: %s: %v. Edit it, run -g, register the bridge with the homeserver, then start it.\n",
			opts.configPath, err)
		return exitExampleDomain
	}
	reg, err := appservice.ReadRegistration(opts.registrationPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(stderr, "lmbridge: registration file %s not found. Generate it with\n  lmbridge -g -c %s -r %[1]s\nand give it to the homeserver.\n",
			opts.registrationPath, opts.configPath)
		return exitBadConfig
	case err != nil:
		fmt.Fprintf(stderr, "lmbridge: %v\n", err)
		return exitBadConfig
	}

	log := newLogger(cfg.Logging, os.Stderr)
	exzerolog.SetupDefaults(&log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, a second one gets Go's default handling and ends the process at once, for when a
		// clean shutdown hangs.
		<-ctx.Done()
		stop()
	}()
	ctx = log.WithContext(ctx)

	if err := appservice.CheckRegistration(ctx, cfg, reg); err != nil {
		log.Error().Err(err).
			Str("registration", opts.registrationPath).
			Msg("Registration is out of date: run lmbridge -g again and restart the homeserver")
		return exitBadConfig
	}
	for _, w := range cfg.Warnings() {
		log.Warn().Str("config", opts.configPath).Str("warning", w).Msg("Config setting looks wrong")
	}
	log.Info().
		Str("version", lmbridge.Version).
		Str("config", opts.configPath).
		Str("registration", opts.registrationPath).
		Str("homeserver", cfg.Homeserver.Address).
		Msg("Starting lmbridge")
	if err := run(ctx, cfg, reg); err != nil {
		log.Error().Err(err).Msg("Bridge stopped with an error")
		return exitRunFailed
	}
	log.Info().Msg("Bridge stopped")
	return exitOK
}
