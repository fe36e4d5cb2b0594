package media

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/media/upgrades"
)

// VersionTable is the media package's own dbutil version table.
const VersionTable = "media_version"

const (
	getFileQuery = `SELECT local_uri FROM media_file WHERE origin_uri=$1`
	putFileQuery = `INSERT INTO media_file (origin_uri, local_uri, mimetype, size, created_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (origin_uri) DO NOTHING`
)

// store is the map of LM files to their homeserver copies.
type store struct {
	db *dbutil.Database
}

func newStore(parent *dbutil.Database) *store {
	return &store{db: parent.Child(VersionTable, upgrades.Table, nil)}
}

func (s *store) upgrade(ctx context.Context) error {
	if err := s.db.Upgrade(ctx); err != nil {
		return fmt.Errorf("failed to upgrade media tables: %w", err)
	}
	return nil
}

// local returns the homeserver copy of an LM file, "" when there is none yet.
func (s *store) local(ctx context.Context, origin string) (string, error) {
	var local string
	err := s.db.QueryRow(ctx, getFileQuery, origin).Scan(&local)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("failed to look up the copy of %s: %w", origin, err)
	}
	return local, nil
}

// put records a copy; a copy recorded before stays.
func (s *store) put(ctx context.Context, origin, local, mimetype string, size int64, now time.Time) error {
	if _, err := s.db.Exec(ctx, putFileQuery, origin, local, mimetype, size, now.UnixMilli()); err != nil {
		return fmt.Errorf("failed to record the copy of %s: %w", origin, err)
	}
	return nil
}
