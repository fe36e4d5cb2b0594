package main

import (
	"io"
	"os"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/config"
)

// newLogger builds the process logger from the logging section. zerolog.Level is kept on the logger, not set
// globally, so tests can build several.
func newLogger(cfg config.Logging, out io.Writer) zerolog.Logger {
	terminal := isTerminal(out)
	if cfg.Format == "pretty" || (cfg.Format == "auto" && terminal) {
		out = zerolog.ConsoleWriter{Out: out, NoColor: !terminal, TimeFormat: "2006-01-02 15:04:05.000"}
	}
	return zerolog.New(out).Level(cfg.ZerologLevel()).With().Timestamp().Logger()
}

// isTerminal says whether w is a character device, as a terminal is; pipes, files and journald are not.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
