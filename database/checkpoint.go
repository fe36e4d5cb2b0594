package database

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/rs/zerolog"
)

// CheckpointInterval is how often the checkpointer copies the WAL into the database file. A bridged event writes
// about 17 pages (70 KB) to the WAL, so at 1,000 events/s the WAL grows by about 7 MB between checkpoints, and the
// file is reused from its start once a checkpoint has copied everything; an idle database costs one cheap PRAGMA per
// interval. 25 ms cost the same CPU in the benchmarks and four times the fsyncs.
const CheckpointInterval = 100 * time.Millisecond

const (
	checkpointQuery = "PRAGMA wal_checkpoint(PASSIVE)"
	restartQuery    = "PRAGMA wal_checkpoint(RESTART)"
	// The restart holds writers off while it waits for readers: it gives up after 20 ms rather than stall
	// them behind a long read, and tries again at the next interval.
	restartTimeoutQuery = "PRAGMA busy_timeout = 20"
)

// walRestartFrames is the WAL size, in pages, past which the checkpointer starts the WAL over. SQLite writes the WAL
// from its start again only once a checkpoint has copied all of it, and a passive checkpoint never catches up with a
// writer that commits while it copies: under steady load the WAL would grow without end, and with it the index every
// read searches. A restart checkpoint holds writers off while it copies the little the passive ones before it left
// and waits for readers to move on: a few milliseconds, at most restartTimeoutQuery's 20 (in the bridge benchmark at
// 1,000 events/s, once in about 1.5 s). When writes pause, the passive checkpoints complete on their own. 128 MB: a
// restart is rare enough not to show in a p99, and the index stays a few hash tables long. A variable for the tests.
var walRestartFrames = 32768

// checkpointer runs passive checkpoints on a connection of its own. A passive checkpoint copies what no reader still
// needs and never blocks the writer; the writer starts the WAL over once everything was copied, which under steady
// load takes a restart checkpoint (see walRestartFrames).
type checkpointer struct {
	conn *sql.DB
	stop context.CancelFunc
	done chan struct{}
}

func startCheckpointer(ctx context.Context, driverName, uri string) (*checkpointer, error) {
	conn, err := sql.Open(driverName, uri)
	if err != nil {
		return nil, fmt.Errorf("failed to open the checkpointer's connection: %w", err)
	}
	conn.SetMaxOpenConns(1)
	if err = checkpointOnce(ctx, conn); err != nil {
		_ = conn.Close()
		return nil, err
	}
	ctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	c := &checkpointer{conn: conn, stop: stop, done: make(chan struct{})}
	go c.run(ctx)
	return c, nil
}

func (c *checkpointer) run(ctx context.Context) {
	defer close(c.done)
	log := zerolog.Ctx(ctx)
	ticker := time.NewTicker(CheckpointInterval)
	defer ticker.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		err := checkpointOnce(ctx, c.conn)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			// Logged once per run of failures: the writer goes on, the WAL just grows until it works again.
			log.Warn().Err(err).Msg("Failed to checkpoint the SQLite WAL")
			failing = true
		case err == nil && failing:
			log.Info().Msg("Checkpointing the SQLite WAL works again")
			failing = false
		}
	}
}

// checkpointOnce copies the WAL into the database file without blocking anyone, and starts the WAL over when it has
// grown past walRestartFrames without a checkpoint ever completing.
func checkpointOnce(ctx context.Context, conn *sql.DB) error {
	var busy, logFrames, copied int
	if err := conn.QueryRowContext(ctx, checkpointQuery).Scan(&busy, &logFrames, &copied); err != nil {
		return fmt.Errorf("failed to checkpoint the WAL: %w", err)
	}
	if logFrames < walRestartFrames {
		return nil
	}
	// Copy first what the writers added during that copy: the restart holds them off while it copies the rest.
	if err := conn.QueryRowContext(ctx, checkpointQuery).Scan(&busy, &logFrames, &copied); err != nil {
		return fmt.Errorf("failed to checkpoint the WAL: %w", err)
	}
	if _, err := conn.ExecContext(ctx, restartTimeoutQuery); err != nil {
		return fmt.Errorf("failed to bound the WAL restart's wait: %w", err)
	}
	if err := conn.QueryRowContext(ctx, restartQuery).Scan(&busy, &logFrames, &copied); err != nil {
		return fmt.Errorf("failed to start the WAL over: %w", err)
	}
	if busy != 0 {
		// A reader or writer held on past the timeout; the WAL goes on growing until a later interval gets through.
		zerolog.Ctx(ctx).Debug().Int("wal_pages", logFrames).Msg("WAL restart gave up waiting, trying again next interval")
	}
	return nil
}

// close stops the loop and copies what is left, so that the database file is complete without its WAL.
func (c *checkpointer) close() error {
	c.stop()
	<-c.done
	err := checkpointOnce(context.Background(), c.conn)
	if closeErr := c.conn.Close(); err == nil && closeErr != nil {
		err = fmt.Errorf("failed to close the checkpointer's connection: %w", closeErr)
	}
	return err
}
