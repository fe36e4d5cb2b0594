package database

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/config"
)

// Owner marks the database as lmbridge's, so that pointing two programs at one file fails loudly.
const Owner = "lmbridge"

// DB is lmbridge's database and, for SQLite, its checkpointer.
type DB struct {
	*dbutil.Database
	checkpointer *checkpointer
}

// Open opens the configured database with a pool as the config gives it; for SQLite it also starts the background
// checkpointer. Close stops it.
func Open(ctx context.Context, cfg config.Database) (*DB, error) {
	driverName := cfg.Type
	if name, ok := driverFor[cfg.Type]; ok {
		driverName = name
	}
	uri := cfg.DriverURI()
	dbLog := zerolog.Ctx(ctx).With().Str("component", "database").Logger()
	raw, err := dbutil.NewFromConfig(Owner, dbutil.Config{
		PoolConfig: dbutil.PoolConfig{
			Type:         driverName,
			URI:          uri,
			MaxOpenConns: cfg.MaxOpenConns,
			MaxIdleConns: cfg.MaxIdleConns,
		},
	}, dbutil.ZeroLogger(dbLog))
	if err != nil {
		return nil, fmt.Errorf("failed to open %s database: %w", cfg.Type, err)
	}
	db := &DB{Database: raw}
	if raw.Dialect == dbutil.SQLite {
		ctx = dbLog.WithContext(ctx)
		if db.checkpointer, err = startCheckpointer(ctx, driverName, uri); err != nil {
			_ = raw.Close()
			return nil, fmt.Errorf("failed to start checkpointing %s database: %w", cfg.Type, err)
		}
	}
	return db, nil
}

// Close stops the checkpointer after a last checkpoint and closes the pool.
func (db *DB) Close() error {
	var errs []error
	if db.checkpointer != nil {
		errs = append(errs, db.checkpointer.close())
	}
	if err := db.Database.Close(); err != nil {
		errs = append(errs, fmt.Errorf("failed to close the database: %w", err))
	}
	return errors.Join(errs...)
}
